import crypto from "node:crypto";
import type { ClickHouseClient, ClickHouseSettings } from "@clickhouse/client";
import { DomainError } from "../../services/errors.js";
import type { MetricColumns } from "./metric-validation.js";
import type { InsertJournal } from "./interrupted-inserts.js";

/** How the writer keeps summaries and rollups whole when an INSERT is cut short (see InsertJournal). */
export interface InsertRecovery {
  journal: InsertJournal;
  /** Re-derives these runs' summary and rollup rows from their raw points. */
  repair(runIds: string[]): Promise<void>;
  /** A repair failed (the runs stay journaled and are repaired later). */
  onRepairFailed?(err: unknown, runIds: string[]): void;
}

/** What a caller of `logPoints` learns once its batch is durable. */
export interface LogPointsResult {
  /** Points stored by this call (0 when the batch was already stored under its idempotency key). */
  stored: number;
  /** True when the idempotency key had already been used for this run; nothing was written. */
  deduplicated: boolean;
}

export interface GroupCommitOptions {
  /**
   * How long the first call of a group waits for others to join it when no callers are expected
   * back, and the least a group waits for those that are (see MetricWriter.gather); default 3 ms.
   */
  windowMs?: number;
  /** A group is flushed as soon as it holds this many points; default 100,000, at most 1,000,000. */
  maxRows?: number;
  /**
   * Most points waiting for their INSERT; default 2,000,000 (about 20 groups, ~100 MB of INSERT
   * text). While the store is slow (an INSERT timing out and then waited for), calls beyond it are
   * refused UNAVAILABLE, which clients retry, instead of piling up in the server's memory.
   */
  maxQueuedRows?: number;
}

type QueryKind = "query" | "command" | "insert";

interface PendingBatch {
  runId: string;
  batchId: string;
  /** Points in the batch. */
  rows: number;
  /**
   * The batch's line of the INSERT (see batchLine), made when it is queued. The writer keeps only
   * this (~50 bytes a point) of the batch, not its arrays.
   */
  line: string;
  resolve: (result: LogPointsResult) => void;
  reject: (err: unknown) => void;
}

/** A failed INSERT: its error, and whether it is known to have ended on the server. */
class InsertFailure {
  constructor(
    readonly cause: unknown,
    readonly ended: boolean,
  ) {}
}

/** An exception ClickHouse sent back (over HTTP a ClickHouseError with its code; the embedded engine's say "Code: N." ). */
function isServerException(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return (typeof code === "string" && /^\d+$/.test(code)) || /^Code: \d+\./.test((err as Error)?.message ?? "");
}

/**
 * The INSERT every group commit runs: one JSON line per caller's batch, `[run_id, batch_id, keys,
 * steps, timestamps, values]`, expanded into rows by ARRAY JOIN. The run and batch ids travel
 * once per batch instead of once per point, and each batch's validated arrays are serialized as
 * they are (no per-point copying in JS). Against the earlier one-JSON-array-per-column body
 * (JSONCompactColumns with the ids repeated on every row), the engine parses about 40 % less
 * text: 32,000-point groups went from about 205 to about 165 ms on the embedded engine.
 *
 * The data rides in a string literal of the query (chdb's connection turns any INSERT body into
 * SQL text, and `input()` inserts nothing there), so `max_query_size` is raised per INSERT (see
 * MetricWriter.sizeSettings). Plain SQL, so it runs unchanged over HTTP, where the user needs the
 * CREATE TEMPORARY TABLE grant that ClickHouse asks of `format()`. On a single node an INSERT ...
 * SELECT of at most `maxRows` rows is squashed into one block, i.e. one part, as before: a batch
 * is stored whole or not at all.
 */
const INSERT_HEAD =
  "INSERT INTO metrics (run_id, batch_id, key, step, ts, value)\n" +
  "SELECT run_id, batch_id, key, step, ts, value\n" +
  "FROM format(JSONCompactEachRow, 'run_id String, batch_id String, keys Array(String), steps Array(Int64), " +
  "timestamps Array(DateTime64(3, \\'UTC\\')), vals Array(Float64)', '";
