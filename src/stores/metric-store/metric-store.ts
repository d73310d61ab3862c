import path from "node:path";
import type { ClickHouseClient, ClickHouseSettings } from "@clickhouse/client";
import { DomainError } from "../../services/errors.js";
import { createClickHouseConnection, type ClickHouseConnectionOptions, type ClickHouseHandle } from "./clickhouse-connection.js";
import { InsertJournal, repairDerivedRows } from "./interrupted-inserts.js";
import { lttb } from "./lttb.js";
import { applyMetricMigrations, ROLLUP_BUCKET_STEPS } from "./metric-migrations.js";
import {
  validateIdempotencyKey,
  validateMetricColumns,
  validateMetricPoints,
  validateRunId,
  type MetricColumnsInput,
  type MetricPointInput,
} from "./metric-validation.js";
import { MetricWriter, type GroupCommitOptions, type LogPointsResult } from "./metric-writer.js";

/** A ClickHouse statement the store ran; `kind` says which client call ran it. */
export interface MetricQueryEvent {
  kind: "query" | "command" | "insert";
  sql: string;
}

export type MetricStoreOptions = ClickHouseConnectionOptions & {
  /** See {@link MetricSchemaOptions.cluster}. */
  cluster?: string;
  groupCommit?: GroupCommitOptions;
  /** Called for every statement sent to ClickHouse (tests count queries per request with it). */
  onQuery?: (event: MetricQueryEvent) => void;
  /**
   * Where the writer journals the runs of the INSERT in progress (one server process per file),
   * so a crash between an INSERT's raw part and its views' parts is repaired at the next open.
   * Default: `<dataDir>/clickhouse-insert-journal.json` when `dataDir` is given, else none.
   */
  insertJournalFile?: string;
  /** A repair of summaries/rollups: after a crash (at open) or after a failed INSERT. */
  onRepair?: (event: { runs: number; reason: "interrupted insert" | "failed insert" | "journal unwritable"; error?: unknown }) => void;
};

/** Aggregates kept per (run, key) by the summary materialized view. */
/** The figures a comparison shows: a {@link MetricSummary} without its last point's step, time and count. */
export interface MetricFigures {
  min: number;
  max: number;
  /** Value of the point with the highest step (ties: latest timestamp). */
  last: number;
}

export interface MetricSummary {
  min: number;
  max: number;
  /** Value of the point with the highest step (ties: latest timestamp). */
  last: number;
  lastStep: number;
  /** Timestamp (epoch ms) of that same last point. */
  lastTimestamp: number;
  count: number;
}

export interface MetricPoint {
  step: number;
  value: number;
  /** Epoch milliseconds. */
  timestamp: number;
}

export interface KeyedMetricPoint extends MetricPoint {
  key: string;
}

/** A stored point as a replay reads it: with the idempotency key of the batch it came in ("" without one). */
export interface StoredMetricPoint extends KeyedMetricPoint {
  batchId: string;
}

export interface HistoryRequest {
  runId: string;
  key: string;
  /** Inclusive bounds on step. */
  minStep?: number;
  maxStep?: number;
  /** More points than this in range are downsampled in ClickHouse (LTTB), keeping first and last. */
  maxPoints: number;
  /**
   * The series' total point count when the caller already has it (from its summary): for a
   * whole-series request it spares the count query.
   */
  knownCount?: number;
  /**
   * A lower bound of the series' total point count: when it alone shows that the series is long
   * enough for the rollup, the count query is spared.
   */
  countAtLeast?: number;
}

export type ComparisonOperator = "=" | "!=" | "<" | ">" | "<=" | ">=";
const OPERATORS: ReadonlySet<string> = new Set<ComparisonOperator>(["=", "!=", "<", ">", "<=", ">="]);

export const MAX_HISTORY_POINTS = 100_000;
const MAX_STEP = Number.MAX_SAFE_INTEGER;

/**
 * Metrics in ClickHouse: raw points in `metrics`, per-(run, key) aggregates in `metric_summaries`
 * (an AggregatingMergeTree fed by a materialized view), M4 candidates per 1024-step bucket in
 * `metric_rollup` (the same), idempotency keys as `batch_id` on the raw points.
 * Every read takes many runs at once so per-request DataLoaders make one query per batch.
 */
export class MetricStore {
  private queries = 0;
  private readonly writer: MetricWriter;
  private readonly client: ClickHouseClient;

