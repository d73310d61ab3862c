import { entityFromRow, rows as sqlRows } from "./sql.js";
import crypto from "node:crypto";
import os from "node:os";
import type { DataSource, EntityManager } from "typeorm";
import type { Logger } from "pino";
import type { Config } from "../config.js";
import type { EventBus } from "../stores/event-bus/event-bus.js";
import { Executor, ExecutorStatus, type Gpu } from "../entities/executor.entity.js";
import { TaskRun, TaskRunStatus } from "../entities/task-run.entity.js";
import { PipelineRunStatus } from "../entities/pipeline-run.entity.js";
import type { RequestContext } from "../services/context.js";
import { DomainError } from "../services/errors.js";
import { LIMITS, validateId, validateText } from "../services/validation.js";
import { mintSecret } from "../services/tokens.service.js";
import { allocateGpus } from "../executors/gpu-detection.js";
import { resolveTaskInvocation, type JsonValue, type ParamValue } from "./spec/index.js";
import { decideRetry, type FailureKind } from "./retry-policy.js";
import { PendingEvents, pipelineTopics, type TaskLogEvent } from "./pipeline-events.js";
import { QueueNotifier } from "./queue-notifier.js";
import { SpecCache } from "./spec-cache.js";

/** How an attempt ended, as the executor reports it (plus EXECUTOR_LOST, decided by the reaper). */
export type AttemptOutcome = "SUCCEEDED" | FailureKind;

export interface RegisterExecutorArgs {
  name?: string | null;
  pool: string;
  labels?: Record<string, unknown> | null;
  cpu: number;
  memoryMb: number;
  gpus?: { index: number; model?: string | null; memoryMb?: number | null }[] | null;
}

export interface TaskAssignmentView {
  taskRun: TaskRun;
  leaseToken: string;
  leaseExpiresAt: Date;
  command: string[];
  operator: string;
  env: Record<string, string>;
  gpus: number[];
  runId: string;
  checkpoint: CheckpointView | null;
  timeoutSeconds: number;
}

export interface CheckpointView {
  data: unknown;
  attempt: number;
  updatedAt: Date;
}

/** Called after a pipeline run reached SUCCEEDED (outside the transaction): on_success actions. */
export type PipelineSucceededHook = (pipelineRunId: string) => Promise<void>;

/** Finishing transaction hook: side effects that must commit with the final status (webhook outbox). */
export type PipelineFinishedTxHook = (em: EntityManager, pipelineRunId: string, status: PipelineRunStatus) => Promise<void>;

const LIVE = `('CLAIMED','RUNNING')`;
const POOL_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;
const MAX_WAIT_SECONDS = 60;
const MAX_LOG_LINE = 16_000;
const MAX_LOG_LINES_PER_CALL = 5_000;
const MAX_CHECKPOINT_BYTES = 256 * 1024;

/** Internal row shape of a task run read with FOR UPDATE. */
interface TaskRow {
  id: string;
  pipeline_run_id: string;
  task_id: string;
  status: TaskRunStatus;
  attempt: number;
  max_attempts: number;
  retry_backoff_seconds: number;
  pool: string;
  lease_token: string | null;
  run_id: string | null;
  token_id: string | null;
  cancel_requested: boolean;
}

export function validatePool(pool: unknown, field: string): string {
  if (typeof pool !== "string" || !POOL_PATTERN.test(pool)) {
    throw new DomainError("BAD_USER_INPUT", `${field}: a pool name is 1–100 of [A-Za-z0-9_.-], starting with a letter or digit`, field);
  }
  return pool;
}

function isRetryableTxError(err: unknown): boolean {
  const code = (err as { code?: string; driverError?: { code?: string } })?.code ?? (err as { driverError?: { code?: string } })?.driverError?.code;
  return code === "40P01" || code === "40001";
}

/** A transaction retried on deadlock/serialization failures (different lock orders can meet under load). */
export async function inTransaction<T>(db: DataSource, fn: (em: EntityManager) => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await db.transaction(fn);
    } catch (err) {
      if (attempt >= 5 || !isRetryableTxError(err)) throw err;
      await new Promise((r) => setTimeout(r, Math.random() * 10 * 2 ** attempt));
    }
  }
}

function paramText(value: JsonValue): string {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > LIMITS.paramValueLength ? text.slice(0, LIMITS.paramValueLength) : text;
}

/** Environment-variable-safe form of a param name: `lr` → `MLGRAPH_PARAM_LR`. */
export function paramEnvName(name: string): string {
  return `MLGRAPH_PARAM_${name.toUpperCase().replace(/[^A-Z0-9_]/g, "_")}`;
}

