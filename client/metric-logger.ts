/**
 * A buffered metric logger for one run. The training loop calls `log(key, value, step)`, which
 * only appends to an in-memory buffer (no I/O, no promise); batches leave in the background, by
 * size and by time, one at a time and in order. A batch keeps its idempotency key across retries,
 * so a batch whose answer was lost (server restart, dropped connection) is stored exactly once.
 * Network failures and UNAVAILABLE/RATE_LIMITED answers are retried with capped exponential
 * backoff for as long as it takes; the buffer is bounded, so a very long outage drops the OLDEST
 * unsent points (counted in `stats.dropped`) rather than growing without limit.
 */
import crypto from "node:crypto";
import type { TypedDocumentNode } from "@graphql-typed-document-node/core";
import { MlgraphError } from "./errors.js";
import { LogMetricsDocument, type LogMetricsMutation, type LogMetricsMutationVariables } from "./generated/graphql.js";

/** The part of the client the logger needs (a test may pass a fake). */
export interface MetricRequester {
  request<TResult, TVariables>(document: TypedDocumentNode<TResult, TVariables>, variables?: TVariables): Promise<TResult>;
}

export interface MetricLoggerOptions {
  /** Points per request (default 1,000; the server takes up to 10,000). */
  batchSize?: number;
  /** A partial batch leaves after this many ms (default 1,000). */
  flushIntervalMs?: number;
  /**
   * Most points held while the server is unreachable (default 2,000,000: at 1,000 points/s, over
   * half an hour of outage, about 100 MB). Beyond it the oldest unsent points are dropped.
   */
  maxBufferedPoints?: number;
  /** Retry backoff: first wait and cap in ms (defaults 100 and 5,000), doubling with jitter. */
  retryInitialDelayMs?: number;
  retryMaxDelayMs?: number;
  /** Called for failures the logger handles itself: retries, dropped or refused batches. */
  onError?: (error: Error, info: { willRetry: boolean; points: number }) => void;
}

export interface MetricLoggerStats {
  /** log() calls accepted into the buffer. */
  logged: number;
  /** Points the server confirmed (stored now or earlier under the same idempotency key). */
  delivered: number;
  /** Batches the server answered as already stored (a retry after a lost answer). */
  deduplicatedBatches: number;
  /** Points dropped because the buffer was full during an outage. */
  dropped: number;
  /** Points refused: non-finite values at log(), or a batch the server refused as invalid. */
  rejected: number;
  /** Request attempts that failed and were retried. */
  retries: number;
  /** Points waiting in the buffer or in flight. */
  pending: number;
}

interface Point {
  key: string;
  value: number;
  step: number;
  timestamp: number;
}

/** Points sealed together; `start` is the sequence number of the first (points are numbered as sealed). */
interface Chunk {
  points: Point[];
  start: number;
}

interface Batch {
  points: Point[];
  /** Sequence number of its first point: a batch is one or more consecutive chunks. */
  start: number;
  /** Generated once per batch and reused on every retry of it. */
  idempotencyKey: string;
}

/** The server takes up to 10,000 points per logMetrics call. */
const MAX_BATCH = 10_000;

/**
 * The server's rules for one point (src/stores/metric-store/metric-validation.ts): it refuses a
 * whole batch for one point that breaks them, so they are checked per point at log().
 */
const METRIC_KEY = /^[A-Za-z0-9_.\-/ ]{1,250}$/;
const MAX_TIMESTAMP_MS = Date.UTC(2299, 11, 31, 23, 59, 59, 999);

/** Why the server would refuse this point, or null. */
function pointProblem(key: unknown, step: unknown, timestamp: unknown): { field: string; message: string } | null {
  if (typeof key !== "string" || !METRIC_KEY.test(key)) return { field: "key", message: `metric key ${JSON.stringify(key)}: 1 to 250 of letters, digits, _ . - / and spaces` };
  if (typeof step !== "number" || !Number.isSafeInteger(step) || step < 0) return { field: "step", message: `step ${String(step)} of ${key}: a whole number from 0 to 2^53-1` };
  if (typeof timestamp !== "number" || !Number.isInteger(timestamp) || timestamp < 0 || timestamp > MAX_TIMESTAMP_MS) {
    return { field: "timestamp", message: `timestamp ${String(timestamp)} of ${key}: whole epoch milliseconds from 1970 to 2299` };
  }
  return null;
}

