import type { DataSource } from "typeorm";
import { Experiment } from "../entities/experiment.entity.js";
import { ExperimentTag } from "../entities/experiment-tag.entity.js";
import { DomainError, isUniqueViolation } from "./errors.js";
import type { RequestContext } from "./context.js";
import { LIMITS, validateId, validateKeyValues, validateText, type KeyValue } from "./validation.js";
import { CURSOR_TIME_PATTERN, CURSOR_UUID_PATTERN, cursorTimeSql, encodeKeyCursor, keysetWindow, toPage, type Page, type PageArgs } from "./pagination.js";

const NAME_PATTERN = /^[^\u0000-\u001f]+$/;

function validateExperimentName(name: unknown, field: string): string {
  const value = validateText(name, field, LIMITS.nameLength).trim();
  if (!NAME_PATTERN.test(value)) throw new DomainError("BAD_USER_INPUT", `${field}: must not contain control characters`, field);
  return value;
}

/** Experiments: named groups of runs, soft-deletable, tagged. */
export class ExperimentsService {
  constructor(private readonly db: DataSource) {}

  async create(ctx: RequestContext, input: { name: string; description?: string | null; tags?: KeyValue[] | null }): Promise<Experiment> {
    const name = validateExperimentName(input.name, "input.name");
    const description = input.description == null ? null : validateText(input.description, "input.description", LIMITS.descriptionLength, { allowEmpty: true });
    const tags = validateKeyValues(input.tags, "input.tags", LIMITS.tagValueLength);
    try {
      return await this.db.transaction(async (em) => {
        const experiment = await em.getRepository(Experiment).save(em.getRepository(Experiment).create({ name, description, deletedAt: null }));
        if (tags.length) await em.getRepository(ExperimentTag).insert(tags.map((t) => ({ ...t, experimentId: experiment.id })));
        return experiment;
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw new DomainError("CONFLICT", `input.name: an experiment named ${JSON.stringify(name)} already exists`, "input.name");
      throw err;
    }
  }

  /** Finds an experiment by name, creating it when absent (used by pipelines: one experiment per pipeline). */
  async getOrCreateByName(ctx: RequestContext, name: string): Promise<Experiment> {
    const existing = await this.db.getRepository(Experiment).findOneBy({ name });
    if (existing) return existing;
    try {
      return await this.create(ctx, { name });
    } catch (err) {
      if (err instanceof DomainError && err.code === "CONFLICT") return this.db.getRepository(Experiment).findOneByOrFail({ name });
      throw err;
    }
  }

  /** By id or by name; deleted experiments are returned too (their deletedAt says so). */
  async get(_ctx: RequestContext, by: { id?: string | null; name?: string | null }): Promise<Experiment | null> {
    if (by.id) {
      validateId(by.id, "id");
      return this.db.getRepository(Experiment).findOneBy({ id: by.id });
    }
    if (by.name) return this.db.getRepository(Experiment).findOneBy({ name: by.name });
    throw new DomainError("BAD_USER_INPUT", "id: give an id or a name", "id");
  }

  async require(ctx: RequestContext, id: string, field = "experimentId"): Promise<Experiment> {
    validateId(id, field);
    const experiment = await this.db.getRepository(Experiment).findOneBy({ id });
    if (!experiment) throw new DomainError("NOT_FOUND", `${field}: experiment ${JSON.stringify(id)} not found`, field);
    return experiment;
  }

  /**
   * Experiments, newest first. Cursors name the last experiment seen (its created_at to the
   * microsecond, and id): a later page starts after it, so experiments created meanwhile (they
   * come first) never make a page repeat one.
   */
  async list(_ctx: RequestContext, args: PageArgs & { includeDeleted?: boolean | null }): Promise<Page<Experiment>> {
    const { after: at, window } = keysetWindow(args, new RegExp(`^(${CURSOR_TIME_PATTERN})\\|(${CURSOR_UUID_PATTERN})$`));
    const qb = this.db.getRepository(Experiment).createQueryBuilder("e");
    if (!args.includeDeleted) qb.where("e.deleted_at IS NULL");
    const total = await qb.clone().getCount();
    if (at) {
      qb.andWhere("(e.created_at < (CAST(:t AS timestamp) AT TIME ZONE 'UTC') OR (e.created_at = (CAST(:t AS timestamp) AT TIME ZONE 'UTC') AND e.id > CAST(:id AS uuid)))", { t: at[1], id: at[2] });
    }
    const { entities, raw } = await qb
      .addSelect(cursorTimeSql("e.created_at"), "cursor_at")
      .orderBy("e.created_at", "DESC")
      .addOrderBy("e.id", "ASC")
      .offset(window.offset)
      .limit(window.limit + 1)
      .getRawAndEntities<{ e_id: string; cursor_at: string }>();
    const keyOf = new Map(raw.map((r) => [r.e_id, `${r.cursor_at}|${r.e_id}`]));
    const page = toPage(entities, window, total);
    return { ...page, cursors: page.items.map((e) => encodeKeyCursor(keyOf.get(e.id)!)), ...(at ? { hasPreviousPage: true } : {}) };
  }

  async update(ctx: RequestContext, input: { id: string; name?: string | null; description?: string | null }): Promise<Experiment> {
    const experiment = await this.require(ctx, input.id, "input.id");
    // Only the columns asked for are written (an UPDATE of them, not save() of the entity read
    // above, which would write its stale copy of the other fields back over a concurrent change).
    const changes: Partial<Pick<Experiment, "name" | "description">> = {};
    if (input.name != null) changes.name = validateExperimentName(input.name, "input.name");
    if (input.description !== undefined) {
      changes.description = input.description === null ? null : validateText(input.description, "input.description", LIMITS.descriptionLength, { allowEmpty: true });
    }
    try {
      if (Object.keys(changes).length) await this.db.getRepository(Experiment).update({ id: experiment.id }, changes);
    } catch (err) {
      if (isUniqueViolation(err)) throw new DomainError("CONFLICT", `input.name: an experiment named ${JSON.stringify(changes.name)} already exists`, "input.name");
      throw err;
    }
    return this.db.getRepository(Experiment).findOneByOrFail({ id: experiment.id });
  }

  async setDeleted(ctx: RequestContext, id: string, deleted: boolean): Promise<Experiment> {
    const experiment = await this.require(ctx, id, "id");
    await this.db.query(`UPDATE experiments SET deleted_at = CASE WHEN $2 THEN coalesce(deleted_at, now()) END WHERE id = $1`, [experiment.id, deleted]);
    return this.db.getRepository(Experiment).findOneByOrFail({ id: experiment.id });
  }

  async setTags(ctx: RequestContext, id: string, tags: KeyValue[]): Promise<Experiment> {
    const valid = validateKeyValues(tags, "tags", LIMITS.tagValueLength);
    const experiment = await this.require(ctx, id, "experimentId");
    if (valid.length) {
      await this.db
        .createQueryBuilder()
        .insert()
        .into(ExperimentTag)
        .values(valid.map((t) => ({ ...t, experimentId: id })))
        .orUpdate(["value"], ["experiment_id", "key"])
        .execute();
    }
    return experiment;
  }

  async tagsFor(experimentIds: readonly string[]): Promise<Map<string, KeyValue[]>> {
    const rows = await this.db.getRepository(ExperimentTag).createQueryBuilder("t").where("t.experiment_id = ANY(:ids)", { ids: [...experimentIds] }).orderBy("t.key").getMany();
    const map = new Map<string, KeyValue[]>();
    for (const r of rows) {
      const list = map.get(r.experimentId) ?? [];
      list.push({ key: r.key, value: r.value });
      map.set(r.experimentId, list);
    }
    return map;
  }

  async byIds(ids: readonly string[]): Promise<Experiment[]> {
    return this.db.getRepository(Experiment).createQueryBuilder("e").where("e.id = ANY(:ids)", { ids: [...ids] }).getMany();
  }
}