/**
 * The task queue in PostgreSQL: executors, claims with `FOR UPDATE SKIP LOCKED` and resource fit,
 * leases, heartbeats, completion with dependency release in the same transaction, and logs.
 */
export class TaskQueue {
  readonly notifier: QueueNotifier;
  readonly specs: SpecCache;
  private readonly executorPools = new Map<string, string>();
  /** Set by the container: on_success actions (register_model). */
  onPipelineSucceeded: PipelineSucceededHook | null = null;
  /** Set by the container when a webhook outbox exists. */
  onPipelineFinishedTx: PipelineFinishedTxHook | null = null;
  /** Set by the container: after a finishing transaction committed (wakes the webhook dispatcher). */
  onPipelinesFinished: ((pipelineRunIds: string[]) => Promise<void>) | null = null;

  constructor(
    private readonly db: DataSource,
    private readonly bus: EventBus,
    private readonly config: Config,
    private readonly log: Logger,
  ) {
    this.notifier = new QueueNotifier(bus);
    this.specs = new SpecCache(db);
  }

  // ---------------------------------------------------------------- executors

  async registerExecutor(ctx: RequestContext, input: RegisterExecutorArgs): Promise<Executor> {
    const pool = validatePool(input.pool, "input.pool");
    this.assertPoolScope(ctx, pool, "input.pool");
    const name = input.name == null ? os.hostname() : validateText(input.name, "input.name", LIMITS.nameLength);
    if (!(typeof input.cpu === "number" && Number.isFinite(input.cpu) && input.cpu > 0 && input.cpu <= 100_000)) {
      throw new DomainError("BAD_USER_INPUT", "input.cpu: must be a positive number of cores", "input.cpu");
    }
    if (!Number.isInteger(input.memoryMb) || input.memoryMb <= 0) {
      throw new DomainError("BAD_USER_INPUT", "input.memoryMb: must be a positive integer (MiB)", "input.memoryMb");
    }
    const labels: Record<string, string> = {};
    if (input.labels != null) {
      if (typeof input.labels !== "object" || Array.isArray(input.labels)) throw new DomainError("BAD_USER_INPUT", "input.labels: must be an object", "input.labels");
      for (const [k, v] of Object.entries(input.labels)) {
        if (typeof v !== "string" || k.length > 250 || v.length > 1000) {
          throw new DomainError("BAD_USER_INPUT", `input.labels.${k}: label values are strings of at most 1,000 characters`, `input.labels.${k}`);
        }
        labels[k] = v;
      }
    }
    const gpus: Gpu[] = [];
    const seen = new Set<number>();
    (input.gpus ?? []).forEach((g, i) => {
      if (!Number.isInteger(g.index) || g.index < 0 || g.index > 1023) {
        throw new DomainError("BAD_USER_INPUT", `input.gpus[${i}].index: must be an integer from 0 to 1023`, `input.gpus[${i}].index`);
      }
      if (seen.has(g.index)) throw new DomainError("BAD_USER_INPUT", `input.gpus[${i}].index: GPU ${g.index} is listed twice`, `input.gpus[${i}].index`);
      seen.add(g.index);
      gpus.push({ index: g.index, model: g.model ? validateText(g.model, `input.gpus[${i}].model`, 200) : "unknown", memoryMb: g.memoryMb ?? null });
    });
    const repo = this.db.getRepository(Executor);
    return repo.save(
      repo.create({ name, pool, labels, cpu: input.cpu, memoryMb: input.memoryMb, gpus, status: ExecutorStatus.ONLINE, registeredBy: ctx.principal.name, lastSeenAt: new Date() }),
    );
  }

  /** Executor tokens are scoped to one pool: they may register and claim only there. */
  private assertPoolScope(ctx: RequestContext, pool: string, field: string): void {
    if (ctx.principal.role === "executor" && ctx.principal.scope.pool && ctx.principal.scope.pool !== pool) {
      throw new DomainError("FORBIDDEN", `${field}: this executor token may only serve pool ${JSON.stringify(ctx.principal.scope.pool)}`, field);
    }
  }

