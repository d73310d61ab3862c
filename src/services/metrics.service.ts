import type { Logger } from "pino";
import { ingestedPoints } from "../server/observability.js";
import type { EventBus } from "../stores/event-bus/event-bus.js";
import type {
  ComparisonOperator,
  HistoryRequest,
  KeyedMetricPoint,
  MetricPoint,
  MetricStore,
  MetricFigures,
  MetricSummary,
  StoredMetricPoint,
} from "../stores/metric-store/index.js";
import { MAX_HISTORY_POINTS } from "../stores/metric-store/index.js";
import type { RequestContext } from "./context.js";
import { DomainError } from "./errors.js";
import type { MetricSearchHooks } from "./run-search.js";
import type { RunsService } from "./runs.service.js";
import { SeriesCountFloors } from "./series-count-floors.js";

/** Event-bus topic carrying every committed batch of one run's points. */
export const metricsTopic = (runId: string) => `run:${runId}:metrics`;

/** What `metricsLogged` subscribers receive, and what is published after each committed call. */
export interface MetricBatchEvent {
  runId: string;
  points: KeyedMetricPoint[];
  /** The call's idempotency key, when it had one: subscribers recognise a batch announced again by it. */
  batchId?: string;
  /**
   * Announced again by a retry that found the batch already stored: the first announcement may
   * never have gone out (the server died between storing and announcing). Subscribers that saw
   * the batch drop it.
   */
  repeat?: boolean;
}

/** One point as the GraphQL input carries it (step defaults to 0 as in MLflow, timestamp to now). */
export interface MetricPointArgs {
  key: string;
  value: number;
  step?: number | null;
  timestamp?: Date | null;
}

/** The columnar form: parallel arrays, timestamps in epoch milliseconds. */
export interface MetricColumnArgs {
  keys: string[];
  steps: number[];
  values: number[];
  timestamps?: number[] | null;
}

export interface LogMetricsOutcome {
  /** Points stored by this call (0 when deduplicated). */
  accepted: number;
  /** True when this idempotency key had already been stored for the run: nothing new was written. */
  deduplicated: boolean;
}

/** A (run, key) whose summary is wanted. */
export interface MetricRef {
  runId: string;
  key: string;
}

/** One metric of one run, with its summary (a run's metric exists when it has a summary). */
export interface RunMetricView {
  runId: string;
  key: string;
  /** The summary, when it was read to learn that the series exists. */
  loadedSummary?: MetricSummary;
  /** Otherwise a lower bound of its point count, known from an earlier read. */
  countAtLeast?: number;
}

export interface HistoryArgs {
  minStep?: number | null;
  maxStep?: number | null;
  maxPoints?: number | null;
  /** The series' point count, when its summary is already loaded (spares a count query). */
  knownCount?: number;
  /** A lower bound of the series' point count (spares the count query of a long series). */
  countAtLeast?: number;
}

/**
 * Metric time series: ingest (validated, group-committed, idempotent, then announced on the event
 * bus) and the batched reads behind the per-request DataLoaders. The ClickHouse SQL lives in the
 * metric store; this service adds the run checks and the live announcements.
 */
export class MetricsService {
  constructor(
    private readonly store: MetricStore,
    private readonly bus: EventBus,
    private readonly runs: RunsService,
    private readonly log: Logger,
  ) {}

  /** Point counts already seen per series: they only grow, so they stay true lower bounds. */
  private readonly countFloors = new SeriesCountFloors();

  /**
   * Stores points for a run that exists and is not deleted (task tokens: only their own run).
   * Answers once the rows are stored; then announces them to `metricsLogged` subscribers.
   * Errors name the point, e.g. `points[3].value`; nothing is stored on error.
   */
  async logMetrics(ctx: RequestContext, runId: string, points: readonly MetricPointArgs[], idempotencyKey?: string | null): Promise<LogMetricsOutcome> {
    const storedRunId = await this.runs.assertWritable(ctx, runId, "runId");
    // Timestamps are filled in here, not in the store, so what is announced is exactly what was stored.
    const now = Date.now();
    const input = points.map((p) => ({ key: p.key, value: p.value, step: p.step ?? 0, timestamp: p.timestamp ?? now }));
    const result = await this.store.logPoints(storedRunId, input, idempotencyKey ?? undefined);
    if (result.stored > 0) {
      await this.announce(
        storedRunId,
        input.map((p) => ({ key: p.key, step: p.step, value: p.value, timestamp: typeof p.timestamp === "number" ? p.timestamp : p.timestamp.getTime() })),
        idempotencyKey,
      );
    } else if (result.deduplicated && idempotencyKey) {
      await this.announceAgain(storedRunId, idempotencyKey);
    }
    ingestedPoints.inc(result.stored);
    return { accepted: result.stored, deduplicated: result.deduplicated };
  }

  /** Columnar {@link logMetrics}: same rules; errors name the array and index, e.g. `values[3]`. */
  async logMetricColumns(ctx: RequestContext, runId: string, columns: MetricColumnArgs, idempotencyKey?: string | null): Promise<LogMetricsOutcome> {
    const storedRunId = await this.runs.assertWritable(ctx, runId, "runId");
    const timestamps = columns.timestamps ?? new Array<number>(columns.keys.length).fill(Date.now());
    const result = await this.store.logColumns(storedRunId, { ...columns, timestamps }, idempotencyKey ?? undefined);
    if (result.stored > 0) {
      const points: KeyedMetricPoint[] = columns.keys.map((key, i) => ({ key, step: columns.steps[i], value: columns.values[i], timestamp: timestamps[i] }));
      await this.announce(storedRunId, points, idempotencyKey);
    } else if (result.deduplicated && idempotencyKey) {
      await this.announceAgain(storedRunId, idempotencyKey);
    }
    ingestedPoints.inc(result.stored);
    return { accepted: result.stored, deduplicated: result.deduplicated };
  }

