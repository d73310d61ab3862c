import type { DataSource } from "typeorm";
import type { Run } from "../entities/run.entity.js";
import type { Dataset } from "../entities/dataset.entity.js";
import type { ModelVersion } from "../entities/model-version.entity.js";
import type { RequestContext } from "./context.js";
import { LIMITS, validateText } from "./validation.js";

/**
 * PIPELINES HOOK: the pipelines feature plugs in how a tracking run maps to the pipeline run and
 * task run that produced it (`services.lineage.usePipelineLookup(...)`); until then both are null.
 */
export type PipelineLookup = (runIds: readonly string[]) => Promise<Map<string, { pipelineRunId: string | null; taskRunId: string | null }>>;

export interface ModelLineage {
  sourceRunId: string;
  /** Ancestors of the source run, nearest first. */
  parentRunIds: string[];
  pipelineRunId: string | null;
  taskRunId: string | null;
}

export interface DatasetLineageView {
  dataset: Dataset;
  /** Runs that consumed the dataset, and their descendants (nested runs). */
  runIds: string[];
  modelVersionIds: string[];
}

/** Loads by id through a request's DataLoader; a failed key is an error, a missing one is skipped. */
async function loadExisting<T>(loader: { loadMany(ids: readonly string[]): Promise<(T | null | Error)[]> }, ids: readonly string[]): Promise<T[]> {
  const rows = await loader.loadMany(ids);
  const found: T[] = [];
  for (const row of rows) {
    if (row instanceof Error) throw row;
    if (row !== null) found.push(row);
  }
  return found;
}

const MAX_DEPTH = 100;

/** Where a model version came from, and what was built from a dataset. */
export class LineageService {
  private pipelineLookup?: PipelineLookup;

  constructor(private readonly db: DataSource) {}

  usePipelineLookup(lookup: PipelineLookup): void {
    this.pipelineLookup = lookup;
  }

  /** Through the request's loader: the lineages of every version a query asks for take two statements. */
  async ofVersion(ctx: RequestContext, version: ModelVersion): Promise<ModelLineage> {
    return ctx.loaders.lineageOfRun.load(version.runId);
  }

  /** Lineage of each source run: its ancestors (one recursive statement for all) and its pipeline task. */
  async ofRuns(runIds: readonly string[]): Promise<Map<string, ModelLineage>> {
    const ancestors: { origin: string; id: string }[] = await this.db.query(
      `WITH RECURSIVE up(origin, id, parent, depth) AS (
         SELECT id, id, parent_run_id, 0 FROM runs WHERE id = ANY($1::uuid[])
         UNION ALL
         SELECT up.origin, r.id, r.parent_run_id, up.depth + 1 FROM runs r JOIN up ON r.id = up.parent WHERE up.depth < ${MAX_DEPTH}
       )
       SELECT origin, id FROM up WHERE depth > 0 ORDER BY origin, depth`,
      [[...runIds]],
    );
    const pipelines = this.pipelineLookup ? await this.pipelineLookup([...runIds]) : undefined;
    const lineages = new Map<string, ModelLineage>();
    for (const runId of runIds) {
      const pipeline = pipelines?.get(runId);
      lineages.set(runId, { sourceRunId: runId, parentRunIds: [], pipelineRunId: pipeline?.pipelineRunId ?? null, taskRunId: pipeline?.taskRunId ?? null });
    }
    for (const a of ancestors) lineages.get(a.origin)?.parentRunIds.push(a.id);
    return lineages;
  }

  /** The dataset with the runs and model versions downstream of it, loaded through the request's loaders. */
  async datasetLineage(ctx: RequestContext, name: string, digest: string): Promise<{ dataset: Dataset; runs: Run[]; modelVersions: ModelVersion[] } | null> {
    const found = await this.ofDataset(ctx, name, digest);
    if (!found) return null;
    const [runs, modelVersions] = await Promise.all([loadExisting<Run>(ctx.loaders.runById, found.runIds), loadExisting<ModelVersion>(ctx.loaders.modelVersionById, found.modelVersionIds)]);
    return { dataset: found.dataset, runs, modelVersions };
  }

  /** Runs by id, in order, through the request's loader (e.g. a lineage's parent runs). */
  runsByIds(ctx: RequestContext, ids: readonly string[]): Promise<Run[]> {
    return loadExisting<Run>(ctx.loaders.runById, ids);
  }

  async ofDataset(_ctx: RequestContext, name: string, digest: string): Promise<DatasetLineageView | null> {
    validateText(name, "name", LIMITS.nameLength);
    validateText(digest, "digest", 1000);
    const datasets: (Dataset & { source_uri?: string; created_at?: Date })[] = await this.db.query(
      `SELECT id, name, digest, source_uri AS "sourceUri", created_at AS "createdAt" FROM datasets WHERE name = $1 AND digest = $2`,
      [name, digest],
    );
    if (!datasets.length) return null;
    const runs: { id: string }[] = await this.db.query(
      `WITH RECURSIVE down(id, depth) AS (
         SELECT run_id, 0 FROM run_inputs WHERE dataset_id = $1
         UNION
         SELECT r.id, down.depth + 1 FROM runs r JOIN down ON r.parent_run_id = down.id WHERE down.depth < ${MAX_DEPTH}
       )
       SELECT DISTINCT d.id, r.start_time FROM down d JOIN runs r ON r.id = d.id WHERE r.deleted_at IS NULL ORDER BY r.start_time, d.id`,
      [datasets[0].id],
    );
    const runIds = runs.map((r) => r.id);
    const versions: { id: string }[] = runIds.length
      ? await this.db.query(`SELECT id FROM model_versions WHERE run_id = ANY($1) ORDER BY created_at, id`, [runIds])
      : [];
    return { dataset: datasets[0] as Dataset, runIds, modelVersionIds: versions.map((v) => v.id) };
  }

  /** Loads runs in the given order (for resolvers). */
  static ordered(runs: (Run | null)[]): Run[] {
    return runs.filter((r): r is Run => r !== null);
  }
}