  /**
   * The executor's pool, checked against the caller's scope. Pools never change after
   * registration and executors are never deleted, so the answer is cached: claims are the hottest
   * path of the queue and this saves each of them a round trip.
   */
  private async executorPool(ctx: RequestContext, executorId: string, field: string): Promise<string> {
    validateId(executorId, field);
    let pool = this.executorPools.get(executorId);
    if (pool === undefined) {
      const found: { pool: string }[] = await sqlRows(this.db, "SELECT pool FROM executors WHERE id = $1", [executorId]);
      if (!found[0]) throw new DomainError("NOT_FOUND", `${field}: executor ${JSON.stringify(executorId)} not found`, field);
      pool = found[0].pool;
      if (this.executorPools.size >= 10_000) this.executorPools.clear();
      this.executorPools.set(executorId, pool);
    }
    this.assertPoolScope(ctx, pool, field);
    return pool;
  }

  // ---------------------------------------------------------------- claims

  /**
   * Long-poll claim: returns a task that fits the executor's free resources as soon as one is
   * queued in its pool (woken by an event-bus notification, not a timer), or null after
   * `waitSeconds`.
   */
  async claim(ctx: RequestContext, executorId: string, waitSeconds?: number | null): Promise<TaskAssignmentView | null> {
    const wait = waitSeconds ?? 0;
    if (!Number.isInteger(wait) || wait < 0 || wait > MAX_WAIT_SECONDS) {
      throw new DomainError("BAD_USER_INPUT", `waitSeconds: must be an integer from 0 to ${MAX_WAIT_SECONDS}`, "waitSeconds");
    }
    const pool = await this.executorPool(ctx, executorId, "executorId");
    const deadline = Date.now() + wait * 1000;
    for (;;) {
      const waiter = await this.notifier.register(pool);
      try {
        const assignment = await this.tryClaim(executorId);
        if (assignment) return assignment;
        const remaining = deadline - Date.now();
        if (remaining <= 0 || this.notifier.isClosed) return null;
        await waiter.wait(remaining);
      } finally {
        waiter.dispose();
      }
    }
  }