/** A keyed batch answered INTERNAL_SERVER_ERROR is resent this many times (the key makes that safe). */
const INTERNAL_ERROR_TRIES = 3;

export class MetricLogger {
  readonly runId: string;
  private readonly batchSize: number;
  private readonly maxBuffered: number;
  private readonly initialDelay: number;
  private readonly maxDelay: number;
  private readonly onError?: MetricLoggerOptions["onError"];
  /** Sealed chunks waiting to be sent, oldest first; `tail` is the chunk log() appends to. */
  private readonly sealed: Chunk[] = [];
  private tail: Point[] = [];
  private inFlight: Batch | undefined;
  private pumping = false;
  private closed = false;
  private readonly timer: NodeJS.Timeout;
  /**
   * Points sealed so far (the next sequence number) and points settled (delivered, dropped or
   * refused). The count is for stats only: flush() waits on sequence numbers, since chunks settle
   * out of order (newer chunks are dropped during an outage while an older batch is in flight).
   */
  private sealedCount = 0;
  private settledCount = 0;
  private readonly waiters: { through: number; resolve: () => void }[] = [];
  private firstFailure: Error | undefined;
  private readonly beforeExit = () => void this.flush().catch(() => undefined);
  private readonly counters = { logged: 0, delivered: 0, deduplicatedBatches: 0, dropped: 0, rejected: 0, retries: 0 };

  constructor(
    private readonly client: MetricRequester,
    runId: string,
    options: MetricLoggerOptions = {},
  ) {
    this.runId = runId;
    this.batchSize = Math.max(1, Math.min(MAX_BATCH, Math.floor(options.batchSize ?? 1000)));
    this.maxBuffered = Math.max(this.batchSize, options.maxBufferedPoints ?? 2_000_000);
    this.initialDelay = options.retryInitialDelayMs ?? 100;
    this.maxDelay = options.retryMaxDelayMs ?? 5_000;
    this.onError = options.onError;
    // unref: an idle logger must not keep the process alive; beforeExit still sends what is left
    // when a script forgets close().
    this.timer = setInterval(() => this.sealAndPump(), options.flushIntervalMs ?? 1000);
    this.timer.unref();
    process.on("beforeExit", this.beforeExit);
  }

  /**
   * Buffers one point. Never waits on the network and never throws for server trouble. A point the
   * server would refuse is refused here, alone (the server refuses a whole batch for one bad
   * point): a non-finite value (NaN, Infinity) is only counted in `stats.rejected`; a bad key, step
   * or timestamp is a bug in the caller, also reported to onError and by the next flush().
   */
  log(key: string, value: number, step = 0, timestamp = Date.now()): void {
    if (this.closed) throw new Error(`MetricLogger for run ${this.runId} is closed`);
    if (!Number.isFinite(value)) {
      this.counters.rejected++;
      return;
    }
    const problem = pointProblem(key, step, timestamp);
    if (problem) {
      this.counters.rejected++;
      const error = new MlgraphError(`log(): ${problem.message}`, "BAD_USER_INPUT", problem.field);
      this.firstFailure ??= error;
      this.onError?.(error, { willRetry: false, points: 1 });
      return;
    }
    this.counters.logged++;
    this.tail.push({ key, value, step, timestamp });
    if (this.tail.length >= this.batchSize) this.sealAndPump();
  }

  /** Logs several metrics at one step, e.g. `logMany({ loss, acc }, step)`. */
  logMany(values: Record<string, number>, step = 0, timestamp = Date.now()): void {
    for (const key in values) this.log(key, values[key], step, timestamp);
  }

  /**
   * Resolves once every point logged before the call was delivered (or dropped/refused). Rejects
   * with the first non-retryable failure since the last flush (the logger keeps running).
   */
  async flush(): Promise<void> {
    this.sealAndPump();
    const through = this.sealedCount;
    if (this.unsettledFrom() < through) await new Promise<void>((resolve) => this.waiters.push({ through, resolve }));
    const failure = this.firstFailure;
    this.firstFailure = undefined;
    if (failure) throw failure;
  }

