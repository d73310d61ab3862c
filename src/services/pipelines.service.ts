import { rows as sqlRows } from "../scheduler/sql.js";
import type { DataSource } from "typeorm";
import { Pipeline } from "../entities/pipeline.entity.js";
import { PipelineVersion } from "../entities/pipeline-version.entity.js";
import { contentHash, parsePipelineSpec, type PipelineSpec } from "../scheduler/spec/index.js";
import { DomainError } from "./errors.js";
import type { RequestContext } from "./context.js";
import { pageWindow, toPage, type Page, type PageArgs } from "./pagination.js";
import { newestVersionPerGroup } from "./sql-rows.js";

/** Pipelines and their immutable, content-hashed versions. */
export class PipelinesService {
  constructor(private readonly db: DataSource) {}

  /**
   * Validates a spec (YAML text or JSON object) and stores it as a new version of the pipeline it
   * names. The same normalized spec again returns the existing version: versions are content-addressed.
   */
  async create(ctx: RequestContext, input: { specYaml?: string | null; spec?: unknown }): Promise<PipelineVersion> {
    const hasText = input.specYaml != null;
    const hasObject = input.spec != null;
    if (hasText === hasObject) throw new DomainError("BAD_USER_INPUT", "input: give exactly one of specYaml (YAML or JSON text) or spec (a JSON object)", "input");
    if (hasObject && (typeof input.spec !== "object" || Array.isArray(input.spec))) {
      throw new DomainError("BAD_USER_INPUT", "input.spec: must be a JSON object with a `pipeline` key", "input.spec");
    }
    if (hasText && typeof input.specYaml !== "string") throw new DomainError("BAD_USER_INPUT", "input.specYaml: must be a string", "input.specYaml");
    let spec: PipelineSpec;
    try {
      spec = parsePipelineSpec(hasText ? (input.specYaml as string) : (input.spec as object));
    } catch (err) {
      // The parser speaks of "spec"; the argument at fault is input.specYaml or input.spec (the
      // JSON pointers of each problem stay in details.errors).
      const field = hasText ? "input.specYaml" : "input.spec";
      if (err instanceof DomainError && err.field === "spec") throw new DomainError(err.code, err.message, field, err.details);
      throw err;
    }
    const hash = contentHash(spec);
    const name = spec.pipeline.name;
    return this.db.transaction(async (em) => {
      // Upsert, then lock the pipeline row: concurrent creates of one pipeline number versions in turn.
      const rows: { id: string }[] = await sqlRows(em, 
        `INSERT INTO pipelines (name, description) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id`,
        [name, spec.pipeline.description ?? null],
      );
      const pipelineId = rows[0]!.id;
      await sqlRows(em, "SELECT 1 FROM pipelines WHERE id = $1 FOR UPDATE", [pipelineId]);
      const existing = await em.getRepository(PipelineVersion).findOneBy({ pipelineId, contentHash: hash });
      if (existing) return existing;
      const max: { max: number | null }[] = await sqlRows(em, "SELECT max(version) AS max FROM pipeline_versions WHERE pipeline_id = $1", [pipelineId]);
      const version = em.getRepository(PipelineVersion).create({
        pipelineId,
        version: (max[0]?.max ?? 0) + 1,
        contentHash: hash,
        spec,
        createdBy: ctx.principal.name,
      });
      await em.getRepository(PipelineVersion).save(version);
      await sqlRows(em, "UPDATE pipelines SET description = $2, updated_at = now() WHERE id = $1", [pipelineId, spec.pipeline.description ?? null]);
      return version;
    });
  }

  async getByName(_ctx: RequestContext, name: string): Promise<Pipeline | null> {
    if (typeof name !== "string" || !name) throw new DomainError("BAD_USER_INPUT", "name: must be a non-empty string", "name");
    return this.db.getRepository(Pipeline).findOneBy({ name });
  }

  async list(_ctx: RequestContext, args: PageArgs): Promise<Page<Pipeline>> {
    const window = pageWindow(args);
    const [rows, total] = await this.db
      .getRepository(Pipeline)
      .createQueryBuilder("p")
      .orderBy("p.name", "ASC")
      .offset(window.offset)
      .limit(window.limit + 1)
      .getManyAndCount();
    return toPage(rows, window, total);
  }

  /** A version by number, or the latest; NOT_FOUND names the field at fault. */
  async resolveVersion(_ctx: RequestContext, pipelineName: string, version: number | null | undefined, field = "input"): Promise<{ pipeline: Pipeline; version: PipelineVersion }> {
    if (typeof pipelineName !== "string" || !pipelineName) throw new DomainError("BAD_USER_INPUT", `${field}.pipelineName: must be a non-empty string`, `${field}.pipelineName`);
    const pipeline = await this.db.getRepository(Pipeline).findOneBy({ name: pipelineName });
    if (!pipeline) throw new DomainError("NOT_FOUND", `${field}.pipelineName: pipeline ${JSON.stringify(pipelineName)} not found`, `${field}.pipelineName`);
    if (version != null && (!Number.isInteger(version) || version < 1)) {
      throw new DomainError("BAD_USER_INPUT", `${field}.version: must be a positive integer`, `${field}.version`);
    }
    const found = await this.db.getRepository(PipelineVersion).findOne({
      where: version == null ? { pipelineId: pipeline.id } : { pipelineId: pipeline.id, version },
      order: { version: "DESC" },
    });
    if (!found) throw new DomainError("NOT_FOUND", `${field}.version: pipeline ${JSON.stringify(pipelineName)} has no version ${version}`, `${field}.version`);
    return { pipeline, version: found };
  }

  async versionsFor(pipelineIds: readonly string[]): Promise<Map<string, PipelineVersion[]>> {
    const rows = await this.db
      .getRepository(PipelineVersion)
      .createQueryBuilder("v")
      .where("v.pipeline_id = ANY(:ids)", { ids: [...pipelineIds] })
      .orderBy("v.version", "ASC")
      .getMany();
    const map = new Map<string, PipelineVersion[]>();
    for (const v of rows) map.set(v.pipelineId, [...(map.get(v.pipelineId) ?? []), v]);
    return map;
  }

  /** The newest version of each pipeline, one row each (not every version with its spec). */
  latestVersionsOf(pipelineIds: readonly string[]): Promise<PipelineVersion[]> {
    return newestVersionPerGroup(this.db, PipelineVersion, "pipeline_id", pipelineIds);
  }

  async versionsByIds(ids: readonly string[]): Promise<PipelineVersion[]> {
    return this.db.getRepository(PipelineVersion).createQueryBuilder("v").where("v.id = ANY(:ids)", { ids: [...ids] }).getMany();
  }

  async pipelinesByIds(ids: readonly string[]): Promise<Pipeline[]> {
    return this.db.getRepository(Pipeline).createQueryBuilder("p").where("p.id = ANY(:ids)", { ids: [...ids] }).getMany();
  }

  specOf(version: PipelineVersion): PipelineSpec {
    return version.spec;
  }
}