  /**
   * One claim attempt: the best queued task that fits, claimed in one transaction, or null.
   * The transaction also opens the attempt's tracking run (params, tags) and mints its task-scoped
   * token, so a claim is five statements whatever the task.
   */
  async tryClaim(executorId: string): Promise<TaskAssignmentView | null> {
    const leaseToken = crypto.randomBytes(24).toString("base64url");
    const taskToken = mintSecret();
    const events = new PendingEvents();
    const claimed = await inTransaction(this.db, async (em) => {
      // Locking the executor row serialises this executor's concurrent claims, so two of them
      // never see the same GPUs (or CPU) as free. The usage is read by the next statement, whose
      // snapshot is taken after the lock was granted (it must not share the UPDATE's snapshot).
      const executors: { pool: string; cpu: number; memory_mb: number; gpus: Gpu[] }[] = await sqlRows(em,
        `UPDATE executors SET last_seen_at = now(), status = 'ONLINE' WHERE id = $1 RETURNING pool, cpu, memory_mb, gpus`,
        [executorId],
      );
      const executor = executors[0];
      if (!executor) throw new DomainError("NOT_FOUND", `executorId: executor ${JSON.stringify(executorId)} not found`, "executorId");
      const usage: { cpu: number; memory_mb: number; gpus: number[] | null }[] = await sqlRows(em,
        `SELECT coalesce(sum(cpu), 0)::float8 AS cpu, coalesce(sum(memory_mb), 0)::int AS memory_mb,
                (SELECT array_agg(g) FROM task_runs t2, unnest(t2.assigned_gpus) g WHERE t2.executor_id = $1 AND t2.status IN ${LIVE}) AS gpus
           FROM task_runs WHERE executor_id = $1 AND status IN ${LIVE}`,
        [executorId],
      );
      const used = new Set(usage[0]?.gpus ?? []);
      const freeGpus = executor.gpus.filter((g) => !used.has(g.index));
      const freeTypes = [...new Set(freeGpus.map((g) => normalizeGpuType(g.model)))];
      const freeCpu = executor.cpu - Number(usage[0]?.cpu ?? 0);
      const freeMemory = executor.memory_mb - Number(usage[0]?.memory_mb ?? 0);
      const candidates: {
        id: string;
        pipeline_run_id: string;
        task_id: string;
        attempt: number;
        gpus: number;
        gpu_type: string | null;
        timeout_seconds: number;
        checkpoint: unknown;
        checkpoint_at: Date | null;
        checkpoint_attempt: number | null;
        experiment_id: string;
        pipeline_version_id: string;
        run_params: Record<string, ParamValue>;
      }[] = await sqlRows(em,
        `SELECT t.id, t.pipeline_run_id, t.task_id, t.attempt, t.gpus, t.gpu_type, t.timeout_seconds, t.checkpoint, t.checkpoint_at, t.checkpoint_attempt,
                pr.experiment_id, pr.pipeline_version_id, pr.params AS run_params
           FROM task_runs t JOIN pipeline_runs pr ON pr.id = t.pipeline_run_id
          WHERE t.status = 'QUEUED' AND t.pool = $1 AND t.cpu <= $2 AND t.memory_mb <= $3 AND t.gpus <= $4
            AND (t.gpus = 0 OR t.gpu_type IS NULL OR t.gpu_type = ANY($5::text[]))
          ORDER BY t.priority DESC, t.queued_at, t.id
          LIMIT 1
          FOR UPDATE OF t SKIP LOCKED`,
        [executor.pool, freeCpu + 1e-9, freeMemory, freeGpus.length, freeTypes],
      );
      const task = candidates[0];
      if (!task) return null;
      const eligible = task.gpu_type ? freeGpus.filter((g) => normalizeGpuType(g.model) === task.gpu_type) : freeGpus;
      const gpus = allocateGpus(
        eligible.map((g) => g.index),
        task.gpus,
      );
      if (gpus === null) return null; // only possible with mixed GPU types; the next claim looks again
      const { spec, tasks } = await this.specs.get(task.pipeline_version_id, em);
      const invocation = resolveTaskInvocation(tasks.get(task.task_id)!, task.run_params);
      const paramEntries = Object.entries(invocation.params).map(([k, v]) => [k, paramText(v)] as const);
      const tags: [string, string][] = [
        ["mlgraph.pipeline", spec.pipeline.name],
        ["mlgraph.pipelineRunId", task.pipeline_run_id],
        ["mlgraph.taskId", task.task_id],
        ["mlgraph.taskRunId", task.id],
        ["mlgraph.attempt", String(task.attempt)],
      ];
      // The task-scoped credential the task's code logs with (tok) is revoked when the attempt ends.
      const rows: Record<string, unknown>[] = await sqlRows(em,
        `WITH r AS (
           INSERT INTO runs (experiment_id, name, status, start_time) VALUES ($1, $2, 'RUNNING', now()) RETURNING id
         ), p AS (
           INSERT INTO run_params (run_id, key, value) SELECT r.id, u.k, u.v FROM r, unnest($3::text[], $4::text[]) AS u(k, v)
         ), tg AS (
           INSERT INTO run_tags (run_id, key, value) SELECT r.id, u.k, u.v FROM r, unnest($5::text[], $6::text[]) AS u(k, v)
         ), tok AS (
           INSERT INTO api_tokens (name, role, token_hash, prefix, scope, created_by)
           SELECT $13, 'task', $14, $15, jsonb_build_object('taskRunId', $11::uuid::text, 'runId', r.id::text), 'system' FROM r
           RETURNING id
         ), t AS (
           UPDATE task_runs SET status = 'CLAIMED', executor_id = $7, assigned_gpus = $8::int[], lease_token = $9,
                  lease_expires_at = now() + $10 * interval '1 second', run_id = (SELECT id FROM r), token_id = (SELECT id FROM tok),
                  claimed_at = now(), started_at = NULL, exit_code = NULL
            WHERE id = $11 RETURNING *
         ), a AS (
           INSERT INTO task_attempts (task_run_id, attempt, run_id, executor_id, assigned_gpus)
           SELECT $11, t.attempt, r.id, $7, $8::int[] FROM t, r
         ), pr AS (
           UPDATE pipeline_runs SET status = 'RUNNING', started_at = now() WHERE id = $12 AND status = 'QUEUED' RETURNING id
         )
         SELECT t.*, (SELECT count(*) FROM pr) AS pipeline_run_started FROM t`,
        [
          task.experiment_id,
          `${task.task_id} #${task.attempt}`,
          paramEntries.map((e) => e[0]),
          paramEntries.map((e) => e[1]),
          tags.map((t) => t[0]),
          tags.map((t) => t[1]),
          executorId,
          gpus,
          leaseToken,
          this.config.leaseSeconds,
          task.id,
          task.pipeline_run_id,
          `task ${task.task_id} #${task.attempt}`.slice(0, LIMITS.nameLength),
          taskToken.tokenHash,
          taskToken.prefix,
        ],
      );
      const row = rows[0]!;
      events.task(task.pipeline_run_id, task.id);
      if (Number(row.pipeline_run_started) > 0) events.pipelineRuns.add(task.pipeline_run_id);
      return { task, gpus, invocation, row, operator: tasks.get(task.task_id)!.operator };
    });
    if (!claimed) return null;
    await events.publish(this.bus);
    const { task, gpus, invocation, row } = claimed;
    const taskRun = entityFromRow(this.db, TaskRun, row);
    const runId = taskRun.runId!;
    const checkpoint: CheckpointView | null =
      task.checkpoint_at && task.checkpoint !== null ? { data: task.checkpoint, attempt: task.checkpoint_attempt ?? 0, updatedAt: new Date(task.checkpoint_at) } : null;
    const env: Record<string, string> = {
      ...invocation.env,
      MLGRAPH_TOKEN: taskToken.secret,
      MLGRAPH_RUN_ID: runId,
      MLGRAPH_TASK_RUN_ID: task.id,
      MLGRAPH_PIPELINE_RUN_ID: task.pipeline_run_id,
      MLGRAPH_TASK_ID: task.task_id,
      MLGRAPH_ATTEMPT: String(task.attempt),
      MLGRAPH_CHECKPOINT: checkpoint ? JSON.stringify(checkpoint.data) : "",
      // Empty for CPU tasks: hides every GPU rather than exposing all of them.
      CUDA_VISIBLE_DEVICES: gpus.join(","),
      MLGRAPH_PARAMS: JSON.stringify(invocation.params),
    };
    for (const [k, v] of Object.entries(invocation.params)) env[paramEnvName(k)] = typeof v === "string" ? v : JSON.stringify(v);
    return {
      taskRun,
      leaseToken,
      leaseExpiresAt: new Date(taskRun.leaseExpiresAt!),
      command: invocation.argv,
      operator: claimed.operator,
      env,
      gpus,
      runId,
      checkpoint,
      timeoutSeconds: task.timeout_seconds,
    };
  }

