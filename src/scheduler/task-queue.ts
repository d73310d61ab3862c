import { paramEnvName } from "./spec/task-invocation.js";
export { paramEnvName };
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
import { stillAuthorised } from "../services/credential-check.js";
import { LIMITS, validateId, validateText } from "../services/validation.js";
import { mintSecret } from "../services/tokens.service.js";
import { resolveTaskInvocation } from "./spec/index.js";
import { claimTasksInOneStatement, replayClaimInOneStatement, type ClaimCandidate, type PreparedClaim, type ReplayedClaim } from "./claim-statement.js";
import { packTasks, type FreeResources } from "./resource-packing.js";
import { countedAttempt, decideRetry, notStartedIsUncounted, type FailureKind } from "./retry-policy.js";
import { PendingEvents, pipelineTopics, type TaskLogEvent } from "./pipeline-events.js";
import { QueueNotifier } from "./queue-notifier.js";
import { SpecCache } from "./spec-cache.js";

/**
 * How an attempt ended, as the executor reports it (plus EXECUTOR_LOST, decided by the reaper).
 * NOT_STARTED: the executor could not set the attempt up (its work directory could not be
 * created); the task goes back to the queue without counting it against its retries.
 */
export type AttemptOutcome = "SUCCEEDED" | "NOT_STARTED" | FailureKind;

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
  /** How long a lease lasts from each heartbeat: executors time their own deadline with it (no clock skew). */
  leaseSeconds: number;
  command: string[];
  operator: string;
  env: Record<string, string>;
  gpus: number[];
  runId: string;
  checkpoint: CheckpointView | null;
  timeoutSeconds: number;
  image: string | null;
  resources: { cpu: number; memoryMb: number; gpus: number; gpuType: string | null };
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
/** A claim id: what a UUID, a ULID or a counter with a prefix looks like. */
const CLAIM_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$/;
const MAX_WAIT_SECONDS = 60;
/** Most tasks one claimTasks or completeTasks call handles: one executor's free slots. */
export const MAX_TASKS_PER_CALL = 100;
const MAX_LOG_LINE = 16_000;
const MAX_LOG_LINES_PER_CALL = 5_000;
/**
 * A checkpoint reaches the next attempt as one environment variable (MLGRAPH_CHECKPOINT), and
 * Linux refuses to start a process with a single variable over 128 KiB (E2BIG): every retry of
 * the task would then fail before running. 64 KiB leaves room for the name and the encoding.
 */
const MAX_CHECKPOINT_BYTES = 64 * 1024;

/**
 * The checkpoint as the next attempt receives it. One stored before the cap (up to 256 KiB) could
 * not be passed at all (E2BIG on every retry): such a checkpoint is left out, and the attempt
 * starts from scratch instead of never starting.
 */
function checkpointEnv(data: unknown): string {
  if (data === undefined || data === null) return "";
  const text = JSON.stringify(data);
  return Buffer.byteLength(text) > MAX_CHECKPOINT_BYTES ? "" : text;
}

/** Refuses a checkpoint the next attempt could not be started with. */
function checkCheckpointSize(checkpoint: unknown, field: string): void {
  if (checkpoint === undefined || checkpoint === null) return;
  if (Buffer.byteLength(JSON.stringify(checkpoint)) > MAX_CHECKPOINT_BYTES) {
    throw new DomainError("BAD_USER_INPUT", `${field}: larger than ${MAX_CHECKPOINT_BYTES} bytes; store large state as an artifact and checkpoint its path`, field);
  }
}

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
  uncounted_attempts: number;
}

/** A claim call that carries a claim id: which call with that id it is (the latest one counts). */
interface ClaimCall {
  claimId: string;
  call: number;
}

