import type { DataSource } from "typeorm";
import type { Run } from "../entities/run.entity.js";
import type { Dataset } from "../entities/dataset.entity.js";
import type { ModelVersion } from "../entities/model-version.entity.js";
import type { RequestContext } from "./context.js";
import { LIMITS, validateText } from "./validation.js";
import { CURSOR_TIME_PATTERN, CURSOR_UUID_PATTERN, cursorTimeSql, encodeKeyCursor, keysetWindow, toPage, type Page, type PageArgs } from "./pagination.js";

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

/** `down(id, depth)`: the runs that consumed dataset $1 and their nested runs (deleted ones too; callers leave those out). */
const DOWNSTREAM_RUNS = `down(id, depth) AS (
         SELECT run_id, 0 FROM run_inputs WHERE dataset_id = $1
         UNION
         SELECT r.id, down.depth + 1 FROM runs r JOIN down ON r.parent_run_id = down.id WHERE down.depth < ${MAX_DEPTH}
       )`;

/** A lineage list's key cursor: the item's time (start or creation) and id. */
const LINEAGE_CURSOR = new RegExp(`^(${CURSOR_TIME_PATTERN})\\|(${CURSOR_UUID_PATTERN})$`);

/** A row of a keyed lineage page: the item's id and cursor time, and the list's total (one row with a null id for an empty page). */
interface KeyedRow {
  id: string | null;
  cursor_at: string | null;
  total: number;
}

/** The ids of a keyed page's rows, `limit + 1` at most. */
function pageIds(rows: KeyedRow[]): string[] {
  return rows.flatMap((r) => (r.id === null ? [] : [r.id]));
}

/** The page of `items` (loaded for the rows of this page), each with its key cursor. */
function keyedPage<T extends { id: string }>(rows: KeyedRow[], window: { offset: number; limit: number }, afterKey: boolean, items: T[]): Page<T> {
  const keyOf = new Map(rows.map((r) => [r.id, `${r.cursor_at}|${r.id}`]));
  const page = toPage(pageIds(rows), window, rows[0]?.total ?? 0);
  return { ...page, items, cursors: items.map((item) => encodeKeyCursor(keyOf.get(item.id)!)), ...(afterKey ? { hasPreviousPage: true } : {}) };
}

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

  /** The dataset, or null when no run logged it; its runs and versions page through {@link runsOfDataset} and {@link versionsOfDataset}. */
  async datasetLineage(_ctx: RequestContext, name: string, digest: string): Promise<{ dataset: Dataset } | null> {
    validateText(name, "name", LIMITS.nameLength);
    validateText(digest, "digest", 1000);
    const datasets: Dataset[] = await this.db.query(
      `SELECT id, name, digest, source_uri AS "sourceUri", created_at AS "createdAt" FROM datasets WHERE name = $1 AND digest = $2`,
      [name, digest],
    );
    return datasets.length ? { dataset: datasets[0] } : null;
  }

  /**
   * A page of the runs downstream of a dataset (those that consumed it, and their nested runs),
   * oldest first. Pages by key (start time, id): a popular dataset gains runs all the time, and a
   * run started with an earlier `startTime` would shift an offset's page.
   */
  async runsOfDataset(ctx: RequestContext, datasetId: string, args: PageArgs): Promise<Page<Run>> {
    const listed = `SELECT DISTINCT r.id, r.start_time AS at FROM down d JOIN runs r ON r.id = d.id WHERE r.deleted_at IS NULL`;
    return this.keyedLineagePage(datasetId, args, listed, (ids) => loadExisting<Run>(ctx.loaders.runById, ids));
  }

  /** A page of the model versions registered from the runs downstream of a dataset, oldest first (keyed by creation time, id). */
  async versionsOfDataset(ctx: RequestContext, datasetId: string, args: PageArgs): Promise<Page<ModelVersion>> {
    const listed = `SELECT v.id, v.created_at AS at FROM model_versions v
                     WHERE v.run_id IN (SELECT d.id FROM down d JOIN runs r ON r.id = d.id WHERE r.deleted_at IS NULL)`;
    return this.keyedLineagePage(datasetId, args, listed, (ids) => loadExisting<ModelVersion>(ctx.loaders.modelVersionById, ids));
  }

  /**
   * One page, oldest first, of what `listedSql` (over `down`, selecting `id` and its time `at`)
   * lists for the dataset, with the list's total; `load` turns the page's ids into items.
   */
  private async keyedLineagePage<T extends { id: string }>(datasetId: string, args: PageArgs, listedSql: string, load: (ids: string[]) => Promise<T[]>): Promise<Page<T>> {
    const { after, window } = keysetWindow(args, LINEAGE_CURSOR);
    const rows: KeyedRow[] = await this.db.query(
      `WITH RECURSIVE ${DOWNSTREAM_RUNS}, listed AS (${listedSql})
       SELECT page.id, page.cursor_at, counted.total
         FROM (SELECT count(*)::int AS total FROM listed) counted
         LEFT JOIN LATERAL (
           SELECT id, ${cursorTimeSql("at")} AS cursor_at FROM listed
            WHERE $2::text IS NULL OR (at, id) > (CAST($2 AS timestamp) AT TIME ZONE 'UTC', CAST($3 AS uuid))
            ORDER BY at, id OFFSET $4 LIMIT $5
         ) page ON true`,
      [datasetId, after?.[1] ?? null, after?.[2] ?? null, window.offset, window.limit + 1],
    );
    return keyedPage(rows, window, after !== null, await load(pageIds(rows).slice(0, window.limit)));
  }

  /** Runs by id, in order, through the request's loader (e.g. a lineage's parent runs). */
  runsByIds(ctx: RequestContext, ids: readonly string[]): Promise<Run[]> {
    return loadExisting<Run>(ctx.loaders.runById, ids);
  }

  /** Loads runs in the given order (for resolvers). */
  static ordered(runs: (Run | null)[]): Run[] {
    return runs.filter((r): r is Run => r !== null);
  }
}