  // ---------------------------------------------------------------- heartbeats, logs

  /** Extends the lease, stores a checkpoint, and says whether cancellation was requested. */
  async heartbeat(
    _ctx: RequestContext,
    input: { taskRunId: string; leaseToken: string; checkpoint?: unknown },
  ): Promise<{ cancelRequested: boolean; leaseExpiresAt: Date; taskRun: TaskRun }> {
    validateId(input.taskRunId, "input.taskRunId");
    validateText(input.leaseToken, "input.leaseToken", 200);
    const hasCheckpoint = input.checkpoint !== undefined && input.checkpoint !== null;
    if (hasCheckpoint && Buffer.byteLength(JSON.stringify(input.checkpoint)) > MAX_CHECKPOINT_BYTES) {
      throw new DomainError("BAD_USER_INPUT", `input.checkpoint: larger than ${MAX_CHECKPOINT_BYTES} bytes; store large state as an artifact and checkpoint its path`, "input.checkpoint");
    }
    const rows: { cancel_requested: boolean; lease_expires_at: Date; pipeline_run_id: string; was: string; executor_id: string }[] = await sqlRows(this.db, 
      `WITH old AS (SELECT status FROM task_runs WHERE id = $1 AND lease_token = $2 AND status IN ${LIVE} FOR UPDATE)
       UPDATE task_runs SET lease_expires_at = now() + $3 * interval '1 second', status = 'RUNNING',
              started_at = coalesce(started_at, now()),
              checkpoint = CASE WHEN $4 THEN $5::jsonb ELSE checkpoint END,
              checkpoint_at = CASE WHEN $4 THEN now() ELSE checkpoint_at END,
              checkpoint_attempt = CASE WHEN $4 THEN attempt ELSE checkpoint_attempt END
        WHERE id = $1 AND EXISTS (SELECT 1 FROM old)
        RETURNING cancel_requested, lease_expires_at, pipeline_run_id, (SELECT status FROM old) AS was, executor_id`,
      [input.taskRunId, input.leaseToken, this.config.leaseSeconds, hasCheckpoint, hasCheckpoint ? JSON.stringify(input.checkpoint) : null],
    );
    const row = rows[0];
    if (!row) throw await this.staleLease(input.taskRunId, "input.leaseToken");
    // Heartbeats also say the executor is alive; throttled so they do not all rewrite its row.
    await sqlRows(this.db, `UPDATE executors SET last_seen_at = now(), status = 'ONLINE' WHERE id = $1 AND (last_seen_at < now() - interval '2 seconds' OR status <> 'ONLINE')`, [row.executor_id]);
    if (row.was === TaskRunStatus.CLAIMED || hasCheckpoint) {
      const events = new PendingEvents();
      events.task(row.pipeline_run_id, input.taskRunId);
      await events.publish(this.bus);
    }
    const taskRun = (await this.db.getRepository(TaskRun).findOneBy({ id: input.taskRunId }))!;
    return { cancelRequested: row.cancel_requested, leaseExpiresAt: new Date(row.lease_expires_at), taskRun };
  }

