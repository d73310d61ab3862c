import type { ClickHouseClient, ClickHouseSettings } from "@clickhouse/client";
import { DomainError } from "../../services/errors.js";
import { createClickHouseConnection, type ClickHouseConnectionOptions, type ClickHouseHandle } from "./clickhouse-connection.js";
import { applyMetricMigrations } from "./metric-migrations.js";
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
};

/** Aggregates kept per (run, key) by the summary materialized view. */
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

export interface HistoryRequest {
  runId: string;
  key: string;
  /** Inclusive bounds on step. */
  minStep?: number;
  maxStep?: number;
  /** More points than this in range are downsampled in ClickHouse (LTTB), keeping first and last. */
  maxPoints: number;
}

export type ComparisonOperator = "=" | "!=" | "<" | ">" | "<=" | ">=";
const OPERATORS: ReadonlySet<string> = new Set<ComparisonOperator>(["=", "!=", "<", ">", "<=", ">="]);

export const MAX_HISTORY_POINTS = 100_000;
const MAX_STEP = Number.MAX_SAFE_INTEGER;

/**
 * Metrics in ClickHouse: raw points in `metrics`, per-(run, key) aggregates in `metric_summaries`
 * (an AggregatingMergeTree fed by a materialized view), batch ids in `metric_batches`.
 * Every read takes many runs at once so per-request DataLoaders make one query per batch.
 */
export class MetricStore {
  private queries = 0;
  private readonly writer: MetricWriter;
  private readonly client: ClickHouseClient;