  /** Use {@link openMetricStore}; the constructor assumes migrations already ran. */
  constructor(
    private readonly handle: ClickHouseHandle,
    private readonly options: Pick<MetricStoreOptions, "cluster" | "groupCommit" | "onQuery" | "onRepair"> = {},
    journal: InsertJournal = new InsertJournal(null),
  ) {
    this.client = handle.client;
    const insertSettings = insertSettingsFor(options.cluster);
    this.writer = new MetricWriter(this.client, insertSettings, (kind, sql) => this.count(kind, sql), options.groupCommit, {
      journal,
      repair: (runIds) => repairDerivedRows(this.client, runIds, (sql) => this.count("command", sql), insertSettings),
      onRepairFailed: (error, runIds) => options.onRepair?.({ runs: runIds.length, reason: "failed insert", error }),
    });
  }

  /** Statements sent to ClickHouse by this store so far (reads, inserts and lookups). */
  get queryCount(): number {
    return this.queries;
  }

  get backend(): "chdb" | "http" {
    return this.handle.backend;
  }

  private count(kind: MetricQueryEvent["kind"], sql: string): void {
    this.queries++;
    this.options.onQuery?.({ kind, sql });
  }

  private async select<T>(query: string, params: Record<string, unknown>, format: "JSONEachRow" | "JSONCompactEachRow" = "JSONEachRow"): Promise<T[]> {
    this.count("query", query);
    const query_params = Object.fromEntries(Object.entries(params).filter(([, v]) => v !== undefined));
    const rs = await this.client.query({ query, format, query_params });
    return rs.json<T>();
  }

  /** Like {@link select}, with each row as an array in the order of the SELECT list. */
  private selectCompact<T extends unknown[]>(query: string, params: Record<string, unknown>): Promise<T[]> {
    return this.select<T>(query, params, "JSONCompactEachRow");
  }