  private async staleLease(taskRunId: string, field: string): Promise<DomainError> {
    const exists = await this.db.getRepository(TaskRun).existsBy({ id: taskRunId });
    if (!exists) return new DomainError("NOT_FOUND", `taskRunId: task run ${JSON.stringify(taskRunId)} not found`, "taskRunId");
    return new DomainError("CONFLICT", `${field}: the lease is no longer valid (expired, or the attempt already ended); stop this attempt`, field);
  }

  /** Appends lines to a live attempt's log; numbered per task run, announced to `taskLogs` subscribers. */
  async appendLogs(_ctx: RequestContext, taskRunId: string, leaseToken: string, lines: string[]): Promise<boolean> {
    validateId(taskRunId, "taskRunId");
    validateText(leaseToken, "leaseToken", 200);
    if (lines.length > MAX_LOG_LINES_PER_CALL) throw new DomainError("BAD_USER_INPUT", `lines: at most ${MAX_LOG_LINES_PER_CALL} per call`, "lines");
    // NUL cannot be stored in text; very long lines are cut rather than refused (logs are best kept).
    const clean = lines.map((l) => (l.length > MAX_LOG_LINE ? `${l.slice(0, MAX_LOG_LINE)}…` : l).replace(/\u0000/g, ""));
    const rows: { start: number }[] = await sqlRows(this.db, 
      `WITH t AS (
         UPDATE task_runs SET log_lines = log_lines + $3 WHERE id = $1 AND lease_token = $2 AND status IN ${LIVE}
         RETURNING log_lines - $3 AS start, attempt
       ), ins AS (
         INSERT INTO task_logs (task_run_id, line_no, attempt, line)
         SELECT $1, t.start + u.ord - 1, t.attempt, u.line FROM t, unnest($4::text[]) WITH ORDINALITY AS u(line, ord)
       )
       SELECT start FROM t`,
      [taskRunId, leaseToken, clean.length, clean],
    );
    if (!rows[0]) throw await this.staleLease(taskRunId, "leaseToken");
    if (clean.length > 0) {
      await this.bus.publish(pipelineTopics.taskLogs(taskRunId), { taskRunId, fromLine: rows[0].start, lines: clean } satisfies TaskLogEvent);
    }
    return true;
  }

  // ---------------------------------------------------------------- completion

  /** Ends the live attempt; refused (CONFLICT) when the lease token is stale. */
  async complete(
    ctx: RequestContext,
    input: { taskRunId: string; leaseToken: string; outcome: AttemptOutcome; exitCode?: number | null; error?: string | null; checkpoint?: unknown },
  ): Promise<TaskRun> {
    validateId(input.taskRunId, "input.taskRunId");
    validateText(input.leaseToken, "input.leaseToken", 200);
    if (!["SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED"].includes(input.outcome)) {
      throw new DomainError("BAD_USER_INPUT", "input.outcome: expected SUCCEEDED, FAILED, TIMED_OUT or CANCELLED", "input.outcome");
    }
    const error = input.error == null ? null : input.error.slice(0, 10_000);
    const events = new PendingEvents();
    const effects = await inTransaction(this.db, async (em) => {
      const rows: TaskRow[] = await sqlRows(em, `SELECT * FROM task_runs WHERE id = $1 FOR UPDATE`, [input.taskRunId]);
      const row = rows[0];
      if (!row) throw new DomainError("NOT_FOUND", `input.taskRunId: task run ${JSON.stringify(input.taskRunId)} not found`, "input.taskRunId");
      if (row.lease_token !== input.leaseToken || (row.status !== TaskRunStatus.CLAIMED && row.status !== TaskRunStatus.RUNNING)) {
        throw new DomainError("CONFLICT", "input.leaseToken: the lease is no longer valid (expired, or the attempt already ended); the result is discarded", "input.leaseToken");
      }
      if (input.checkpoint !== undefined && input.checkpoint !== null) {
        await sqlRows(em, "UPDATE task_runs SET checkpoint = $2::jsonb, checkpoint_at = now(), checkpoint_attempt = attempt WHERE id = $1", [row.id, JSON.stringify(input.checkpoint)]);
      }
      return this.finishAttempt(em, row, input.outcome, { exitCode: input.exitCode ?? null, error }, events);
    });
    await this.afterFinish(ctx, effects, events);
    if (effects.taskRow) return entityFromRow(this.db, TaskRun, effects.taskRow);
    const after = await sqlRows(this.db, "SELECT * FROM task_runs WHERE id = $1", [input.taskRunId]);
    return entityFromRow(this.db, TaskRun, after[0]!);
  }