  /** Use {@link openMetricStore}; the constructor assumes migrations already ran. */
  constructor(
    private readonly handle: ClickHouseHandle,
    private readonly options: Pick<MetricStoreOptions, "cluster" | "groupCommit" | "onQuery"> = {},
  ) {
    this.client = handle.client;
    // On a cluster, inserts into a Distributed table are forwarded asynchronously by default;
    // forwarding in the foreground keeps "resolved means stored" true.
    const insertSettings: ClickHouseSettings = options.cluster ? ({ insert_distributed_sync: 1 } as ClickHouseSettings) : {};
    this.writer = new MetricWriter(this.client, insertSettings, (kind, sql) => this.count(kind, sql), options.groupCommit);
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

  private async select<T>(query: string, params: Record<string, unknown>): Promise<T[]> {
    this.count("query", query);
    const query_params = Object.fromEntries(Object.entries(params).filter(([, v]) => v !== undefined));
    const rs = await this.client.query({ query, format: "JSONEachRow", query_params });
    return rs.json<T>();
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
    const result = new Map<string, Map<string, MetricSummary>>();
    if (pairs.length === 0) return result;
    const wanted = new Set(pairs.map((p) => `${p.runId}\u0000${p.key}`));
    // runs x keys may over-fetch a little for ragged pair lists, but keeps both filters on the
    // table's primary key; unrequested pairs are dropped below.
    const rows = await this.select<{
      run_id: string;
      key: string;
      min: number;
      max: number;
      last: number;
      last_step: number;
      last_ts: number;
      count: number;
    }>(
      "SELECT run_id, key, min(min_value) AS min, max(max_value) AS max, argMaxMerge(last_value) AS last,\n" +
        "  tupleElement(max(last_point), 1) AS last_step, toUnixTimestamp64Milli(tupleElement(max(last_point), 2)) AS last_ts,\n" +
        "  sum(point_count) AS count\n" +
        "FROM metric_summaries\n" +
        "WHERE run_id IN {runs:Array(String)} AND key IN {keys:Array(String)}\n" +
        "GROUP BY run_id, key",
      { runs: unique(pairs.map((p) => p.runId)), keys: unique(pairs.map((p) => p.key)) },
    );
    for (const r of rows) {
      if (!wanted.has(`${r.run_id}\u0000${r.key}`)) continue;
      let byKey = result.get(r.run_id);
      if (!byKey) result.set(r.run_id, (byKey = new Map()));
      byKey.set(r.key, {
        min: r.min,
        max: r.max,
        last: r.last,
        lastStep: Number(r.last_step),
        lastTimestamp: Number(r.last_ts),
        count: Number(r.count),
      });
    }
    return result;
  }

  /**
   * Point series for many (run, key, step range) requests in ONE query; the result array is
   * aligned with `requests`. A series with more than `maxPoints` points in range is downsampled
   * in ClickHouse with largestTriangleThreeBuckets (keeps the first and last point), so Node
   * never holds a whole series. Points are ordered by step.
   */
  async history(requests: readonly HistoryRequest[]): Promise<MetricPoint[][]> {
    const result: MetricPoint[][] = requests.map(() => []);
    if (requests.length === 0) return result;
    // Requests with the same step range and maxPoints (the usual case: one chart setting over many
    // runs) share one branch that downsamples every (run, key) series with GROUP BY; a branch per
    // request costs ~30 ms each on the embedded engine, so 500 series took 15 s that way.
    const groups = new Map<string, { lo: number; hi: number; maxPoints: number; members: number[] }>();
    requests.forEach((req, i) => {
      const maxPoints = req.maxPoints;
      if (!Number.isSafeInteger(maxPoints) || maxPoints < 1 || maxPoints > MAX_HISTORY_POINTS) {
        throw new DomainError("BAD_USER_INPUT", `maxPoints: must be an integer from 1 to ${MAX_HISTORY_POINTS}`, "maxPoints");
      }
      const lo = clampStep(req.minStep, 0);
      const hi = clampStep(req.maxStep, MAX_STEP);
      const id = `${lo}:${hi}:${maxPoints}`;
      let group = groups.get(id);
      if (!group) groups.set(id, (group = { lo, hi, maxPoints, members: [] }));
      group.members.push(i);
    });
    const params: Record<string, unknown> = {};
    const wanted = new Map<string, number[]>(); // `${group}\0${run}\0${key}` -> request indexes
    const branches = [...groups.values()].map((g, gi) => {
      params[`r${gi}`] = unique(g.members.map((i) => requests[i].runId));
      params[`k${gi}`] = unique(g.members.map((i) => requests[i].key));
      params[`lo${gi}`] = g.lo;
      params[`hi${gi}`] = g.hi;
      for (const i of g.members) {
        const id = `${gi}\u0000${requests[i].runId}\u0000${requests[i].key}`;
        wanted.set(id, [...(wanted.get(id) ?? []), i]);
      }
      const range = `step >= {lo${gi}:Int64} AND step <= {hi${gi}:Int64}`;
      // LTTB only yields (step, value); joining its picks back to the raw rows recovers the
      // timestamps. With fewer points than maxPoints it returns every point, so no count is
      // needed first. LIMIT 1 BY drops exact (step, value) duplicates so the bound holds.
      if ((params[`r${gi}`] as string[]).length === 1 && (params[`k${gi}`] as string[]).length === 1) {
        // One series: equality filters and no GROUP BY, about twice as fast as the grouped form.
        const where = `run_id = {r${gi}:Array(String)}[1] AND key = {k${gi}:Array(String)}[1] AND ${range}`;
        return (
          `SELECT ${gi} AS g, run_id, key, step, value, toUnixTimestamp64Milli(ts) AS timestamp FROM metrics\n` +
          `WHERE ${where}\n` +
          `  AND (toFloat64(step), value) IN (SELECT arrayJoin(largestTriangleThreeBuckets(${g.maxPoints})(step, value)) FROM metrics WHERE ${where})\n` +
          `ORDER BY step, timestamp\nLIMIT 1 BY step, value`
        );
      }
      // runs x keys may over-fetch for ragged request lists; unrequested series are dropped below.
      const where = `run_id IN {r${gi}:Array(String)} AND key IN {k${gi}:Array(String)} AND ${range}`;
      return (
        `SELECT ${gi} AS g, run_id, key, step, value, toUnixTimestamp64Milli(ts) AS timestamp FROM metrics\n` +
        `WHERE ${where}\n` +
        `  AND (run_id, key, toFloat64(step), value) IN (\n` +
        `    SELECT run_id, key, tupleElement(p, 1), tupleElement(p, 2) FROM (\n` +
        `      SELECT run_id, key, arrayJoin(largestTriangleThreeBuckets(${g.maxPoints})(step, value)) AS p FROM metrics\n` +
        `      WHERE ${where} GROUP BY run_id, key))\n` +
        `ORDER BY run_id, key, step, timestamp\nLIMIT 1 BY run_id, key, step, value`
      );
    });
    const sql = `SELECT g, run_id, key, step, value, timestamp FROM (\n${branches.join("\nUNION ALL\n")}\n)\nORDER BY g, run_id, key, step, timestamp`;
    const rows = await this.select<{ g: number; run_id: string; key: string; step: number; value: number; timestamp: number }>(sql, params);
    for (const r of rows) {
      const targets = wanted.get(`${r.g}\u0000${r.run_id}\u0000${r.key}`);
      if (!targets) continue;
      const point = { step: Number(r.step), value: r.value, timestamp: Number(r.timestamp) };
      for (const i of targets) result[i].push(point);
    }
    return result;
  }

  /**
   * Raw points of one run from `fromStep` on, ordered by step (then key, timestamp), for
   * subscription replay; `keys` undefined means every key. At most `limit` points (default 10,000).
   */
  async pointsFrom(runId: string, keys: readonly string[] | undefined, fromStep: number, limit = 10_000): Promise<KeyedMetricPoint[]> {
    if (!Number.isSafeInteger(limit) || limit < 1) throw new DomainError("BAD_USER_INPUT", "limit: must be a positive integer", "limit");
    if (keys !== undefined && keys.length === 0) return [];
    const keyFilter = keys === undefined ? "" : " AND key IN {keys:Array(String)}";
    const rows = await this.select<{ key: string; step: number; value: number; timestamp: number }>(
      `SELECT key, step, value, toUnixTimestamp64Milli(ts) AS timestamp FROM metrics\n` +
        `WHERE run_id = {run:String}${keyFilter} AND step >= {from:Int64}\n` +
        `ORDER BY step, key, timestamp\nLIMIT {limit:UInt64}`,
      { run: runId, keys: keys ? unique(keys) : undefined, from: clampStep(fromStep, 0), limit },
    );
    return rows.map((r) => ({ key: r.key, step: Number(r.step), value: r.value, timestamp: Number(r.timestamp) }));
  }

  /**
   * Runs whose LAST value of `key` satisfies `op value` (run search filters), optionally
   * restricted to `runIds`. Reads the aggregate table only.
   */
  async runIdsMatching(
    runIds: readonly string[] | undefined,
    key: string,
    op: ComparisonOperator,
    value: number,
  ): Promise<string[]> {
    if (!OPERATORS.has(op)) throw new DomainError("BAD_USER_INPUT", `op: must be one of ${[...OPERATORS].join(" ")}`, "op");
    if (!Number.isFinite(value)) throw new DomainError("BAD_USER_INPUT", "value: must be a finite number", "value");
    if (runIds !== undefined && runIds.length === 0) return [];
    const runFilter = runIds === undefined ? "" : " AND run_id IN {runs:Array(String)}";
    const rows = await this.select<{ run_id: string }>(
      `SELECT run_id FROM metric_summaries WHERE key = {key:String}${runFilter}\n` +
        `GROUP BY run_id HAVING argMaxMerge(last_value) ${op} {value:Float64}`,
      { key, value, runs: runIds ? unique(runIds) : undefined },
    );
    return rows.map((r) => r.run_id);
  }

  /**
   * Last value of `key` per run (for ordering search results); runs without it are absent.
   * `runIds` undefined means every run that logged the key.
   */
  async lastValues(runIds: readonly string[] | undefined, key: string): Promise<Map<string, number>> {
    if (runIds !== undefined && runIds.length === 0) return new Map();
    const runFilter = runIds === undefined ? "" : "run_id IN {runs:Array(String)} AND ";
    const rows = await this.select<{ run_id: string; last: number }>(
      "SELECT run_id, argMaxMerge(last_value) AS last FROM metric_summaries\n" +
        `WHERE ${runFilter}key = {key:String} GROUP BY run_id`,
      { runs: runIds ? unique(runIds) : undefined, key },
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
 * Connects (embedded chdb under `<dataDir>/clickhouse`, or HTTP `url`), applies pending
 * migrations, and returns the store. Throws DomainError("UNAVAILABLE") when the embedded engine
 * cannot run on this platform.
 */
export async function openMetricStore(options: MetricStoreOptions): Promise<MetricStore> {
  const handle = createClickHouseConnection(options);
  try {
    await applyMetricMigrations(handle.client, { cluster: options.cluster }, (sql) =>
      options.onQuery?.({ kind: sql.startsWith("SELECT") ? "query" : "command", sql }),
    );
  } catch (err) {
    await handle.close().catch(() => {
      // the migration error is the one worth reporting; closing is best effort here
    });
    throw err;
  }
  return new MetricStore(handle, options);
}

function unique(values: readonly string[]): string[] {
  return [...new Set(values)];
}

function clampStep(step: number | undefined, fallback: number): number {
  if (step === undefined || step === null) return fallback;
  if (typeof step !== "number" || !Number.isFinite(step)) throw new DomainError("BAD_USER_INPUT", "step: must be an integer", "step");
  return Math.min(Math.max(Math.trunc(step), 0), MAX_STEP);
}