/** What one claim try found: tasks, and whether the call is answered with them whatever they are. */
interface ClaimTry {
  assignments: TaskAssignmentView[];
  /** A replay or a superseded call: answered now, without waiting for work. */
  final: boolean;
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
  /** on_success actions started after a completion and still running. */
  private readonly onSuccessActions = new Set<Promise<void>>();
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
        if (k.length > 250) throw new DomainError("BAD_USER_INPUT", `input.labels: label names are at most 250 characters (${JSON.stringify(k.slice(0, 40))}…)`, "input.labels");
        if (typeof v !== "string" || v.length > 1000) {
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
      if (g.memoryMb != null && (!Number.isInteger(g.memoryMb) || g.memoryMb <= 0)) {
        throw new DomainError("BAD_USER_INPUT", `input.gpus[${i}].memoryMb: must be a positive integer (MiB)`, `input.gpus[${i}].memoryMb`);
      }
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
   * registration, so the answer is cached: claims are the hottest path of the queue and this saves
   * each of them a round trip. (An executor deleted after its retention still answers from the
   * cache here; the claim's own UPDATE of its row then finds nothing and says NOT_FOUND.)
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

  /** Long-poll claim of one task (see claimMany), or null after `waitSeconds`. */
  async claim(ctx: RequestContext, executorId: string, waitSeconds?: number | null, claimId?: string | null): Promise<TaskAssignmentView | null> {
    return (await this.claimMany(ctx, executorId, 1, waitSeconds, claimId))[0] ?? null;
  }

  /**
   * Long-poll claim: up to `maxTasks` tasks that fit the executor's free resources together, as
   * soon as at least one is queued in its pool (woken by an event-bus notification, not a timer),
   * or none after `waitSeconds`. An executor with several free slots claims them in one call.
   *
   * With a `claimId` (the executor's own id for this call, the same when it resends the call after
   * a failure) a call is answered at most once with new tasks: a later call with the same id is
   * answered at once with the tasks that claim took and that are still CLAIMED (not heartbeated
   * yet, so never started) by this executor, with fresh lease and task tokens, instead of claiming
   * more. Of several calls with one id, only the latest is answered with anything: an earlier one
   * still waiting gets an empty list (its executor no longer listens to it).
   */
  async claimMany(ctx: RequestContext, executorId: string, maxTasks: number, waitSeconds?: number | null, claimId?: string | null): Promise<TaskAssignmentView[]> {
    const wait = waitSeconds ?? 0;
    if (!Number.isInteger(wait) || wait < 0 || wait > MAX_WAIT_SECONDS) {
      throw new DomainError("BAD_USER_INPUT", `waitSeconds: must be an integer from 0 to ${MAX_WAIT_SECONDS}`, "waitSeconds");
    }
    if (!Number.isInteger(maxTasks) || maxTasks < 1 || maxTasks > MAX_TASKS_PER_CALL) {
      throw new DomainError("BAD_USER_INPUT", `maxTasks: must be an integer from 1 to ${MAX_TASKS_PER_CALL}`, "maxTasks");
    }
    if (claimId != null && (typeof claimId !== "string" || !CLAIM_ID_PATTERN.test(claimId))) {
      throw new DomainError("BAD_USER_INPUT", "claimId: 1–100 of [A-Za-z0-9_.:-], starting with a letter or digit (a UUID, say)", "claimId");
    }
    const pool = await this.executorPool(ctx, executorId, "executorId");
    const call = claimId == null ? null : await this.startClaimCall(executorId, claimId);
    const deadline = Date.now() + wait * 1000;
    const abandoned = ctx.abandoned;
    for (;;) {
      // A caller that hung up would never learn of the tasks claimed for it: they would sit
      // CLAIMED until their lease expired and then count as a lost executor.
      if (abandoned?.aborted) return [];
      // A long poll outlives its authentication: an executor token revoked meanwhile gets no
      // tasks, and no freshly minted task tokens, whenever it looks again (one batched lookup).
      if (!(await stillAuthorised(ctx))) throw new DomainError("UNAUTHENTICATED", "credentials have been revoked or have expired");
      const waiter = await this.notifier.register(pool);
      const stopWaiting = () => waiter.dispose();
      abandoned?.addEventListener("abort", stopWaiting);
      try {
        const { assignments, final } = await this.tryClaim(executorId, maxTasks, call);
        if (assignments.length > 0) {
          // The caller hung up while this claim's transaction ran: nobody will ever see these.
          if (abandoned?.aborted) {
            await this.releaseUnreceived(assignments);
            return [];
          }
          return assignments;
        }
        if (final) return [];
        const remaining = deadline - Date.now();
        if (remaining <= 0 || this.notifier.isClosed || abandoned?.aborted) return [];
        await waiter.wait(remaining);
      } finally {
        abandoned?.removeEventListener("abort", stopWaiting);
        waiter.dispose();
      }
    }
  }

  /**
   * Records a call carrying a claim id and returns which call with that id it is. The count is
   * what makes only the latest call count: a call compares it under the executor's row lock before
   * it claims (see tryClaim).
   */
  private async startClaimCall(executorId: string, claimId: string): Promise<ClaimCall> {
    try {
      const rows: { calls: number }[] = await sqlRows(this.db,
        `INSERT INTO executor_claims (executor_id, claim_id) VALUES ($1, $2)
         ON CONFLICT (executor_id, claim_id) DO UPDATE SET calls = executor_claims.calls + 1, last_call_at = now()
         RETURNING calls`,
        [executorId, claimId],
      );
      return { claimId, call: rows[0]!.calls };
    } catch (err) {
      // The executor was deleted (retention) after its pool was cached.
      if ((err as { driverError?: { code?: string }; code?: string }).driverError?.code === "23503" || (err as { code?: string }).code === "23503") {
        this.executorPools.delete(executorId);
        throw new DomainError("NOT_FOUND", `executorId: executor ${JSON.stringify(executorId)} not found`, "executorId");
      }
      throw err;
    }
  }

  /**
   * One claim attempt: the best queued tasks that fit together, at most `maxTasks`, claimed in one
   * transaction. The transaction also opens each attempt's tracking run (params, tags) and mints
   * its task-scoped token; it is four statements however many tasks it claims. A call with a claim
   * id that an earlier call already served is answered with that claim's tasks again (replayClaim);
   * one that a later call with its id superseded gets nothing.
   */
  private async tryClaim(executorId: string, maxTasks: number, call: ClaimCall | null): Promise<ClaimTry> {
    const { claimed, events, final, replayed } = await inTransaction(this.db, async (em) => {
      // Created per try: a try rolled back after a deadlock must not announce anything.
      const events = new PendingEvents();
      // Locking the executor row serialises this executor's concurrent claims, so two of them
      // never see the same GPUs (or CPU) as free. The usage is read by the next statement, whose
      // snapshot is taken after the lock was granted (it must not share the UPDATE's snapshot).
      const executors: { pool: string; cpu: number; memory_mb: number; gpus: Gpu[] }[] = await sqlRows(em,
        `UPDATE executors SET last_seen_at = now(), status = 'ONLINE' WHERE id = $1 RETURNING pool, cpu, memory_mb, gpus`,
        [executorId],
      );
      const executor = executors[0];
      if (!executor) {
        this.executorPools.delete(executorId);
        throw new DomainError("NOT_FOUND", `executorId: executor ${JSON.stringify(executorId)} not found`, "executorId");
      }
      // The claim record is read here too: under the executor's lock, so a call with the same
      // claim id that claimed meanwhile has committed (and is replayed), and one that came later
      // has counted itself (and supersedes this one).
      const usage: { cpu: number; memory_mb: number; gpus: number[] | null; claim_calls: number | null; claim_served: boolean | null }[] = await sqlRows(em,
        `SELECT coalesce(sum(cpu), 0)::float8 AS cpu, coalesce(sum(memory_mb), 0)::int AS memory_mb,
                (SELECT array_agg(g) FROM task_runs t2, unnest(t2.assigned_gpus) g WHERE t2.executor_id = $1 AND t2.status IN ${LIVE}) AS gpus,
                (SELECT calls FROM executor_claims WHERE executor_id = $1 AND claim_id = $2) AS claim_calls,
                (SELECT served_at IS NOT NULL FROM executor_claims WHERE executor_id = $1 AND claim_id = $2) AS claim_served
           FROM task_runs WHERE executor_id = $1 AND status IN ${LIVE}`,
        [executorId, call?.claimId ?? null],
      );
      if (call) {
        // Gone (pruned long after its last call) or counted again: a later call with this id is
        // the one its executor listens to.
        if (usage[0]?.claim_calls !== call.call) return { claimed: [], events, final: true, replayed: false };
        if (usage[0]?.claim_served) return { claimed: await this.replayClaim(em, executorId, call.claimId), events, final: true, replayed: true };
      }
      const used = new Set(usage[0]?.gpus ?? []);
      const free: FreeResources = {
        cpu: executor.cpu - Number(usage[0]?.cpu ?? 0),
        memoryMb: executor.memory_mb - Number(usage[0]?.memory_mb ?? 0),
        gpus: executor.gpus.filter((g) => !used.has(g.index)).map((g) => ({ index: g.index, type: normalizeGpuType(g.model) })),
      };
      // Each candidate fits on its own (GPUs counted per type), so packTasks always takes the
      // first; it then keeps those that fit together. Rows locked here and not taken stay queued
      // and are unlocked at commit.
      const freeByType = new Map<string, number>();
      for (const g of free.gpus) freeByType.set(g.type, (freeByType.get(g.type) ?? 0) + 1);
      const candidates: ClaimCandidate[] = await sqlRows(em,
        `SELECT t.id, t.pipeline_run_id, t.task_id, t.attempt, t.cpu::float8 AS cpu, t.memory_mb AS "memoryMb", t.gpus, t.gpu_type AS "gpuType",
                t.timeout_seconds, t.checkpoint, t.checkpoint_at, t.checkpoint_attempt,
                pr.experiment_id, pr.pipeline_version_id, pr.params AS run_params
           FROM task_runs t JOIN pipeline_runs pr ON pr.id = t.pipeline_run_id
          WHERE t.status = 'QUEUED' AND t.pool = $1 AND t.cpu <= $2 AND t.memory_mb <= $3 AND t.gpus <= $4
            AND (t.gpus = 0 OR t.gpu_type IS NULL
                 OR t.gpus <= coalesce((SELECT f.n FROM unnest($5::text[], $6::int[]) AS f(type, n) WHERE f.type = t.gpu_type), 0))
          ORDER BY t.priority DESC, t.queued_at, t.id
          LIMIT $7
          FOR UPDATE OF t SKIP LOCKED`,
        [executor.pool, free.cpu + 1e-9, free.memoryMb, free.gpus.length, [...freeByType.keys()], [...freeByType.values()], maxTasks],
      );
      const picked = packTasks(free, candidates, maxTasks);
      if (picked.length === 0) return { claimed: [], events, final: false, replayed: false };
      // Candidates locked but not taken stayed QUEUED; a claimer of another executor that skipped
      // them meanwhile is waiting, and is told to look again once this commits.
      if (picked.length < candidates.length) events.pools.add(executor.pool);
      const claims: PreparedClaim[] = [];
      for (const { task, gpus } of picked) {
        const { spec, tasks } = await this.specs.get(task.pipeline_version_id, em);
        const taskSpec = tasks.get(task.task_id)!;
        claims.push({
          task,
          gpus,
          spec: taskSpec,
          pipelineName: spec.pipeline.name,
          invocation: resolveTaskInvocation(taskSpec, task.run_params),
          runId: crypto.randomUUID(),
          leaseToken: crypto.randomBytes(24).toString("base64url"),
          taskToken: mintSecret(),
          tokenId: crypto.randomUUID(),
        });
      }
      const rows = await claimTasksInOneStatement(em, claims, executorId, this.config.leaseSeconds, call?.claimId ?? null);
      const byId = new Map(rows.map((r) => [r.id as string, r]));
      for (const c of claims) events.task(c.task.pipeline_run_id, c.task.id);
      for (const id of (rows[0]?.started_pipeline_runs as string[] | undefined) ?? []) events.pipelineRuns.add(id);
      return { claimed: claims.map((c) => ({ claim: c, row: byId.get(c.task.id)! })), events, final: false, replayed: false };
    });
    if (replayed) this.log.info({ executorId, claimId: call?.claimId, tasks: claimed.length }, "a claim call was resent (its answer was lost): answered with its tasks again");
    if (claimed.length === 0) return { assignments: [], final };
    await events.publish(this.bus);
    return { assignments: claimed.map(({ claim, row }) => this.assignmentView(claim, row)), final };
  }

  /**
   * The tasks an earlier call with this claim id took that are still CLAIMED by this executor
   * under that claim (a heartbeat would have made them RUNNING: an executor that heartbeats got the
   * answer), handed out again with new lease and task tokens and a lease from now. Completed,
   * reaped or already started tasks are not in it.
   */
  private async replayClaim(em: EntityManager, executorId: string, claimId: string): Promise<{ claim: PreparedClaim; row: Record<string, unknown> }[]> {
    const tasks: (ClaimCandidate & { assigned_gpus: number[]; run_id: string })[] = await sqlRows(em,
      `SELECT t.id, t.pipeline_run_id, t.task_id, t.attempt, t.cpu::float8 AS cpu, t.memory_mb AS "memoryMb", t.gpus, t.gpu_type AS "gpuType",
              t.timeout_seconds, t.checkpoint, t.checkpoint_at, t.checkpoint_attempt, t.assigned_gpus, t.run_id,
              pr.experiment_id, pr.pipeline_version_id, pr.params AS run_params
         FROM task_attempts a
         JOIN task_runs t ON t.id = a.task_run_id AND t.attempt = a.attempt
         JOIN pipeline_runs pr ON pr.id = t.pipeline_run_id
        WHERE a.executor_id = $1 AND a.claim_id = $2 AND a.outcome IS NULL AND t.executor_id = $1 AND t.status = 'CLAIMED'
        ORDER BY t.id
          FOR UPDATE OF t`,
      [executorId, claimId],
    );
    if (tasks.length === 0) return [];
    const claims: PreparedClaim[] = [];
    const replays: ReplayedClaim[] = [];
    for (const task of tasks) {
      const { spec, tasks: specTasks } = await this.specs.get(task.pipeline_version_id, em);
      const taskSpec = specTasks.get(task.task_id)!;
      const claim: PreparedClaim = {
        task,
        gpus: task.assigned_gpus ?? [],
        spec: taskSpec,
        pipelineName: spec.pipeline.name,
        invocation: resolveTaskInvocation(taskSpec, task.run_params),
        runId: task.run_id,
        leaseToken: crypto.randomBytes(24).toString("base64url"),
        taskToken: mintSecret(),
        tokenId: crypto.randomUUID(),
      };
      claims.push(claim);
      replays.push({ taskRunId: task.id, tokenName: `task ${task.task_id} #${task.attempt}`, tokenId: claim.tokenId, leaseToken: claim.leaseToken, taskToken: claim.taskToken });
    }
    const rows = await replayClaimInOneStatement(em, replays, this.config.leaseSeconds);
    const byId = new Map(rows.map((r) => [r.id as string, r]));
    return claims.map((claim) => ({ claim, row: byId.get(claim.task.id)! }));
  }

  /**
   * Undoes claims whose caller hung up before it could receive them. Each task still CLAIMED
   * under the lease handed out goes back to QUEUED in its old place, pointing at its previous
   * attempt's run again (if any), and the attempt, tracking run and task token the claim created
   * are removed (nobody ever saw them); a pipeline run with no attempt left is QUEUED again. A
   * task whose cancellation was asked for meanwhile is cancelled instead (the request would be
   * lost otherwise: cancellation only flags tasks that are already claimed).
   */
  private async releaseUnreceived(assignments: TaskAssignmentView[]): Promise<void> {
    const leases = new Map(assignments.map((a) => [a.taskRun.id, a.leaseToken]));
    const { events, undone } = await inTransaction(this.db, async (em) => {
      const events = new PendingEvents();
      const locked: TaskRow[] = await sqlRows(em, `SELECT * FROM task_runs WHERE id = ANY($1::uuid[]) AND status = 'CLAIMED' ORDER BY id FOR UPDATE`, [[...leases.keys()]]);
      const ours = locked.filter((r) => r.lease_token === leases.get(r.id));
      const progress: PipelineRunProgress = new Map();
      for (const row of ours.filter((r) => r.cancel_requested)) {
        await this.failAttempt(em, row, "CANCELLED", { exitCode: null, error: "cancelled before its executor received it" }, progress, events);
      }
      await this.advancePipelineRuns(em, progress, events);
      const undo = ours.filter((r) => !r.cancel_requested);
      if (undo.length === 0) return { events, undone: 0 };
      const ids = undo.map((r) => r.id);
      await sqlRows(em,
        `UPDATE task_runs t SET status = 'QUEUED', executor_id = NULL, assigned_gpus = '{}', lease_token = NULL, lease_expires_at = NULL,
                token_id = NULL, run_id = prev.run_id, claimed_at = prev.claimed_at
           FROM unnest($1::uuid[], $2::int[]) AS u(id, attempt)
           LEFT JOIN LATERAL (
             SELECT a.run_id, a.claimed_at FROM task_attempts a WHERE a.task_run_id = u.id AND a.attempt < u.attempt ORDER BY a.attempt DESC LIMIT 1
           ) prev ON true
          WHERE t.id = u.id`,
        [ids, undo.map((r) => r.attempt)],
      );
      await sqlRows(em, `DELETE FROM task_attempts WHERE (task_run_id, attempt) IN (SELECT * FROM unnest($1::uuid[], $2::int[]))`, [ids, undo.map((r) => r.attempt)]);
      await sqlRows(em, `DELETE FROM api_tokens WHERE id = ANY($1::uuid[])`, [undo.map((r) => r.token_id)]);
      // Params and tags go with their run (ON DELETE CASCADE).
      await sqlRows(em, `DELETE FROM runs WHERE id = ANY($1::uuid[])`, [undo.map((r) => r.run_id)]);
      const requeued: { id: string }[] = await sqlRows(em,
        `UPDATE pipeline_runs p SET status = 'QUEUED', started_at = NULL
          WHERE p.id = ANY($1::uuid[]) AND p.status = 'RUNNING'
            AND NOT EXISTS (SELECT 1 FROM task_runs t JOIN task_attempts a ON a.task_run_id = t.id WHERE t.pipeline_run_id = p.id)
          RETURNING p.id`,
        [[...new Set(undo.map((r) => r.pipeline_run_id))]],
      );
      for (const r of undo) {
        events.task(r.pipeline_run_id, r.id);
        events.pools.add(r.pool);
      }
      requeued.forEach((r) => events.pipelineRuns.add(r.id));
      return { events, undone: undo.length };
    });
    if (undone > 0) this.log.warn({ tasks: undone }, "a claimer hung up during its claim; its tasks were queued again");
    await this.announce(events);
  }

  /** What the executor receives for one claimed task: command, credentials, GPUs, checkpoint. */
  private assignmentView(claim: PreparedClaim, row: Record<string, unknown>): TaskAssignmentView {
    const { task, gpus, invocation } = claim;
    const taskRun = entityFromRow(this.db, TaskRun, row);
    const checkpoint: CheckpointView | null =
      task.checkpoint_at && task.checkpoint !== null ? { data: task.checkpoint, attempt: task.checkpoint_attempt ?? 0, updatedAt: new Date(task.checkpoint_at) } : null;
    const env: Record<string, string> = {
      ...invocation.env,
      MLGRAPH_TOKEN: claim.taskToken.secret,
      MLGRAPH_RUN_ID: claim.runId,
      MLGRAPH_TASK_RUN_ID: task.id,
      MLGRAPH_PIPELINE_RUN_ID: task.pipeline_run_id,
      MLGRAPH_TASK_ID: task.task_id,
      MLGRAPH_ATTEMPT: String(task.attempt),
      MLGRAPH_CHECKPOINT: checkpointEnv(checkpoint?.data),
      // Empty for CPU tasks: hides every GPU rather than exposing all of them.
      CUDA_VISIBLE_DEVICES: gpus.join(","),
      // The indices come from nvidia-smi, which numbers GPUs in PCI bus order; CUDA's default
      // order is fastest first, so without this index 0 may be another card than the one granted.
      CUDA_DEVICE_ORDER: "PCI_BUS_ID",
      MLGRAPH_PARAMS: JSON.stringify(invocation.params),
    };
    for (const [k, v] of Object.entries(invocation.params)) env[paramEnvName(k)] = typeof v === "string" ? v : JSON.stringify(v);
    return {
      taskRun,
      leaseToken: claim.leaseToken,
      leaseExpiresAt: new Date(taskRun.leaseExpiresAt!),
      leaseSeconds: this.config.leaseSeconds,
      command: invocation.argv,
      operator: claim.spec.operator,
      env,
      gpus,
      runId: claim.runId,
      checkpoint,
      timeoutSeconds: task.timeout_seconds,
      image: claim.spec.image ?? null,
      resources: { cpu: task.cpu, memoryMb: task.memoryMb, gpus: task.gpus, gpuType: task.gpuType ?? null },
    };
  }

  // ---------------------------------------------------------------- heartbeats, logs

  /** Extends the lease, stores a checkpoint, and says whether cancellation was requested. */
  async heartbeat(
    _ctx: RequestContext,
    input: { taskRunId: string; leaseToken: string; checkpoint?: unknown },
  ): Promise<{ cancelRequested: boolean; leaseExpiresAt: Date; taskRun: TaskRun }> {
    const taskRunId = validateId(input.taskRunId, "input.taskRunId");
    validateText(input.leaseToken, "input.leaseToken", 200);
    const hasCheckpoint = input.checkpoint !== undefined && input.checkpoint !== null;
    checkCheckpointSize(input.checkpoint, "input.checkpoint");
    const rows: { cancel_requested: boolean; lease_expires_at: Date; pipeline_run_id: string; was: string; executor_id: string }[] = await sqlRows(this.db, 
      `WITH old AS (SELECT status FROM task_runs WHERE id = $1 AND lease_token = $2 AND status IN ${LIVE} FOR UPDATE)
       UPDATE task_runs SET lease_expires_at = now() + $3 * interval '1 second', status = 'RUNNING',
              started_at = coalesce(started_at, now()),
              checkpoint = CASE WHEN $4 THEN $5::jsonb ELSE checkpoint END,
              checkpoint_at = CASE WHEN $4 THEN now() ELSE checkpoint_at END,
              checkpoint_attempt = CASE WHEN $4 THEN attempt ELSE checkpoint_attempt END
        WHERE id = $1 AND EXISTS (SELECT 1 FROM old)
        RETURNING cancel_requested, lease_expires_at, pipeline_run_id, (SELECT status FROM old) AS was, executor_id`,
      [taskRunId, input.leaseToken, this.config.leaseSeconds, hasCheckpoint, hasCheckpoint ? JSON.stringify(input.checkpoint) : null],
    );
    const row = rows[0];
    if (!row) throw await this.staleLease(taskRunId, "input.leaseToken", "input.taskRunId");
    // Heartbeats also say the executor is alive; throttled so they do not all rewrite its row.
    await sqlRows(this.db, `UPDATE executors SET last_seen_at = now(), status = 'ONLINE' WHERE id = $1 AND (last_seen_at < now() - interval '2 seconds' OR status <> 'ONLINE')`, [row.executor_id]);
    if (row.was === TaskRunStatus.CLAIMED || hasCheckpoint) {
      const events = new PendingEvents();
      events.task(row.pipeline_run_id, taskRunId);
      await events.publish(this.bus);
    }
    const taskRun = (await this.db.getRepository(TaskRun).findOneBy({ id: taskRunId }))!;
    return { cancelRequested: row.cancel_requested, leaseExpiresAt: new Date(row.lease_expires_at), taskRun };
  }

  /** The error for a lease that did not match: NOT_FOUND naming `idField` when there is no such task run. */
  private async staleLease(taskRunId: string, field: string, idField: string): Promise<DomainError> {
    const exists = await this.db.getRepository(TaskRun).existsBy({ id: taskRunId });
    if (!exists) return new DomainError("NOT_FOUND", `${idField}: task run ${JSON.stringify(taskRunId)} not found`, idField);
    return new DomainError("CONFLICT", `${field}: the lease is no longer valid (expired, or the attempt already ended); stop this attempt`, field);
  }

  /**
   * Appends lines to a live attempt's log; numbered per task run, announced to `taskLogs`
   * subscribers. With `fromLine` (the number the caller gives its first line: the task run's
   * `logLines` when the attempt was claimed plus the lines it sent since) a resend after a lost
   * answer stores only the lines not stored yet, so an executor can retry every failure; a
   * `fromLine` past the stored lines is refused, since readers count on numbers without gaps.
   */
  async appendLogs(_ctx: RequestContext, rawTaskRunId: string, leaseToken: string, lines: string[], fromLine?: number | null): Promise<boolean> {
    // The id as PostgreSQL spells it (lower case): it names the taskLogs topic subscribers listen on.
    const taskRunId = validateId(rawTaskRunId, "taskRunId");
    validateText(leaseToken, "leaseToken", 200);
    if (lines.length > MAX_LOG_LINES_PER_CALL) throw new DomainError("BAD_USER_INPUT", `lines: at most ${MAX_LOG_LINES_PER_CALL} per call`, "lines");
    if (fromLine != null && (!Number.isSafeInteger(fromLine) || fromLine < 0)) throw new DomainError("BAD_USER_INPUT", "fromLine: must be a non-negative integer", "fromLine");
    // NUL cannot be stored in text; very long lines are cut rather than refused (logs are best kept).
    const clean = lines.map((l) => (l.length > MAX_LOG_LINE ? `${l.slice(0, MAX_LOG_LINE)}…` : l).replace(/\u0000/g, ""));
    // The row is locked first, so two sends of one call (a retry racing its original) see each
    // other's lines: only numbers at or past the stored count are written.
    const rows: { start: number; stored: number }[] = await sqlRows(this.db,
      `WITH old AS (
         SELECT log_lines AS stored, coalesce($5::int, log_lines) AS start, attempt FROM task_runs
          WHERE id = $1 AND lease_token = $2 AND status IN ${LIVE} FOR UPDATE
       ), t AS (
         UPDATE task_runs SET log_lines = greatest(old.stored, old.start + $3) FROM old WHERE task_runs.id = $1 AND old.start <= old.stored
       ), ins AS (
         INSERT INTO task_logs (task_run_id, line_no, attempt, line)
         SELECT $1, old.start + u.ord - 1, old.attempt, u.line FROM old, unnest($4::text[]) WITH ORDINALITY AS u(line, ord)
          WHERE old.start <= old.stored AND old.start + u.ord - 1 >= old.stored
       )
       SELECT start, stored FROM old`,
      [taskRunId, leaseToken, clean.length, clean, fromLine ?? null],
    );
    const row = rows[0];
    if (!row) throw await this.staleLease(taskRunId, "leaseToken", "taskRunId");
    if (row.start > row.stored) {
      throw new DomainError("BAD_USER_INPUT", `fromLine: ${row.start} is past the ${row.stored} lines stored (lines in between were never sent)`, "fromLine");
    }
    // Announced whole even when a resend stored nothing new (the server that stored it may have
    // died before announcing): subscribers drop the lines they already have by number.
    if (clean.length > 0) {
      await this.bus.publish(pipelineTopics.taskLogs(taskRunId), { taskRunId, fromLine: row.start, lines: clean } satisfies TaskLogEvent);
    }
    return true;
  }

  // ---------------------------------------------------------------- completion

  /** Ends the live attempt; refused (CONFLICT) when the lease token is stale. */
  async complete(ctx: RequestContext, input: CompletionInput): Promise<TaskRun> {
    return (await this.completeMany(ctx, [input], "input"))[0]!;
  }

  /**
   * Ends several live attempts in one transaction, all or nothing: one stale lease refuses the
   * whole call (CONFLICT, naming its index) and changes nothing. Successes, the common case, are
   * finished by set-based statements whose count does not grow with the batch.
   */
  async completeMany(ctx: RequestContext, inputs: CompletionInput[], field = "inputs"): Promise<TaskRun[]> {
    if (inputs.length > MAX_TASKS_PER_CALL) throw new DomainError("BAD_USER_INPUT", `${field}: at most ${MAX_TASKS_PER_CALL} per call`, field);
    const at = (i: number) => (field === "input" ? "input" : `${field}[${i}]`);
    // Ids as PostgreSQL spells them (lower case), so rows and inputs match however a client wrote them.
    const ids = inputs.map((input, i) => {
      const id = validateId(input.taskRunId, `${at(i)}.taskRunId`);
      validateText(input.leaseToken, `${at(i)}.leaseToken`, 200);
      if (!["SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "NOT_STARTED"].includes(input.outcome)) {
        throw new DomainError("BAD_USER_INPUT", `${at(i)}.outcome: expected SUCCEEDED, FAILED, TIMED_OUT, CANCELLED or NOT_STARTED`, `${at(i)}.outcome`);
      }
      checkCheckpointSize(input.checkpoint, `${at(i)}.checkpoint`);
      return id;
    });
    ids.forEach((id, i) => {
      if (ids.indexOf(id) !== i) throw new DomainError("BAD_USER_INPUT", `${at(i)}.taskRunId: task run ${id} appears twice`, `${at(i)}.taskRunId`);
    });
    if (inputs.length === 0) return [];
    const { effects, events } = await inTransaction(this.db, async (em) => {
      // Created per try: a try rolled back after a deadlock must not announce anything.
      const events = new PendingEvents();
      // Locked in id order, so two batches sharing tasks wait for each other instead of deadlocking.
      const locked: TaskRow[] = await sqlRows(em, `SELECT * FROM task_runs WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE`, [ids]);
      const rowsById = new Map(locked.map((r) => [r.id, r]));
      const successes: Success[] = [];
      const others: { row: TaskRow; input: CompletionInput }[] = [];
      inputs.forEach((input, i) => {
        const row = rowsById.get(ids[i]!);
        if (!row) throw new DomainError("NOT_FOUND", `${at(i)}.taskRunId: task run ${JSON.stringify(input.taskRunId)} not found`, `${at(i)}.taskRunId`);
        if (row.lease_token !== input.leaseToken || (row.status !== TaskRunStatus.CLAIMED && row.status !== TaskRunStatus.RUNNING)) {
          throw new DomainError("CONFLICT", `${at(i)}.leaseToken: the lease is no longer valid (expired, or the attempt already ended); the result is discarded`, `${at(i)}.leaseToken`);
        }
        if (input.outcome === "SUCCEEDED" && (input.checkpoint === undefined || input.checkpoint === null)) successes.push({ row, exitCode: input.exitCode ?? 0, error: errorText(input.error) });
        else others.push({ row, input });
      });
      const progress: PipelineRunProgress = new Map();
      const taskRows = successes.length > 0 ? await this.succeedAttempts(em, successes, progress, events) : new Map<string, Record<string, unknown>>();
      // Failures (retry decisions, downstream marking) and final checkpoints are rare: one by one.
      for (const { row, input } of others) {
        if (input.checkpoint !== undefined && input.checkpoint !== null) {
          await sqlRows(em, "UPDATE task_runs SET checkpoint = $2::jsonb, checkpoint_at = now(), checkpoint_attempt = attempt WHERE id = $1", [row.id, JSON.stringify(input.checkpoint)]);
        }
        const details = { exitCode: input.exitCode ?? null, error: errorText(input.error) };
        if (input.outcome === "SUCCEEDED") {
          (await this.succeedAttempts(em, [{ row, exitCode: details.exitCode ?? 0, error: details.error }], progress, events)).forEach((r, id) => taskRows.set(id, r));
        } else {
          await this.failAttempt(em, row, input.outcome, details, progress, events);
        }
      }
      // Every pipeline run touched is advanced once, last, in id order: batches that share
      // pipeline runs lock them in the same order.
      const finished = await this.advancePipelineRuns(em, progress, events);
      const effects: FinishEffects = { succeededPipelineRunIds: succeededIn(finished), taskRows };
      return { effects, events };
    });
    await this.afterFinish(ctx, effects, events);
    const missing = ids.filter((id) => !effects.taskRows.has(id));
    if (missing.length > 0) {
      const reread: Record<string, unknown>[] = await sqlRows(this.db, "SELECT * FROM task_runs WHERE id = ANY($1::uuid[])", [missing]);
      reread.forEach((row) => effects.taskRows.set(row.id as string, row));
    }
    return ids.map((id) => entityFromRow(this.db, TaskRun, effects.taskRows.get(id)!));
  }

  /**
   * Ends the live attempt of a locked task row and advances its pipeline run (finishing it when
   * its last task is final): the reaper's and cancellation's single-task path.
   */
  async finishAttempt(
    em: EntityManager,
    row: TaskRow,
    outcome: AttemptOutcome,
    details: { exitCode: number | null; error: string | null },
    events: PendingEvents,
  ): Promise<FinishEffects> {
    const progress: PipelineRunProgress = new Map();
    let taskRows = new Map<string, Record<string, unknown>>();
    if (outcome === "SUCCEEDED") taskRows = await this.succeedAttempts(em, [{ row, exitCode: details.exitCode ?? 0, error: details.error }], progress, events);
    else await this.failAttempt(em, row, outcome, details, progress, events);
    const finished = await this.advancePipelineRuns(em, progress, events);
    return { succeededPipelineRunIds: succeededIn(finished), taskRows };
  }

  /**
   * Succeeds locked live attempts: ends their tracking runs, closes their attempt records and
   * revokes their task tokens (one statement), then marks them SUCCEEDED and releases their
   * dependents (another; a dependent of several of them counts them all). Their pipeline runs'
   * progress is added to `progress` for the caller to apply. Returns the task rows as left.
   */
  private async succeedAttempts(em: EntityManager, successes: Success[], progress: PipelineRunProgress, events: PendingEvents): Promise<Map<string, Record<string, unknown>>> {
    const rows = successes.map((s) => s.row);
    const ids = rows.map((r) => r.id);
    await sqlRows(em,
      `WITH u AS (
         SELECT * FROM unnest($1::uuid[], $2::int[], $3::uuid[], $4::uuid[], $5::text[]) AS u(task_run_id, attempt, run_id, token_id, error)
       ), r AS (
         UPDATE runs SET status = 'FINISHED', end_time = now() FROM u WHERE runs.id = u.run_id AND runs.status = 'RUNNING'
       ), k AS (
         UPDATE api_tokens SET revoked_at = now() FROM u WHERE api_tokens.id = u.token_id AND api_tokens.revoked_at IS NULL
       )
       UPDATE task_attempts SET outcome = 'SUCCEEDED', error = u.error, finished_at = now()
         FROM u WHERE task_attempts.task_run_id = u.task_run_id AND task_attempts.attempt = u.attempt`,
      [ids, rows.map((r) => r.attempt), rows.map((r) => r.run_id), rows.map((r) => r.token_id), successes.map((s) => s.error)],
    );
    const succeeded: (Record<string, unknown> & { released: { id: string; pool: string; status: string; pipeline_run_id: string }[] })[] = await sqlRows(em,
      `WITH done AS (
         UPDATE task_runs SET status = 'SUCCEEDED', finished_at = now(), lease_token = NULL, lease_expires_at = NULL, exit_code = u.exit_code, error = NULL
           FROM unnest($1::uuid[], $2::int[]) AS u(id, exit_code) WHERE task_runs.id = u.id
         RETURNING task_runs.*
       ), upstream AS (
         SELECT e.downstream_id, count(*)::int AS n FROM task_run_edges e WHERE e.upstream_id = ANY($1::uuid[]) GROUP BY e.downstream_id
       ), rel AS (
         UPDATE task_runs t SET pending_deps = t.pending_deps - upstream.n,
                status = CASE WHEN t.pending_deps = upstream.n THEN 'QUEUED' ELSE t.status END,
                queued_at = CASE WHEN t.pending_deps = upstream.n THEN now() ELSE t.queued_at END
           FROM upstream
          WHERE t.id = upstream.downstream_id AND t.status = 'PENDING'
          RETURNING t.id, t.pool, t.status, t.pipeline_run_id
       )
       SELECT done.*, (SELECT coalesce(json_agg(json_build_object('id', id, 'pool', pool, 'status', status, 'pipeline_run_id', pipeline_run_id)), '[]'::json) FROM rel) AS released
         FROM done`,
      [ids, successes.map((s) => s.exitCode)],
    );
    const taskRows = new Map<string, Record<string, unknown>>();
    for (const { released, ...taskRow } of succeeded) taskRows.set(taskRow.id as string, taskRow);
    for (const r of succeeded[0]?.released ?? []) {
      if (r.status !== TaskRunStatus.QUEUED) continue;
      events.task(r.pipeline_run_id, r.id);
      events.pools.add(r.pool);
    }
    for (const row of rows) {
      events.task(row.pipeline_run_id, row.id);
      // The attempt's resources are free again: an executor of this pool waiting for room may claim.
      events.pools.add(row.pool);
      addProgress(progress, row.pipeline_run_id, 1, 0);
    }
    return taskRows;
  }

  /**
   * Ends a locked live attempt that did not succeed: ends its tracking run, then either schedules
   * a retry or fails the task for good, marking everything downstream UPSTREAM_FAILED (CANCELLED
   * when cancelled). The final tasks are added to `progress` for the caller to apply.
   */
  private async failAttempt(
    em: EntityManager,
    row: TaskRow,
    outcome: Exclude<AttemptOutcome, "SUCCEEDED">,
    details: { exitCode: number | null; error: string | null },
    progress: PipelineRunProgress,
    events: PendingEvents,
  ): Promise<void> {
    const runStatus = outcome === "CANCELLED" ? "KILLED" : "FAILED";
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
    // The attempt's resources are free again: an executor of this pool waiting for room may claim.
    events.pools.add(row.pool);
    const cancelled = outcome === "CANCELLED" || row.cancel_requested;
    const message =
      details.error ??
      (outcome === "EXECUTOR_LOST" ? "executor lost: lease expired without heartbeats" : outcome === "TIMED_OUT" ? "timed out" : outcome === "NOT_STARTED" ? "the executor could not set the attempt up" : null);
    if (outcome === "NOT_STARTED" && !cancelled && notStartedIsUncounted(row.uncounted_attempts)) {
      // Not the task's fault (the executor's disk, say): back to the queue in its old place, at once,
      // without using a retry. The executor that could not set it up stops claiming for a while.
      await sqlRows(em,
        `UPDATE task_runs SET status = 'QUEUED', attempt = attempt + 1, uncounted_attempts = uncounted_attempts + 1, not_before = NULL,
                lease_token = NULL, lease_expires_at = NULL, started_at = NULL, exit_code = NULL, error = $2, failure_kind = 'NOT_STARTED'
          WHERE id = $1`,
        [row.id, message],
      );
      return;
    }
    // Attempts handed back NOT_STARTED did not count; past the limit they do (as FAILED ones).
    const decision = cancelled
      ? ({ retry: false } as const)
      : decideRetry({
          attempt: countedAttempt(row.attempt, row.uncounted_attempts),
          maxRetries: row.max_attempts - 1,
          failureKind: outcome === "NOT_STARTED" ? "FAILED" : outcome,
          backoffSeconds: row.retry_backoff_seconds,
          rng: Math.random,
        });
    if (decision.retry) {
      const immediate = decision.delayMs === 0;
      await sqlRows(em,
        `UPDATE task_runs SET status = $2, attempt = $3, not_before = now() + $4 * interval '1 millisecond',
                queued_at = CASE WHEN $5 THEN now() ELSE queued_at END,
                lease_token = NULL, lease_expires_at = NULL, exit_code = $6, error = $7, failure_kind = $8
          WHERE id = $1`,
        [row.id, immediate ? TaskRunStatus.QUEUED : TaskRunStatus.RETRY_WAIT, row.attempt + 1, decision.delayMs, immediate, details.exitCode, message, outcome],
      );
      return;
    }
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
    addProgress(progress, row.pipeline_run_id, 1 + downstream.length, 1 + downstream.length);
  }

  /** Adds final tasks to the pipeline run's counters; finishes it with its last task. */
  async advancePipelineRun(em: EntityManager, pipelineRunId: string, done: number, failed: number, events: PendingEvents): Promise<PipelineRunStatus | null> {
    const finished = await this.advancePipelineRuns(em, new Map([[pipelineRunId, { done, failed }]]), events);
    return finished.get(pipelineRunId) ?? null;
  }

  /**
   * Adds final tasks to pipeline runs' counters (one statement for all of them) and finishes each
   * run whose last task is final. Returns the final status of the runs this finished.
   */
  async advancePipelineRuns(em: EntityManager, counts: PipelineRunProgress, events: PendingEvents): Promise<Map<string, PipelineRunStatus>> {
    // Sorted so concurrent completions lock shared pipeline runs in the same order.
    if (counts.size === 0) return new Map();
    const ids = [...counts.keys()].sort();
    const rows: { id: string; tasks_done: number; tasks_total: number; tasks_failed: number; cancel_requested: boolean; status: PipelineRunStatus }[] = await sqlRows(em,
      `UPDATE pipeline_runs p SET tasks_done = p.tasks_done + u.done, tasks_failed = p.tasks_failed + u.failed
         FROM unnest($1::uuid[], $2::int[], $3::int[]) AS u(id, done, failed) WHERE p.id = u.id
       RETURNING p.id, p.tasks_done, p.tasks_total, p.tasks_failed, p.cancel_requested, p.status`,
      [ids, ids.map((id) => counts.get(id)!.done), ids.map((id) => counts.get(id)!.failed)],
    );
    const finished = new Map<string, PipelineRunStatus>();
    for (const run of rows) {
      // pipelineRunUpdated reports progress (tasksDone, tasksFailed), not only the end.
      events.pipelineRuns.add(run.id);
      if (run.tasks_done < run.tasks_total || ["SUCCEEDED", "FAILED", "CANCELLED"].includes(run.status)) continue;
      const status = run.cancel_requested ? PipelineRunStatus.CANCELLED : run.tasks_failed > 0 ? PipelineRunStatus.FAILED : PipelineRunStatus.SUCCEEDED;
      await sqlRows(em, `UPDATE pipeline_runs SET status = $2, finished_at = now(), started_at = coalesce(started_at, now()) WHERE id = $1`, [run.id, status]);
      events.finished.add(run.id);
      if (this.onPipelineFinishedTx) await this.onPipelineFinishedTx(em, run.id, status);
      finished.set(run.id, status);
    }
    return finished;
  }

  /**
   * After the finishing transaction committed: announce, then start the on_success actions without
   * waiting for them. A registration waiting on a busy model must not hold the executor's
   * completion call (past its timeout it resends and is answered CONFLICT, and its other
   * completions queue behind). The run stays due until its action records a result, so one cut
   * short by a crash is run again by the scheduler.
   */
  async afterFinish(_ctx: RequestContext, effects: FinishEffects, events: PendingEvents): Promise<void> {
    await this.announce(events);
    for (const pipelineRunId of effects.succeededPipelineRunIds) {
      if (!this.onPipelineSucceeded) break;
      const action = this.onPipelineSucceeded(pipelineRunId).catch((err: Error) => this.log.error({ err: err.message, pipelineRunId }, "on_success action failed"));
      this.onSuccessActions.add(action);
      void action.finally(() => this.onSuccessActions.delete(action));
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
    // Actions started by completions finish before the stores close (one cut short would be run
    // again by the scheduler, but a clean stop should not leave that to it).
    await Promise.allSettled([...this.onSuccessActions]);
  }
}

export interface FinishEffects {
  /** Pipeline runs that reached SUCCEEDED: their on_success actions run after commit. */
  succeededPipelineRunIds: string[];
  /** Task runs' rows as the finishing statements left them, by id, where a statement returned them. */
  taskRows: Map<string, Record<string, unknown>>;
}

/** Tasks that became final per pipeline run, applied to its counters once per transaction. */
type PipelineRunProgress = Map<string, { done: number; failed: number }>;

function addProgress(progress: PipelineRunProgress, pipelineRunId: string, done: number, failed: number): void {
  const counts = progress.get(pipelineRunId) ?? { done: 0, failed: 0 };
  counts.done += done;
  counts.failed += failed;
  progress.set(pipelineRunId, counts);
}

function succeededIn(finished: Map<string, PipelineRunStatus>): string[] {
  return [...finished].filter(([, status]) => status === PipelineRunStatus.SUCCEEDED).map(([id]) => id);
}

/** A live attempt that succeeded, as completeTasks and the reaper's path hand it over. */
interface Success {
  row: TaskRow;
  exitCode: number;
  error: string | null;
}

/** Error text as stored: at most 10,000 characters. */
function errorText(error: string | null | undefined): string | null {
  return error == null ? null : error.slice(0, 10_000);
}

/** What an executor reports at the end of an attempt. */
export interface CompletionInput {
  taskRunId: string;
  leaseToken: string;
  outcome: AttemptOutcome;
  exitCode?: number | null;
  error?: string | null;
  checkpoint?: unknown;
}

export type { TaskRow };

/** GPU product names as nvidia-smi prints them ("NVIDIA H100 80GB HBM3") vs node labels ("NVIDIA-H100-80GB-HBM3"). */
export function normalizeGpuType(model: string): string {
  return model.trim().replace(/\s+/g, "-");
}