  /**
   * Ends the live attempt of a locked task row: ends its tracking run, then either succeeds
   * (releasing dependents in this same transaction), schedules a retry, or fails for good
   * (marking everything downstream UPSTREAM_FAILED), and advances the pipeline run's counters —
   * finishing the pipeline run when its last task is final. Used by completeTask and the reaper.
   */
  async finishAttempt(
    em: EntityManager,
    row: TaskRow,
    outcome: AttemptOutcome,
    details: { exitCode: number | null; error: string | null },
    events: PendingEvents,
  ): Promise<FinishEffects> {
    const effects: FinishEffects = { succeededPipelineRunId: null, taskRow: null };
    const runStatus = outcome === "SUCCEEDED" ? "FINISHED" : outcome === "CANCELLED" ? "KILLED" : "FAILED";
    // The attempt's tracking run ends, its record is closed and its task token is revoked, all
    // with the outcome (a NULL run or token id matches nothing).
    await sqlRows(em,
      `WITH r AS (
         UPDATE runs SET status = $5, end_time = now() WHERE id = $6 AND status = 'RUNNING'
       ), k AS (
         UPDATE api_tokens SET revoked_at = now() WHERE id = $7 AND revoked_at IS NULL
       )
       UPDATE task_attempts SET outcome = $3, error = $4, finished_at = now() WHERE task_run_id = $1 AND attempt = $2`,
      [row.id, row.attempt, outcome, details.error, runStatus, row.run_id, row.token_id],
    );
    events.task(row.pipeline_run_id, row.id);
    let done = 0;
    let failed = 0;
    if (outcome === "SUCCEEDED") {
      // Succeeds and releases its dependents in one statement (they are other rows of task_runs).
      const succeeded: (Record<string, unknown> & { released: { id: string; pool: string; status: string }[] })[] = await sqlRows(em,
        `WITH done AS (
           UPDATE task_runs SET status = 'SUCCEEDED', finished_at = now(), lease_token = NULL, lease_expires_at = NULL, exit_code = $2, error = NULL
            WHERE id = $1 RETURNING *
         ), rel AS (
           UPDATE task_runs t SET pending_deps = t.pending_deps - 1,
                  status = CASE WHEN t.pending_deps = 1 THEN 'QUEUED' ELSE t.status END,
                  queued_at = CASE WHEN t.pending_deps = 1 THEN now() ELSE t.queued_at END
             FROM task_run_edges e
            WHERE e.upstream_id = $1 AND t.id = e.downstream_id AND t.status = 'PENDING'
            RETURNING t.id, t.pool, t.status
         )
         SELECT done.*, (SELECT coalesce(json_agg(json_build_object('id', id, 'pool', pool, 'status', status)), '[]'::json) FROM rel) AS released FROM done`,
        [row.id, details.exitCode ?? 0],
      );
      done = 1;
      const { released, ...taskRow } = succeeded[0]!;
      effects.taskRow = taskRow;
      for (const r of released) {
        if (r.status !== TaskRunStatus.QUEUED) continue;
        events.task(row.pipeline_run_id, r.id);
        events.pools.add(r.pool);
      }
    } else {
      const cancelled = outcome === "CANCELLED" || row.cancel_requested;
      const decision = cancelled
        ? ({ retry: false } as const)
        : decideRetry({ attempt: row.attempt, maxRetries: row.max_attempts - 1, failureKind: outcome, backoffSeconds: row.retry_backoff_seconds, rng: Math.random });
      const message = details.error ?? (outcome === "EXECUTOR_LOST" ? "executor lost: lease expired without heartbeats" : outcome === "TIMED_OUT" ? "timed out" : null);
      if (decision.retry) {
        const immediate = decision.delayMs === 0;
        await sqlRows(em, 
          `UPDATE task_runs SET status = $2, attempt = $3, not_before = now() + $4 * interval '1 millisecond',
                  queued_at = CASE WHEN $5 THEN now() ELSE queued_at END,
                  lease_token = NULL, lease_expires_at = NULL, exit_code = $6, error = $7, failure_kind = $8
            WHERE id = $1`,
          [row.id, immediate ? TaskRunStatus.QUEUED : TaskRunStatus.RETRY_WAIT, decision.nextAttempt, decision.delayMs, immediate, details.exitCode, message, outcome],
        );
        if (immediate) events.pools.add(row.pool);
      } else {
        const final = cancelled ? TaskRunStatus.CANCELLED : TaskRunStatus.FAILED;
        await sqlRows(em, 
          `UPDATE task_runs SET status = $2, finished_at = now(), lease_token = NULL, lease_expires_at = NULL, exit_code = $3, error = $4, failure_kind = $5 WHERE id = $1`,
          [row.id, final, details.exitCode, message, cancelled ? "CANCELLED" : outcome],
        );
        const downstream: { id: string }[] = await sqlRows(em, 
          `WITH RECURSIVE d(id) AS (
             SELECT downstream_id FROM task_run_edges WHERE upstream_id = $1
             UNION SELECT e.downstream_id FROM task_run_edges e JOIN d ON e.upstream_id = d.id
           )
           UPDATE task_runs SET status = $2, finished_at = now() WHERE id IN (SELECT id FROM d) AND status = 'PENDING' RETURNING id`,
          [row.id, cancelled ? TaskRunStatus.CANCELLED : TaskRunStatus.UPSTREAM_FAILED],
        );
        downstream.forEach((d) => events.task(row.pipeline_run_id, d.id));
        done = 1 + downstream.length;
        failed = done;
      }
    }
    // The attempt's resources are free again: an executor of this pool waiting for room may claim.
    events.pools.add(row.pool);
    if (done > 0) {
      const finished = await this.advancePipelineRun(em, row.pipeline_run_id, done, failed, events);
      if (finished === PipelineRunStatus.SUCCEEDED) effects.succeededPipelineRunId = row.pipeline_run_id;
    }
    return effects;
  }