  /**
   * Published only after the INSERT was acknowledged, so a subscriber never receives a point that
   * a replay read at the same moment could not find (see MetricStreamService for the seam).
   */
  private async announce(runId: string, points: KeyedMetricPoint[], batchId?: string | null, repeat = false): Promise<void> {
    const event: MetricBatchEvent = { runId, points, ...(batchId ? { batchId } : {}), ...(repeat ? { repeat } : {}) };
    await this.bus.publish(metricsTopic(runId), event);
  }

  /**
   * A retry answered `deduplicated` announces the batch again, as it was stored (its defaulted
   * timestamps are the first call's): if the server that stored it died before announcing,
   * live subscribers would otherwise never get it. Those that did get it drop it by its key.
   * Best effort: the write itself has succeeded.
   */
  private async announceAgain(runId: string, batchId: string): Promise<void> {
    try {
      const points = await this.store.pointsOfBatch(runId, batchId);
      if (points.length) await this.announce(runId, points, batchId, true);
    } catch (err) {
      // The points stay readable (replay, history); only this second announcement is lost.
      this.log.warn({ err: (err as Error).message, runId, batchId }, "could not announce a deduplicated batch again");
    }
  }

  /** Metric keys per run (one query for all runs). */
  metricKeys(_ctx: RequestContext | null, runIds: readonly string[]): Promise<Map<string, string[]>> {
    return this.store.metricKeys(runIds);
  }

  /** Summaries for many (run, key) pairs in one query; runId -> key -> summary. */
  async summaries(_ctx: RequestContext | null, refs: readonly MetricRef[]): Promise<Map<string, Map<string, MetricSummary>>> {
    const found = await this.store.summaries(refs);
    for (const [runId, byKey] of found) for (const [key, summary] of byKey) this.countFloors.record(runId, key, summary.count);
    return found;
  }

  /** min, max and last for many (run, key) pairs in one query (cheaper than summaries). */
  figures(_ctx: RequestContext | null, refs: readonly MetricRef[]): Promise<Map<string, Map<string, MetricFigures>>> {
    return this.store.figures(refs);
  }

  /** Histories for many requests in one query, aligned with `requests`. */
  history(_ctx: RequestContext | null, requests: readonly HistoryRequest[]): Promise<MetricPoint[][]> {
    return this.store.history(requests);
  }

  /** Replay page for subscriptions (ordered by step, key, timestamp). */
  pointsFrom(runId: string, keys: readonly string[] | undefined, fromStep: number, limit: number, after?: KeyedMetricPoint): Promise<StoredMetricPoint[]> {
    return this.store.pointsFrom(runId, keys, fromStep, limit, after);
  }

  /** Validates history arguments and turns them into a store request (field names as in the schema). */
  /** One metric of a run, or null when the run never logged it (through the request's loaders). */
  async metricOf(ctx: RequestContext, runId: string, key: string): Promise<RunMetricView | null> {
    // A series seen before still exists: its summary is read only if the query asks for it.
    const countAtLeast = this.countFloors.get(runId, key);
    if (countAtLeast !== undefined) return { runId, key, countAtLeast };
    const summary = await ctx.loaders.metricSummary.load({ runId, key });
    return summary ? { runId, key, loadedSummary: summary } : null;
  }

  /** Metrics of a run in the order of `keys` (all of them when absent); keys never logged are left out. */
  async metricsOf(ctx: RequestContext, runId: string, keys?: readonly string[] | null): Promise<RunMetricView[]> {
    const wanted = keys ?? (await ctx.loaders.metricKeys.load(runId));
    const summaries = await ctx.loaders.metricSummary.loadMany(wanted.map((key) => ({ runId, key })));
    const out: RunMetricView[] = [];
    summaries.forEach((summary, i) => {
      if (summary instanceof Error) throw summary;
      if (summary) out.push({ runId, key: wanted[i], loadedSummary: summary });
    });
    return out;
  }

  historyRequest(runId: string, key: string, args: HistoryArgs): HistoryRequest {
    const maxPoints = args.maxPoints ?? 1000;
    if (!Number.isSafeInteger(maxPoints) || maxPoints < 1 || maxPoints > MAX_HISTORY_POINTS) {
      throw new DomainError("BAD_USER_INPUT", `maxPoints: must be an integer from 1 to ${MAX_HISTORY_POINTS}`, "maxPoints");
    }
    for (const field of ["minStep", "maxStep"] as const) {
      const v = args[field];
      if (v != null && (!Number.isSafeInteger(v) || v < 0)) throw new DomainError("BAD_USER_INPUT", `${field}: must be a non-negative integer`, field);
    }
    if (args.minStep != null && args.maxStep != null && args.minStep > args.maxStep) {
      throw new DomainError("BAD_USER_INPUT", "maxStep: must not be below minStep", "maxStep");
    }
    return { runId, key, minStep: args.minStep ?? undefined, maxStep: args.maxStep ?? undefined, maxPoints, knownCount: args.knownCount, countAtLeast: args.countAtLeast };
  }

  /** The hooks run search uses for `metrics.*` filter and orderBy terms (last values). */
  searchHooks(): MetricSearchHooks {
    return {
      runIdsMatching: (restrictTo, key, op, value, limit) => this.store.runIdsMatching(restrictTo, key, op as ComparisonOperator, value, limit),
      lastValues: (runIds, key, limit) => this.store.lastValues(runIds, key, limit),
    };
  }

  /** For /readyz. */
  ping(): Promise<void> {
    return this.store.ping();
  }
}