  /**
   * Logs points for one run. Resolves once they are stored (shared INSERT with concurrent calls);
   * with an `idempotencyKey`, a retry of the same batch for the same run is stored once.
   * Throws DomainError("BAD_USER_INPUT") naming the first bad point, e.g. `points[3].value`.
   */
  logPoints(runId: string, points: readonly MetricPointInput[], idempotencyKey?: string): Promise<LogPointsResult> {
    try {
      validateRunId(runId);
      if (idempotencyKey !== undefined) validateIdempotencyKey(idempotencyKey);
      return this.writer.write(runId, validateMetricPoints(points), idempotencyKey);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Columnar {@link logPoints}: parallel arrays, same validation (errors name `values[3]` etc.). */
  logColumns(runId: string, columns: MetricColumnsInput, idempotencyKey?: string): Promise<LogPointsResult> {
    try {
      validateRunId(runId);
      if (idempotencyKey !== undefined) validateIdempotencyKey(idempotencyKey);
      return this.writer.write(runId, validateMetricColumns(columns), idempotencyKey);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Metric keys logged per run, sorted; runs without metrics map to []. One query. */
  async metricKeys(runIds: readonly string[]): Promise<Map<string, string[]>> {
    const result = new Map<string, string[]>(runIds.map((id) => [id, []]));
    if (runIds.length === 0) return result;
    const rows = await this.select<{ run_id: string; key: string }>(
      "SELECT DISTINCT run_id, key FROM metric_summaries WHERE run_id IN {runs:Array(String)}",
      { runs: unique(runIds) },
    );
    for (const r of rows) result.get(r.run_id)?.push(r.key);
    for (const keys of result.values()) keys.sort();
    return result;
  }

  /**
   * Summaries for any number of (run, key) pairs in ONE query over the aggregate table (never the
   * raw points). Result: runId -> key -> summary; pairs with no points are absent.
   */
  async summaries(pairs: readonly { runId: string; key: string }[]): Promise<Map<string, Map<string, MetricSummary>>> {
    return this.aggregatesPerSeries(pairs, SUMMARY_AGGREGATES, ([min, max, last, lastStep, lastTs, count]) => ({
      min,
      max,
      last,
      lastStep: Number(lastStep),
      lastTimestamp: Number(lastTs),
      count: Number(count),
    }));
  }

  /**
   * min, max and last only, for the same pairs (what a comparison matrix shows): without the last
   * point's step and time and the count, ~20 % cheaper than {@link summaries} for 10,000 pairs.
   */
  async figures(pairs: readonly { runId: string; key: string }[]): Promise<Map<string, Map<string, MetricFigures>>> {
    return this.aggregatesPerSeries(pairs, SUMMARY_AGGREGATES.slice(0, 3), ([min, max, last]) => ({ min, max, last }));
  }

  /**
   * One query over the aggregate table for the given aggregates of each (run, key) pair; each
   * run's series come back as one compact row of parallel arrays (10,000 series of a 1,000-run
   * comparison: ~40 % fewer bytes for the embedded engine to write, 1,000 short lines for Node to
   * parse). runs x keys may over-fetch for ragged pair lists; unrequested pairs are dropped here.
   */
  private async aggregatesPerSeries<V>(
    pairs: readonly { runId: string; key: string }[],
    aggregates: readonly string[],
    build: (values: number[]) => V,
  ): Promise<Map<string, Map<string, V>>> {
    const result = new Map<string, Map<string, V>>();
    if (pairs.length === 0) return result;
    const wanted = new Set(pairs.map((p) => `${p.runId}\u0000${p.key}`));
    const names = aggregates.map((_, i) => `a${i}`);
    const rows = await this.selectCompact<[string, string[], ...number[][]]>(
      `SELECT run_id, groupArray(key), ${names.map((n) => `groupArray(${n})`).join(", ")}\n` +
        `FROM (\n  SELECT run_id, key, ${aggregates.map((a, i) => `${a} AS ${names[i]}`).join(", ")}\n` +
        "  FROM metric_summaries\n" +
        "  WHERE run_id IN {runs:Array(String)} AND key IN {keys:Array(String)}\n" +
        "  GROUP BY run_id, key\n" +
        ")\nGROUP BY run_id",
      { runs: unique(pairs.map((p) => p.runId)), keys: unique(pairs.map((p) => p.key)) },
    );
    for (const [runId, keys, ...columns] of rows) {
      for (let i = 0; i < keys.length; i++) {
        if (!wanted.has(`${runId}\u0000${keys[i]}`)) continue;
        let byKey = result.get(runId);
        if (!byKey) result.set(runId, (byKey = new Map()));
        byKey.set(keys[i], build(columns.map((c) => c[i])));
      }
    }
    return result;
  }

  /**
   * Point series for many (run, key, step range) requests; the result array is aligned with
   * `requests`, points ordered by step. A series with at most `maxPoints` points in range comes
   * back whole. Longer ones are downsampled keeping the first and last point:
   * - a series of up to {@link ROLLUP_MIN_FACTOR} x maxPoints points (as a whole, so any range of
   *   it too): LTTB in ClickHouse over the raw points (exact, but it scans them all);
   * - longer: LTTB in Node over the `metric_rollup` candidates (first, last, lowest and highest
   *   point of every 1024-step bucket, partial buckets at the range ends computed from raw
   *   points), so a 1M-point series reads ~4,000 candidate rows instead of 1M points. A step range
   *   of a long series takes this path too when it spans more steps than the threshold.
   * Queries: one for whole-series point counts (from the summaries) when a request could be long
   * and the caller does not know its count, one for the points of all requests, and one more
   * when the rollup gave too few candidates (a sparse series, or a range holding fewer points than
   * its width suggested) or too many (over {@link MAX_SERIES_ROWS}), which downsamples those from
   * raw points in ClickHouse.
   */
  async history(requests: readonly HistoryRequest[]): Promise<MetricPoint[][]> {
    const result: MetricPoint[][] = requests.map(() => []);
    if (requests.length === 0) return result;
    const specs: SeriesSpec[] = requests.map((req) => {
      const maxPoints = req.maxPoints;
      if (!Number.isSafeInteger(maxPoints) || maxPoints < 1 || maxPoints > MAX_HISTORY_POINTS) {
        throw new DomainError("BAD_USER_INPUT", `maxPoints: must be an integer from 1 to ${MAX_HISTORY_POINTS}`, "maxPoints");
      }
      return { runId: req.runId, key: req.key, lo: clampStep(req.minStep, 0), hi: clampStep(req.maxStep, MAX_STEP), maxPoints };
    });
    // How long is each series as a whole? Known from the caller (its summary, or a lower bound
    // remembered from an earlier read), else read from the summaries (one cheap query). The whole
    // length bounds every range of it: a series within ROLLUP_MIN_FACTOR x maxPoints is downsampled
    // exactly from its raw points, whatever the range. A longer one is read from the rollup, a
    // step range of it too, without counting the range (that would scan its raw points, ~100 ms
    // for 500k); a range holding too few candidates goes to the raw fallback below.
    const threshold = (i: number) => ROLLUP_MIN_FACTOR * specs[i].maxPoints;
    const seriesCounts = new Map<number, number>();
    requests.forEach((req, i) => {
      if (req.knownCount !== undefined) seriesCounts.set(i, req.knownCount);
      else if (req.countAtLeast !== undefined && req.countAtLeast > threshold(i)) seriesCounts.set(i, req.countAtLeast);
    });
    // A range spanning fewer steps than the threshold holds fewer points (when steps are distinct
    // and no step is logged twice), so it needs no count.
    const wide = (i: number) => specs[i].hi - specs[i].lo + 1 > threshold(i);
    const toCount = specs.flatMap((_, i) => (wide(i) && !seriesCounts.has(i) ? [i] : []));
    if (toCount.length > 0) for (const [i, n] of await this.pointCounts(specs, toCount)) seriesCounts.set(i, n);
    const raw: number[] = [];
    const rolled: number[] = [];
    specs.forEach((_, i) => (wide(i) && (seriesCounts.get(i) ?? 0) > threshold(i) ? rolled : raw).push(i));

    const { points, candidates } = await this.readSeries(specs, raw, rolled);
    for (const i of raw) result[i] = points.get(i) ?? [];
    const fallback: number[] = [];
    for (const i of rolled) {
      const found = candidates.get(i) ?? [];
      // Over the cap: the read stopped early (a long series with points 1024+ steps apart).
      if (found.length > MAX_SERIES_ROWS) {
        fallback.push(i);
        continue;
      }
      const pts = dedupeSortedBySteps(found);
      // Too few candidates (a sparse series: few points per bucket) would downsample poorly.
      if (pts.length < MIN_CANDIDATE_FACTOR * specs[i].maxPoints) fallback.push(i);
      else result[i] = lttb(pts, specs[i].maxPoints);
    }
    if (fallback.length > 0) {
      const { points: more } = await this.readSeries(specs, fallback, []);
      for (const i of fallback) result[i] = more.get(i) ?? [];
    }
    return result;
  }

  /** Whole-series point counts (per request index, whatever its step range), from metric_summaries. One query. */
  private async pointCounts(specs: readonly SeriesSpec[], indexes: readonly number[]): Promise<Map<number, number>> {
    const rows = await this.select<{ run_id: string; key: string; n: number }>(
      "SELECT run_id, key, sum(point_count) AS n FROM metric_summaries\n" +
        "WHERE run_id IN {runs:Array(String)} AND key IN {keys:Array(String)} GROUP BY run_id, key",
      { runs: unique(indexes.map((i) => specs[i].runId)), keys: unique(indexes.map((i) => specs[i].key)) },
    );
    const wanted = new Map<string, number[]>(); // `${run}\0${key}` -> request indexes
    for (const i of indexes) push(wanted, `${specs[i].runId}\u0000${specs[i].key}`, i);
    const counts = new Map<number, number>();
    for (const r of rows) for (const i of wanted.get(`${r.run_id}\u0000${r.key}`) ?? []) counts.set(i, Number(r.n));
    return counts;
  }

  /**
   * One query: `raw` requests downsampled in ClickHouse (LTTB over the raw points, or every point
   * when there are few), and for `rolled` requests the rollup candidates of their range.
   */
  private async readSeries(
    specs: readonly SeriesSpec[],
    raw: readonly number[],
    rolled: readonly number[],
  ): Promise<{ points: Map<number, MetricPoint[]>; candidates: Map<number, MetricPoint[]> }> {
    const points = new Map<number, MetricPoint[]>();
    const candidates = new Map<number, MetricPoint[]>();
    if (raw.length === 0 && rolled.length === 0) return { points, candidates };
    const params: Record<string, unknown> = {};
    const wanted = new Map<string, number[]>(); // `${g}\0${run}\0${key}` -> request indexes
    const branches: string[] = [];
    const into = new Map<number, Map<number, MetricPoint[]>>(); // g -> result map
    let g = 0;
    const open = (members: number[]) => {
      const gi = g++;
      params[`r${gi}`] = unique(members.map((i) => specs[i].runId));
      params[`k${gi}`] = unique(members.map((i) => specs[i].key));
      params[`lo${gi}`] = specs[members[0]].lo;
      params[`hi${gi}`] = specs[members[0]].hi;
      for (const i of members) push(wanted, `${gi}\u0000${specs[i].runId}\u0000${specs[i].key}`, i);
      return gi;
    };
    // Requests with the same step range and maxPoints (the usual case: one chart setting over many
    // runs) share one branch that downsamples every (run, key) series with GROUP BY; a branch per
    // request costs ~30 ms each on the embedded engine, so 500 series took 15 s that way.
    groupBy(raw, (i) => `${specs[i].lo}:${specs[i].hi}:${specs[i].maxPoints}`).forEach((members) => {
      const gi = open(members);
      into.set(gi, points);
      branches.push(rawBranch(gi, specs[members[0]].maxPoints, (params[`r${gi}`] as string[]).length === 1 && (params[`k${gi}`] as string[]).length === 1));
    });
    // Rollup candidates do not depend on maxPoints: one branch per step range.
    groupBy(rolled, (i) => `${specs[i].lo}:${specs[i].hi}`).forEach((members) => {
      const gi = open(members);
      into.set(gi, candidates);
      const { lo, hi } = specs[members[0]];
      // Whole buckets b0..b1 come from the rollup; the partial ones at the ends from raw points.
      params[`b0${gi}`] = Math.ceil(lo / ROLLUP_BUCKET_STEPS);
      params[`b1${gi}`] = Math.floor((hi + 1) / ROLLUP_BUCKET_STEPS) - 1;
      branches.push(rollupBranch(gi, lo % ROLLUP_BUCKET_STEPS !== 0, (hi + 1) % ROLLUP_BUCKET_STEPS !== 0));
    });
    // One row per series carrying its points as an array sorted by (step, timestamp): the embedded
    // engine's output and the JSON parse cost per row, so 4,000 candidate rows of a 1M-point series
    // came back ~2x slower than the same points as one array.
    const sql =
      `SELECT g, run_id, key, arraySort(groupArray(${MAX_SERIES_ROWS + 1})((step, timestamp, value))) AS points FROM (\n${branches.join("\nUNION ALL\n")}\n)\n` +
      "GROUP BY g, run_id, key";
    const rows = await this.select<{ g: number; run_id: string; key: string; points: [number, number, number][] }>(sql, params);
    for (const r of rows) {
      const targets = wanted.get(`${r.g}\u0000${r.run_id}\u0000${r.key}`);
      const map = into.get(Number(r.g));
      if (!targets || !map) continue;
      const series = r.points.map(([step, timestamp, value]) => ({ step: Number(step), value, timestamp: Number(timestamp) }));
      for (const i of targets) {
        const existing = map.get(i);
        if (existing) existing.push(...series);
        else map.set(i, targets.length > 1 ? series.slice() : series);
      }
    }
    return { points, candidates };
  }

  /**
   * Raw points of one run from `fromStep` on, ordered by step (then key, timestamp), for
   * subscription replay; `keys` undefined means every key. At most `limit` points (default 10,000).
   */
  async pointsFrom(
    runId: string,
    keys: readonly string[] | undefined,
    fromStep: number,
    limit = 10_000,
    after?: KeyedMetricPoint,
  ): Promise<StoredMetricPoint[]> {
    if (!Number.isSafeInteger(limit) || limit < 1) throw new DomainError("BAD_USER_INPUT", "limit: must be a positive integer", "limit");
    if (keys !== undefined && keys.length === 0) return [];
    const keyFilter = keys === undefined ? "" : " AND key IN {keys:Array(String)}";
    // Keyset paging: the next page starts after the previous page's last point in this order, so
    // pages stay bounded however many points share one step.
    const afterFilter = after
      ? // The plain bound on step lets the read skip the steps before the page (the tuple alone may not).
        " AND step >= {afterStep:Int64} AND (step, key, ts, value) > ({afterStep:Int64}, {afterKey:String}, fromUnixTimestamp64Milli({afterTs:Int64}, 'UTC'), {afterValue:Float64})"
      : "";
    const rows = await this.select<{ key: string; step: number; value: number; timestamp: number; batch_id: string }>(
      `SELECT key, step, value, toUnixTimestamp64Milli(ts) AS timestamp, batch_id FROM metrics\n` +
        `WHERE run_id = {run:String}${keyFilter} AND step >= {from:Int64}${afterFilter}\n` +
        `ORDER BY step, key, ts, value\nLIMIT {limit:UInt64}`,
      {
        run: runId,
        keys: keys ? unique(keys) : undefined,
        from: clampStep(fromStep, 0),
        limit,
        ...(after ? { afterStep: after.step, afterKey: after.key, afterTs: after.timestamp, afterValue: after.value } : {}),
      },
    );
    return rows.map((r) => ({ key: r.key, step: Number(r.step), value: r.value, timestamp: Number(r.timestamp), batchId: r.batch_id }));
  }

  /** The points stored with idempotency key `batchId` for a run (at most one call's 10,000). */
  async pointsOfBatch(runId: string, batchId: string): Promise<KeyedMetricPoint[]> {
    const rows = await this.select<{ key: string; step: number; value: number; timestamp: number }>(
      "SELECT key, step, value, toUnixTimestamp64Milli(ts) AS timestamp FROM metrics\n" +
        "WHERE run_id = {run:String} AND batch_id = {batch:String}\nORDER BY step, key, ts, value\nLIMIT 10000",
      { run: runId, batch: batchId },
    );
    return rows.map((r) => ({ key: r.key, step: Number(r.step), value: r.value, timestamp: Number(r.timestamp) }));
  }

  /**
   * Runs whose LAST value of `key` satisfies `op value` (run search filters), optionally
   * restricted to `runIds`, at most `limit` of them (any). Reads the aggregate table only.
   */
  async runIdsMatching(
    runIds: readonly string[] | undefined,
    key: string,
    op: ComparisonOperator,
    value: number,
    limit?: number,
  ): Promise<string[]> {
    if (!OPERATORS.has(op)) throw new DomainError("BAD_USER_INPUT", `op: must be one of ${[...OPERATORS].join(" ")}`, "op");
    if (!Number.isFinite(value)) throw new DomainError("BAD_USER_INPUT", "value: must be a finite number", "value");
    if (runIds !== undefined && runIds.length === 0) return [];
    const runFilter = runIds === undefined ? "" : " AND run_id IN {runs:Array(String)}";
    const rows = await this.select<{ run_id: string }>(
      `SELECT run_id FROM metric_summaries WHERE key = {key:String}${runFilter}\n` +
        `GROUP BY run_id HAVING argMaxMerge(latest_value) ${op} {value:Float64}` +
        (limit === undefined ? "" : "\nLIMIT {limit:UInt32}"),
      { key, value, runs: runIds ? unique(runIds) : undefined, limit },
    );
    return rows.map((r) => r.run_id);
  }

  /**
   * Last value of `key` per run (for ordering search results); runs without it are absent.
   * `runIds` undefined means every run that logged the key, at most `limit` of them (any).
   */
  async lastValues(runIds: readonly string[] | undefined, key: string, limit?: number): Promise<Map<string, number>> {
    if (runIds !== undefined && runIds.length === 0) return new Map();
    const runFilter = runIds === undefined ? "" : "run_id IN {runs:Array(String)} AND ";
    const rows = await this.select<{ run_id: string; last: number }>(
      "SELECT run_id, argMaxMerge(latest_value) AS last FROM metric_summaries\n" +
        `WHERE ${runFilter}key = {key:String} GROUP BY run_id` +
        (limit === undefined ? "" : "\nLIMIT {limit:UInt32}"),
      { runs: runIds ? unique(runIds) : undefined, key, limit },
    );
    return new Map(rows.map((r) => [r.run_id, r.last]));
  }

  /** Round trip to ClickHouse, for readiness checks; throws when it is unreachable. */
  async ping(): Promise<void> {
    await this.select<{ ok: number }>("SELECT 1 AS ok", {});
  }

  /** Flushes pending writes, then closes the connection (and the embedded engine). */
  async close(): Promise<void> {
    await this.writer.close();
    await this.handle.close();
  }
}

/**
 * Settings of every INSERT:
 * - the two materialized views (summaries, rollup) are fed in parallel rather than one after the
 *   other: on the embedded engine, back-to-back 32,000-point INSERTs went from ~290,000 to ~380,000
 *   points/s for the same CPU, and a group commit holds its callers for less time;
 * - on a cluster, inserts into a Distributed table are forwarded asynchronously by default;
 *   forwarding in the foreground keeps "resolved means stored" true.
 */
function insertSettingsFor(cluster: string | undefined): ClickHouseSettings {
  const settings: ClickHouseSettings = { parallel_view_processing: 1 };
  return cluster ? ({ ...settings, insert_distributed_sync: 1 } as ClickHouseSettings) : settings;
}

/**
 * Connects (embedded chdb under `<dataDir>/clickhouse`, or HTTP `url`), applies pending
 * migrations, and returns the store. Throws DomainError("UNAVAILABLE") when the embedded engine
 * cannot run on this platform.
 */
export async function openMetricStore(options: MetricStoreOptions): Promise<MetricStore> {
  const handle = createClickHouseConnection(options);
  const journalFile = options.insertJournalFile ?? ("dataDir" in options && options.dataDir ? path.join(options.dataDir, "clickhouse-insert-journal.json") : null);
  const journal = new InsertJournal(journalFile, (error) => options.onRepair?.({ runs: 0, reason: "journal unwritable", error }));
  try {
    await applyMetricMigrations(handle.client, { cluster: options.cluster }, (sql) =>
      options.onQuery?.({ kind: sql.startsWith("SELECT") ? "query" : "command", sql }),
    );
    // An INSERT cut short by a crash: bring its runs' summaries and rollups in line with the raw
    // points before anything reads or writes them.
    const interrupted = journal.recorded();
    if (interrupted.length > 0) {
      try {
        await repairDerivedRows(handle.client, interrupted, (sql) => options.onQuery?.({ kind: "command", sql }), insertSettingsFor(options.cluster));
        options.onRepair?.({ runs: interrupted.length, reason: "interrupted insert" });
      } catch (error) {
        // Not a reason to stay down: retried between the writer's INSERTs (with backoff).
        journal.keep(interrupted);
        options.onRepair?.({ runs: interrupted.length, reason: "interrupted insert", error });
      }
      journal.end();
    }
  } catch (err) {
    await handle.close().catch(() => {
      // the migration error is the one worth reporting; closing is best effort here
    });
    throw err;
  }
  return new MetricStore(handle, options, journal);
}

interface SeriesSpec {
  runId: string;
  key: string;
  lo: number;
  hi: number;
  maxPoints: number;
}

/**
 * Series with more than this many times maxPoints points in range are downsampled from the
 * rollup; shorter ones by LTTB over their raw points in ClickHouse.
 */
export const ROLLUP_MIN_FACTOR = 256;
/** Aggregates of one series in metric_summaries: min, max, last (then the summary's extras). */
const SUMMARY_AGGREGATES = [
  "min(min_value)",
  "max(max_value)",
  "argMaxMerge(latest_value)",
  "tupleElement(max(last_point), 1)",
  "toUnixTimestamp64Milli(tupleElement(max(last_point), 2))",
  "sum(point_count)",
] as const;

/** Fewer rollup candidates than this many times maxPoints: read the raw points instead. */
const MIN_CANDIDATE_FACTOR = 1.5;

/**
 * The most points one series may bring into the server from a read (4x MAX_HISTORY_POINTS, so a
 * raw branch never reaches it). Rollup candidates are up to 4 per 1024-step bucket holding data:
 * ~4,000 for a dense 1M-step series, but 4 per point when points lie 1024+ steps apart (step =
 * tokens or samples seen). A series over the cap is downsampled in ClickHouse from its raw
 * points instead, so no series is ever loaded whole into the server.
 */
const MAX_SERIES_ROWS = 4 * MAX_HISTORY_POINTS;

/**
 * Branch `gi` over raw points. LTTB only yields (step, value); joining its picks back to the raw
 * rows recovers the timestamps. With fewer points than maxPoints it returns every point.
 * LIMIT 1 BY drops exact (step, value) duplicates so the bound holds.
 */
function rawBranch(gi: number, maxPoints: number, single: boolean): string {
  const range = `step >= {lo${gi}:Int64} AND step <= {hi${gi}:Int64}`;
  if (single) {
    // One series: equality filters and no GROUP BY, about twice as fast as the grouped form.
    const where = `run_id = {r${gi}:Array(String)}[1] AND key = {k${gi}:Array(String)}[1] AND ${range}`;
    return (
      `SELECT ${gi} AS g, run_id, key, step, value, toUnixTimestamp64Milli(ts) AS timestamp FROM metrics\n` +
      `WHERE ${where}\n` +
      `  AND (toFloat64(step), value) IN (SELECT arrayJoin(largestTriangleThreeBuckets(${maxPoints})(step, value)) FROM metrics WHERE ${where})\n` +
      `ORDER BY step, timestamp\nLIMIT 1 BY step, value`
    );
  }
  // runs x keys may over-fetch for ragged request lists; unrequested series are dropped by the caller.
  const where = `run_id IN {r${gi}:Array(String)} AND key IN {k${gi}:Array(String)} AND ${range}`;
  return (
    `SELECT ${gi} AS g, run_id, key, step, value, toUnixTimestamp64Milli(ts) AS timestamp FROM metrics\n` +
    `WHERE ${where}\n` +
    `  AND (run_id, key, toFloat64(step), value) IN (\n` +
    `    SELECT run_id, key, tupleElement(p, 1), tupleElement(p, 2) FROM (\n` +
    `      SELECT run_id, key, arrayJoin(largestTriangleThreeBuckets(${maxPoints})(step, value)) AS p FROM metrics\n` +
    `      WHERE ${where} GROUP BY run_id, key))\n` +
    `ORDER BY run_id, key, step, timestamp\nLIMIT 1 BY run_id, key, step, value`
  );
}

/**
 * Branch `gi` of rollup candidates: first, last, lowest and highest point of each bucket in range,
 * merged from `metric_rollup` for whole buckets b0..b1 and aggregated from raw points for the
 * partial buckets at the range ends (at most 2 x 1023 points per series).
 */
function rollupBranch(gi: number, leftEdge: boolean, rightEdge: boolean): string {
  const series = `run_id IN {r${gi}:Array(String)} AND key IN {k${gi}:Array(String)}`;
  const B = ROLLUP_BUCKET_STEPS;
  const parts = [
    `  SELECT run_id, key, [argMinMerge(first_point), argMaxMerge(last_point), argMinMerge(low_point), argMaxMerge(high_point)] AS m4\n` +
      `  FROM metric_rollup WHERE ${series} AND bucket >= {b0${gi}:Int64} AND bucket <= {b1${gi}:Int64}\n` +
      `  GROUP BY run_id, key, bucket`,
  ];
  // Each edge is its own primary-key range (an OR of both ranges cost ~7 ms even when empty).
  const edge = (range: string) =>
    `  SELECT run_id, key, [argMin((step, value, ts), step), argMax((step, value, ts), step), argMin((step, value, ts), value), argMax((step, value, ts), value)] AS m4\n` +
    `  FROM metrics WHERE ${series} AND ${range}\n` +
    `  GROUP BY run_id, key, intDiv(step, ${B})`;
  if (leftEdge) parts.push(edge(`step >= {lo${gi}:Int64} AND step <= {hi${gi}:Int64} AND step < {b0${gi}:Int64} * ${B}`));
  if (rightEdge) parts.push(edge(`step >= {lo${gi}:Int64} AND step <= {hi${gi}:Int64} AND step >= ({b1${gi}:Int64} + 1) * ${B}`));
  return (
    `SELECT ${gi} AS g, run_id, key, tupleElement(p, 1) AS step, tupleElement(p, 2) AS value, toUnixTimestamp64Milli(tupleElement(p, 3)) AS timestamp\n` +
    `FROM (\n${parts.join("\n  UNION ALL\n")}\n)\nARRAY JOIN m4 AS p\n` +
    `WHERE tupleElement(p, 1) >= {lo${gi}:Int64} AND tupleElement(p, 1) <= {hi${gi}:Int64}`
  );
}

/** Points sorted by step, one per step (the first of each). */
function dedupeSortedBySteps(points: readonly MetricPoint[]): MetricPoint[] {
  const out: MetricPoint[] = [];
  for (const p of points) if (out.length === 0 || out[out.length - 1].step !== p.step) out.push(p);
  return out;
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

/** Groups indexes by a key, keeping first-seen order; returns the groups. */
function groupBy(indexes: readonly number[], keyOf: (i: number) => string): number[][] {
  const groups = new Map<string, number[]>();
  for (const i of indexes) push(groups, keyOf(i), i);
  return [...groups.values()];
}

function unique(values: readonly string[]): string[] {
  return [...new Set(values)];
}

function clampStep(step: number | undefined, fallback: number): number {
  if (step === undefined || step === null) return fallback;
  if (typeof step !== "number" || !Number.isFinite(step)) throw new DomainError("BAD_USER_INPUT", "step: must be an integer", "step");
  return Math.min(Math.max(Math.trunc(step), 0), MAX_STEP);
}