  /** Adds final tasks to the pipeline run's counters; finishes it with its last task. */
  async advancePipelineRun(em: EntityManager, pipelineRunId: string, done: number, failed: number, events: PendingEvents): Promise<PipelineRunStatus | null> {
    const rows: { tasks_done: number; tasks_total: number; tasks_failed: number; cancel_requested: boolean; status: PipelineRunStatus }[] = await sqlRows(em, 
      `UPDATE pipeline_runs SET tasks_done = tasks_done + $2, tasks_failed = tasks_failed + $3 WHERE id = $1
       RETURNING tasks_done, tasks_total, tasks_failed, cancel_requested, status`,
      [pipelineRunId, done, failed],
    );
    const run = rows[0]!;
    if (run.tasks_done < run.tasks_total || ["SUCCEEDED", "FAILED", "CANCELLED"].includes(run.status)) return null;
    const status = run.cancel_requested ? PipelineRunStatus.CANCELLED : run.tasks_failed > 0 ? PipelineRunStatus.FAILED : PipelineRunStatus.SUCCEEDED;
    await sqlRows(em, `UPDATE pipeline_runs SET status = $2, finished_at = now(), started_at = coalesce(started_at, now()) WHERE id = $1`, [pipelineRunId, status]);
    events.pipelineRuns.add(pipelineRunId);
    events.finished.add(pipelineRunId);
    if (this.onPipelineFinishedTx) await this.onPipelineFinishedTx(em, pipelineRunId, status);
    return status;
  }

  /** After the finishing transaction committed: announce, run on_success. */
  async afterFinish(_ctx: RequestContext, effects: FinishEffects, events: PendingEvents): Promise<void> {
    await this.announce(events);
    if (effects.succeededPipelineRunId && this.onPipelineSucceeded) {
      await this.onPipelineSucceeded(effects.succeededPipelineRunId).catch((err: Error) =>
        this.log.error({ err: err.message, pipelineRunId: effects.succeededPipelineRunId }, "on_success action failed"),
      );
    }
  }

  /** Publishes collected events after their transaction committed. */
  async announce(events: PendingEvents): Promise<void> {
    await events.publish(this.bus);
    if (events.finished.size > 0 && this.onPipelinesFinished) {
      await this.onPipelinesFinished([...events.finished]).catch((err: Error) => this.log.warn({ err: err.message }, "could not announce finished pipeline runs"));
    }
  }

  async close(): Promise<void> {
    await this.notifier.close();
  }
}

export interface FinishEffects {
  succeededPipelineRunId: string | null;
  /** The task run's row as the finishing statement left it, when that statement returned it. */
  taskRow: Record<string, unknown> | null;
}

export type { TaskRow };

/** GPU product names as nvidia-smi prints them ("NVIDIA H100 80GB HBM3") vs node labels ("NVIDIA-H100-80GB-HBM3"). */
export function normalizeGpuType(model: string): string {
  return model.trim().replace(/\s+/g, "-");
}