const INSERT_TAIL = "')\nARRAY JOIN keys AS key, steps AS step, timestamps AS ts, vals AS value";

/**
 * One batch's line of the INSERT's data literal (the caller's arrays are validated and of equal
 * length). Made when the batch is queued rather than when its group is flushed: serializing a
 * 32,000-point group took ~19 ms of the server's main thread between two INSERTs, with the engine
 * idle; spread over the calls as they arrive, most of it overlaps the previous INSERT or the
 * wait for the rest of the group.
 *
 * Steps and timestamps are joined rather than passed to JSON.stringify: for integers beyond 2^31
 * (epoch milliseconds) `join` is ~4x faster and writes the same text. Values stay with
 * JSON.stringify, which is faster for fractions. Only the strings can need the literal's escapes;
 * numbers never hold a backslash or a quote.
 */
export function batchLine(runId: string, batchId: string, c: MetricColumns): string {
  const strings = `${JSON.stringify([runId, batchId]).slice(0, -1)},${JSON.stringify(c.keys)}`;
  return `${escapeForLiteral(strings)},[${c.steps.join(",")}],[${c.timestamps.join(",")}],${JSON.stringify(c.values)}]`;
}

/** A ClickHouse string literal escapes backslash and quote with a backslash; the JSON inside keeps its own escapes. */
function escapeForLiteral(text: string): string {
  return text.includes("\\") || text.includes("'") ? text.replace(/[\\']/g, "\\$&") : text;
}

/** The INSERT of these batches' lines (see batchLine). */
export function insertStatement(batches: readonly { line: string }[]): string {
  return `${INSERT_HEAD}${batches.map((b) => b.line).join("\n")}${INSERT_TAIL}`;
}

/** ClickHouse's defaults of the two settings an INSERT raises (see MetricWriter.sizeSettings). */
const DEFAULT_MAX_QUERY_SIZE = 262_144;
const DEFAULT_MAX_BLOCK_SIZE = 65_409;

/** The longest a group waits for callers expected back (see MetricWriter.gather). */
const MAX_GATHER_MS = 50;

/**
 * Which of a group's (run, idempotency key) pairs are already stored. The primary key narrows the
 * read to the runs' granules and the bloom filter on batch_id skips those without the key.
 */
const EXISTING_BATCHES_SQL =
  "SELECT DISTINCT run_id, batch_id FROM metrics\n" +
  "WHERE run_id IN {runs:Array(String)} AND batch_id IN {batches:Array(String)}";

/**
 * Group-commit writer. Calls arriving together share one INSERT, and each caller's promise settles
 * only when that INSERT has returned, i.e. its rows are stored and readable (rejecting with the
 * INSERT's error otherwise). One group is in flight at a time; calls that arrive meanwhile form
 * the next group, which also waits briefly for the callers just answered (see {@link gather}).
 *
 * Idempotency: a batch logged with an idempotency key carries it as `batch_id` on every row, in
 * the same part as its points (one INSERT is one part), so a batch is either stored with its key
 * or not at all, even across a crash. Before each INSERT the group's keys are looked up in one
 * query and batches already stored are answered `deduplicated` without writing, so a client retry
 * after a lost answer stores the points once. Concurrent calls with the
 * same (run, key) in this process share one promise.
 *
 * Residual race (across processes only): two API replicas that receive the same retry at the same
 * moment can both pass the lookup before either INSERT lands, and then both store the batch.
 * ClickHouse has no conditional insert; its block-level `insert_deduplication_token` cannot help
 * because a group mixes many callers' batches into one block. Readers that must be exact can
 * `LIMIT 1 BY` step within a batch; in practice a client retries one replica after a timeout,
 * long after the first INSERT finished, which the lookup catches.
 */
export class MetricWriter {
  private readonly windowMs: number;
  private readonly maxRows: number;
  private readonly maxQueuedRows: number;
  private queue: PendingBatch[] = [];
  private queuedRows = 0;
  private flushing: Promise<void> | undefined;
  /** Rows of the last INSERT: its callers, once answered, usually send their next batch at once. */
  private lastGroupRows = 0;
  /** How long the last INSERT took: bounds how long a group waits for callers to come back. */
  private lastInsertMs = 0;
  /** Rows queued by other callers when the last group's callers were answered, and when that was. */
  private queuedWhenAnswered = 0;
  private answeredAt = -Infinity;
  /** While a group gathers: the queued rows it waits for, and how to stop waiting. */
  private gathering: { target: number; done: () => void } | undefined;
  private readonly inFlight = new Map<string, Promise<LogPointsResult>>();
  private closed = false;

  constructor(
    private readonly client: ClickHouseClient,
    private readonly insertSettings: ClickHouseSettings,
    private readonly onQuery: (kind: QueryKind, sql: string) => void,
    options: GroupCommitOptions = {},
    private readonly recovery?: InsertRecovery,
  ) {
    this.windowMs = options.windowMs ?? 3;
    this.maxRows = options.maxRows ?? 100_000;
    this.maxQueuedRows = options.maxQueuedRows ?? 2_000_000;
    // At most 1,000,000 rows: ClickHouse squashes an INSERT ... SELECT into one block (one part)
    // up to min_insert_block_size_rows (1,048,449), and a group must be stored whole.
    if (!(this.windowMs >= 0) || !(this.maxRows >= 1 && this.maxRows <= 1_000_000)) {
      throw new DomainError("BAD_USER_INPUT", "groupCommit: windowMs must be >= 0 and maxRows between 1 and 1,000,000");
    }
  }

  /** Queues validated points; resolves once they are stored (or found already stored). */
  write(runId: string, columns: MetricColumns, idempotencyKey?: string): Promise<LogPointsResult> {
    if (this.closed) return Promise.reject(new DomainError("UNAVAILABLE", "the metric store is closed"));
    if (idempotencyKey !== undefined) {
      const dedupeKey = `${runId}\u0000${idempotencyKey}`;
      const pending = this.inFlight.get(dedupeKey);
      // Same key already in flight here: this call's points are the same batch, stored once.
      if (pending) return pending.then(() => ({ stored: 0, deduplicated: true }));
      const promise = this.enqueue(runId, idempotencyKey, columns);
      this.inFlight.set(dedupeKey, promise);
      const forget = () => this.inFlight.delete(dedupeKey);
      promise.then(forget, forget);
      return promise;
    }
    return this.enqueue(runId, "", columns);
  }

  private enqueue(runId: string, batchId: string, columns: MetricColumns): Promise<LogPointsResult> {
    if (columns.keys.length === 0) return Promise.resolve({ stored: 0, deduplicated: false });
    if (this.queuedRows > 0 && this.queuedRows + columns.keys.length > this.maxQueuedRows) {
      return Promise.reject(
        new DomainError("UNAVAILABLE", `the metric store is behind (${this.queuedRows} points waiting to be stored); retry shortly`),
      );
    }
    return new Promise<LogPointsResult>((resolve, reject) => {
      this.queue.push({ runId, batchId, rows: columns.keys.length, line: batchLine(runId, batchId, columns), resolve, reject });
      this.queuedRows += columns.keys.length;
      if (this.gathering && this.queuedRows >= this.gathering.target) this.gathering.done();
      this.startFlush(); // a no-op while a flush runs: it picks the queue up
    });
  }

  private startFlush(): void {
    if (this.flushing || this.queue.length === 0) return;
    this.flushing = this.drain().finally(() => {
      this.flushing = undefined;
      // A call may have queued between the loop's last check and here; it has waited already.
      if (this.queue.length > 0) this.startFlush();
    });
  }

  private async drain(): Promise<void> {
    // The callers of the last INSERT, unless it was answered long ago: a call after a pause is not
    // held back for clients that have stopped.
    let expected = performance.now() - this.answeredAt <= this.lastInsertMs + MAX_GATHER_MS ? this.lastGroupRows : 0;
    while (this.queue.length > 0) {
      await this.gather(expected);
      const group: PendingBatch[] = [];
      let rows = 0;
      // Whole batches only: a caller's points go in one INSERT, so they are stored all or none.
      while (this.queue.length > 0 && (group.length === 0 || rows + this.queue[0].rows <= this.maxRows)) {
        const next = this.queue.shift()!;
        rows += next.rows;
        group.push(next);
      }
      this.queuedRows -= rows;
      const started = performance.now();
      const stored = await this.commit(group);
      this.lastInsertMs = performance.now() - started;
      // The next group: what queued while it ran, plus the callers just answered (not those just
      // refused: they are handling an error, or backing off before a retry).
      this.lastGroupRows = stored ? rows : 0;
      expected = this.queuedWhenAnswered + this.lastGroupRows;
    }
  }

  /**
   * Lets a group gather before its INSERT. Each INSERT has a fixed cost (on the embedded engine one
   * part each for the raw points and the two views, the views' written side by side; 3-25 ms a
   * part depending on how fast the disk creates files), so few large INSERTs store more points per
   * second than many small ones. Clients that log batch after batch come back as soon as they are
   * answered: without waiting for them, 32 such clients settle into two groups of 16 that take
   * turns, paying the fixed cost twice per round. So a group waits until the queue holds
   * `expected` rows (what queued meanwhile plus the callers of the last INSERT; for a lone client
   * logging in a loop that is its own next batch, flushed at once), at most as long as the last
   * INSERT took (capped at {@link MAX_GATHER_MS}, at least `windowMs`). With nobody expected, calls
   * arriving within `windowMs` of the first share the INSERT.
   */
  private gather(expected: number): Promise<void> {
    const target = Math.min(this.maxRows, expected);
    if (this.closed || this.queuedRows >= this.maxRows || (target > 0 && this.queuedRows >= target)) return Promise.resolve();
    const waitMs = target > 0 ? Math.max(this.windowMs, Math.min(this.lastInsertMs, MAX_GATHER_MS)) : this.windowMs;
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.gathering = undefined;
        resolve();
      };
      const timer = setTimeout(done, waitMs);
      this.gathering = { target: target > 0 ? target : this.maxRows, done };
    });
  }

  /** Stores a group and answers its callers; false when they were refused (the INSERT failed). */
  private async commit(group: PendingBatch[]): Promise<boolean> {
    let toWrite = group;
    try {
      const keyed = group.filter((b) => b.batchId !== "");
      if (keyed.length > 0) {
        const existing = await this.existingBatches(keyed);
        if (existing.size > 0) {
          toWrite = [];
          for (const b of group) {
            if (b.batchId !== "" && existing.has(`${b.runId}\u0000${b.batchId}`)) b.resolve({ stored: 0, deduplicated: true });
            else toWrite.push(b);
          }
        }
      }
      if (toWrite.length > 0) await this.journaledInsert(toWrite);
    } catch (err) {
      this.noteAnswered();
      for (const b of toWrite) b.reject(err);
      return false;
    }
    this.noteAnswered();
    for (const b of toWrite) b.resolve({ stored: b.rows, deduplicated: false });
    return true;
  }

  /** Taken before answers go out: an answered caller may send its next batch before drain() resumes. */
  private noteAnswered(): void {
    this.queuedWhenAnswered = this.queuedRows;
    this.answeredAt = performance.now();
  }

  /**
   * The INSERT, with its runs journaled while it runs. When it fails, its raw part may have been
   * stored without the views' parts: once the INSERT is known to have ended, the runs' derived rows
   * are repaired before the callers hear of the failure (their retry will be answered "already
   * stored" if the raw part landed).
   */
  private async journaledInsert(group: PendingBatch[]): Promise<void> {
    const recovery = this.recovery;
    if (!recovery) {
      await this.insert(group).catch((failure: InsertFailure) => {
        throw failure.cause;
      });
      return;
    }
    const runs = [...new Set(group.map((b) => b.runId))];
    recovery.journal.begin(runs);
    const failure = await this.insert(group).then(
      () => null,
      (f: InsertFailure) => f,
    );
    if (failure) {
      // Repaired only once the INSERT is known to have ended: a repair beside an INSERT still
      // running would count its rows twice. Unknown (the server could not be asked): left to the
      // next start, when nothing runs.
      if (failure.ended) await this.repair(runs);
      else {
        recovery.journal.keepUntilRestart(runs);
        recovery.onRepairFailed?.(new Error("could not confirm the failed INSERT ended; its runs are repaired at the next start"), runs);
        recovery.journal.end();
      }
      throw failure.cause;
    }
    // Runs whose earlier repair failed, retried between groups (nothing of this process is being
    // inserted then) with backoff, so a repair that keeps failing does not slow every INSERT.
    if (recovery.journal.pending.length > 0 && Date.now() >= this.nextRepairAt) await this.repair(recovery.journal.pending);
    recovery.journal.end();
  }

  private nextRepairAt = 0;
  private repairBackoffMs = 1000;

  private async repair(runIds: string[]): Promise<void> {
    const recovery = this.recovery!;
    try {
      await recovery.repair(runIds);
      recovery.journal.repaired(runIds);
      this.repairBackoffMs = 1000;
    } catch (err) {
      recovery.journal.keep(runIds);
      recovery.onRepairFailed?.(err, runIds);
      this.nextRepairAt = Date.now() + this.repairBackoffMs;
      this.repairBackoffMs = Math.min(this.repairBackoffMs * 2, 300_000);
    }
    recovery.journal.end();
  }

  private async existingBatches(keyed: PendingBatch[]): Promise<Set<string>> {
    this.onQuery("query", EXISTING_BATCHES_SQL);
    const rs = await this.client.query({
      query: EXISTING_BATCHES_SQL,
      format: "JSONCompactEachRow",
      query_params: {
        runs: [...new Set(keyed.map((b) => b.runId))],
        batches: [...new Set(keyed.map((b) => b.batchId))],
      },
    });
    const rows = await rs.json<[string, string]>();
    return new Set(rows.map(([runId, batchId]) => `${runId}\u0000${batchId}`));
  }

  /**
   * Per INSERT: `max_query_size` so the parser accepts the data literal (a setting of the request,
   * not the query's own SETTINGS clause, which a ClickHouse server applies only after parsing), and
   * `max_block_size` at least the group's rows, so ARRAY JOIN never cuts a caller's batch across
   * blocks: where blocks are not squashed into one part (inserts through a Distributed table), a
   * batch still lands whole in one part.
   */
  private sizeSettings(query: string): ClickHouseSettings {
    // In bytes: a UTF-16 unit is at most 3 UTF-8 bytes. Never below the defaults: chdb's connection
    // applies settings with SET, which lasts for its session, i.e. for every later query too.
    return {
      max_query_size: String(Math.max(DEFAULT_MAX_QUERY_SIZE, 3 * query.length)),
      max_block_size: String(Math.max(DEFAULT_MAX_BLOCK_SIZE, this.maxRows)),
    };
  }

  /** Rejects with an {@link InsertFailure}: the error, and whether the INSERT is known to have ended. */
  private async insert(group: PendingBatch[]): Promise<void> {
    const query = insertStatement(group);
    this.onQuery("insert", INSERT_HEAD);
    const queryId = crypto.randomUUID();
    try {
      await this.client.command({
        query,
        clickhouse_settings: { ...this.insertSettings, ...this.sizeSettings(query) },
        query_id: queryId,
      });
    } catch (err) {
      // An exception the server sent back ended the query. Anything else (a timeout, a dropped
      // connection) may have left the INSERT running: a retry looked up before it lands would
      // store the batches again, and a repair beside it would count it twice. Answer only once it
      // is known to have ended, or say that it is not known.
      const ended = isServerException(err) || (await this.untilQueryEnded(queryId));
      throw new InsertFailure(err, ended);
    }
  }

  /** True once the server lists no query with this id (within 2 minutes); false when it cannot tell. */
  private async untilQueryEnded(queryId: string): Promise<boolean> {
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      try {
        const rs = await this.client.query({ query: "SELECT count() AS n FROM system.processes WHERE query_id = {id:String}", query_params: { id: queryId }, format: "JSONEachRow" });
        if (Number((await rs.json<{ n: number | string }>())[0]?.n ?? 0) === 0) return true;
      } catch {
        return false;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    return false;
  }

  /** Flushes what is queued, then refuses new writes. */
  async close(): Promise<void> {
    this.closed = true;
    this.gathering?.done();
    this.startFlush();
    while (this.flushing) await this.flushing;
  }
}