  /** Flushes and stops the timer; later log() calls throw. */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.flush();
    } finally {
      this.closed = true;
      clearInterval(this.timer);
      process.off("beforeExit", this.beforeExit);
    }
  }

  get stats(): MetricLoggerStats {
    const pending = this.sealedCount - this.settledCount + this.tail.length;
    return { ...this.counters, pending };
  }

  private sealAndPump(): void {
    if (this.tail.length > 0) {
      this.sealed.push({ points: this.tail, start: this.sealedCount });
      this.sealedCount += this.tail.length;
      this.tail = [];
      this.enforceBound();
    }
    if (!this.pumping && this.sealed.length > 0) void this.pump();
  }

  /** Drops the oldest sealed chunks while more than maxBuffered points wait. */
  private enforceBound(): void {
    let waiting = this.sealedCount - this.settledCount - (this.inFlight?.points.length ?? 0);
    while (waiting > this.maxBuffered && this.sealed.length > 1) {
      const oldest = this.sealed.shift()!.points;
      waiting -= oldest.length;
      this.counters.dropped += oldest.length;
      this.settle(oldest.length);
    }
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      while (this.sealed.length > 0) {
        // After an outage the backlog leaves in requests of up to MAX_BATCH points, so catching up
        // takes a few round trips rather than one per batchSize.
        const first = this.sealed.shift()!;
        let points = first.points;
        if (this.sealed.length > 0 && points.length + this.sealed[0].points.length <= MAX_BATCH) {
          points = points.slice();
          while (this.sealed.length > 0 && points.length + this.sealed[0].points.length <= MAX_BATCH) {
            for (const p of this.sealed.shift()!.points) points.push(p);
          }
        }
        this.inFlight = { points, start: first.start, idempotencyKey: crypto.randomUUID() };
        await this.deliver(this.inFlight);
        this.inFlight = undefined;
        this.settle(points.length);
      }
    } finally {
      this.pumping = false;
    }
  }

  /** Sends one batch until the server stores it or refuses it for good. */
  private async deliver(batch: Batch): Promise<void> {
    let variables: LogMetricsMutationVariables | undefined;
    let internalErrors = 0;
    for (let attempt = 0; ; attempt++) {
      try {
        variables ??= {
          runId: this.runId,
          idempotencyKey: batch.idempotencyKey,
          points: batch.points.map((p) => ({ key: p.key, value: p.value, step: p.step, timestamp: new Date(p.timestamp).toISOString() })),
        };
        const result: LogMetricsMutation = await this.client.request(LogMetricsDocument, variables);
        this.counters.delivered += batch.points.length;
        if (result.logMetrics.deduplicated) this.counters.deduplicatedBatches++;
        return;
      } catch (err) {
        const error = err instanceof Error ? err : new Error(String(err));
        // An unexpected server error may pass (a store error the server did not classify); the
        // idempotency key makes resending safe, so a few more tries before giving the batch up.
        const internal = error instanceof MlgraphError && error.code === "INTERNAL_SERVER_ERROR" && ++internalErrors < INTERNAL_ERROR_TRIES;
        const retryable = error instanceof MlgraphError ? error.retryable || internal : false;
        this.onError?.(error, { willRetry: retryable, points: batch.points.length });
        if (!retryable) {
          // Invalid input or a missing/deleted run: resending the same batch cannot succeed.
          this.counters.rejected += batch.points.length;
          this.firstFailure ??= error;
          return;
        }
        this.counters.retries++;
        const cap = Math.min(this.maxDelay, this.initialDelay * 2 ** Math.min(attempt, 20));
        await this.sleep(cap / 2 + Math.random() * (cap / 2));
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    // A ref'd timer on purpose: a script that ends during an outage waits for its points.
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  /**
   * The lowest sequence number not settled yet: the batch in flight is older than every sealed
   * chunk, and sealed chunks are in order, so everything below this one is settled.
   */
  private unsettledFrom(): number {
    return this.inFlight?.start ?? this.sealed[0]?.start ?? this.sealedCount;
  }

  private settle(count: number): void {
    this.settledCount += count;
    const settledBelow = this.unsettledFrom();
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      if (this.waiters[i].through <= settledBelow) {
        this.waiters[i].resolve();
        this.waiters.splice(i, 1);
      }
    }
  }
}
