import crypto from "node:crypto";
import os from "node:os";
import path from "node:path";
import type { Logger } from "pino";
import { CompletionBatcher } from "./completion-batcher.js";
import { settlesWithin } from "./settles-within.js";
import { SetupBackoff } from "./setup-backoff.js";
import type { GpuInfo, GpuSpec } from "./gpu-detection.js";
import type { AttemptResult, AttemptRuntime, RunningAttempt } from "./runtimes/attempt-runtime.js";
import { LocalAttemptRuntime } from "./runtimes/local-attempts.js";

export { resolveScriptPaths } from "./runtimes/local-attempts.js";

export interface AgentOptions {
  /** Server base URL or its /graphql endpoint. */
  server: string;
  token?: string;
  pool: string;
  gpus: GpuSpec;
  concurrency: number;
  name?: string;
  /** Defaults: this machine's cores and memory. */
  cpu?: number;
  memoryMb?: number;
  labels?: Record<string, string>;
  /** Parent of each attempt's fresh working directory (default: the OS temp dir). */
  workdirBase?: string;
  /** Where relative script paths in a task's argv are found (default: the agent's cwd). */
  pipelineDir?: string;
  /** Environment every task process starts from (the agent's own, from config); the assignment's variables go on top. */
  taskBaseEnv: Record<string, string>;
  /** Long-poll length per claimTask call. */
  waitSeconds?: number;
  /** SIGTERM → SIGKILL grace for stopping tasks. */
  graceSeconds?: number;
  /** How long a finished attempt's outcome waits for its last log lines (default 30 s). */
  logDrainSeconds?: number;
  /** Where attempts run (default: local processes, from gpus/workdirBase/pipelineDir/taskBaseEnv). */
  runtime?: AttemptRuntime;
  log: Logger;
}

interface Assignment {
  /** `logLines`: lines the task run had stored when this attempt was claimed (where its own lines start). */
  taskRun: { id: string; taskId: string; attempt: number; logLines: number };
  leaseToken: string;
  leaseExpiresAt: string;
  /** Absent from servers before it existed. */
  leaseSeconds?: number;
  command: string[];
  operator: string;
  env: Record<string, string>;
  gpus: number[];
  runId: string;
  timeoutSeconds: number;
  /** Absent from servers before they existed (local processes need neither). */
  image?: string | null;
  resources?: { cpu: number; memoryMb: number; gpus: number; gpuType: string | null };
}

interface Completion {
  taskRunId: string;
  leaseToken: string;
  outcome: "SUCCEEDED" | "FAILED" | "TIMED_OUT" | "CANCELLED" | "NOT_STARTED";
  exitCode: number | null;
  error: string | null;
}

class GraphqlError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

/** An answer that is not GraphQL: an error page from a proxy or load balancer in front of the server. */
class HttpError extends Error {
  constructor(readonly status: number) {
    super(`no GraphQL answer (HTTP ${status})`);
  }
}

/**
 * Whether a request failed without reaching the server's handler, so sending it again cannot
 * apply it twice: refused for now (UNAVAILABLE, RATE_LIMITED), a 503 page from what stands in
 * front of the server (it is restarting), or no connection at all.
 */
function notDelivered(err: unknown): boolean {
  if (err instanceof GraphqlError) return err.code === "UNAVAILABLE" || err.code === "RATE_LIMITED";
  if (err instanceof HttpError) return err.status === 503;
  const cause = (err as { cause?: { code?: unknown } } | null)?.cause;
  return cause?.code === "ECONNREFUSED";
}

/**
 * Whether a failure says nothing about the request itself (worth sending again where a resend
 * cannot apply it twice): it never arrived, the connection broke or timed out, a gateway error,
 * or a few internal errors in a row. A refusal (BAD_USER_INPUT, CONFLICT, …) is not.
 */
function isTransient(err: unknown, attempt: number): boolean {
  if (notDelivered(err)) return true;
  if (err instanceof HttpError) return err.status >= 500 || err.status === 429 || err.status === 408;
  if (err instanceof GraphqlError) return err.code === "INTERNAL_SERVER_ERROR" && attempt < 3;
  return true; // fetch's network errors and timeouts
}

const ASSIGNMENT_FIELDS = `taskRun { id taskId attempt logLines } leaseToken leaseExpiresAt leaseSeconds command operator env gpus runId timeoutSeconds`;
/** What a runtime other than local processes needs as well (servers before it lack these fields). */
const CONTAINER_FIELDS = `image resources { cpu memoryMb gpus gpuType }`;
const LOG_FLUSH_MS = 250;
/** The server's limit on claimTasks' maxTasks; larger executors keep several claims in flight. */
const MAX_TASKS_PER_CLAIM = 100;
const LOG_BATCH_LINES = 500;
/** Most lines one appendTaskLogs call takes (the server's limit). */
const MAX_LOG_LINES_PER_CALL = 5_000;
/** The server cuts longer lines; cut here the same way, so a call is never larger than it needs. */
const MAX_LOG_LINE_CHARS = 16_000;
/** Characters of lines per call: well under the server's body limit and a proxy's usual 1 MB. */
const MAX_LOG_CALL_CHARS = 256_000;

/**
 * An attempt's lines as the appendTaskLogs calls that carry them: NUL removed (a variable holding
 * one is refused whole, before the server could strip it), lines cut as the server would cut
 * them, and calls bounded in lines and in size (5,000 lines of 16,000 characters were refused by
 * the body limit).
 */
export function logCalls(lines: readonly string[]): string[][] {
  const calls: string[][] = [];
  let call: string[] = [];
  let chars = 0;
  for (const raw of lines) {
    const noNul = raw.includes("\u0000") ? raw.replace(/\u0000/g, "") : raw;
    const line = noNul.length > MAX_LOG_LINE_CHARS ? `${noNul.slice(0, MAX_LOG_LINE_CHARS)}…` : noNul;
    if (call.length > 0 && (call.length >= MAX_LOG_LINES_PER_CALL || chars + line.length > MAX_LOG_CALL_CHARS)) {
      calls.push(call);
      call = [];
      chars = 0;
    }
    call.push(line);
    chars += line.length;
  }
  if (call.length > 0) calls.push(call);
  return calls;
}
/** One appendTaskLogs request's time limit (the outcome is reported after the logs). */
const LOG_CALL_TIMEOUT_MS = 30_000;
/**
 * How long a finished attempt's outcome waits, by default, for its last log lines to get through
 * (a restart, a database failover, calls that hang); past it the outcome is reported and the rest
 * dropped.
 */
const DEFAULT_LOG_DRAIN_SECONDS = 30;
/** Longest wait between two tries of reporting an outcome (or sending logs). */
const COMPLETION_RETRY_MAX_MS = 5_000;

/** Wait before try `attempt + 1`: doubling from 200 ms, at most COMPLETION_RETRY_MAX_MS. */
const retryDelayMs = (attempt: number) => Math.min(COMPLETION_RETRY_MAX_MS, 200 * 2 ** attempt);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** One completion request's time limit. */
const COMPLETION_TIMEOUT_MS = 30_000;
/** How long an outcome the server cannot take is retried before the executor gives up on it. */
const COMPLETION_RETRY_FOR_MS = 10 * 60_000;
/** A claim call's time limit beyond its long poll: one whose answer never comes is sent again. */
const CLAIM_TIMEOUT_MARGIN_MS = 30_000;
/** Wait before resending a claim call that failed. */
const CLAIM_RETRY_MS = 1_000;

/** Endpoint URL for a server given as base URL or as its /graphql endpoint. */
export function graphqlEndpoint(server: string): string {
  const url = new URL(server);
  if (!url.pathname.endsWith("/graphql")) url.pathname = `${url.pathname.replace(/\/$/, "")}/graphql`;
  return url.toString();
}

/**
 * The pull executor: registers its pool and resources, then keeps its `concurrency` slots busy:
 * free slots are claimed together with one long-poll claimTasks, each task runs through the
 * runtime (a local process, or a Kubernetes Job) while its logs are streamed and its lease
 * heartbeated, cancellation is forwarded, and outcomes are reported (completions that end
 * together share one completeTasks). `stop()` stops claiming and drains running tasks.
 */
export class ExecutorAgent {
  private readonly endpoint: string;
  private executorId: string | null = null;
  private stopping = false;
  /** Why the executor cannot go on (finished() rejects with it once nothing runs). */
  private fatal: Error | null = null;
  /** stopTasks() was called: running tasks are being stopped because the executor shuts down. */
  private stoppingTasks = false;
  private readonly claims = new Set<AbortController>();
  private readonly running = new Set<RunningAttempt>();
  private readonly runtime: AttemptRuntime;
  /** Slots running a task, and slots asked for by claims still in flight. */
  private busySlots = 0;
  private reservedSlots = 0;
  private idle: { promise: Promise<void>; resolve: () => void } | null = null;
  private readonly completions: CompletionBatcher<Completion>;
  private reregistering: Promise<void> | null = null;
  /** Whether the server takes numbered log lines (appendTaskLogs' fromLine); servers before it refuse the argument. */
  private logsNumbered = true;
  /** Whether the server takes claim ids (claimTasks' claimId); servers before it refuse the argument. */
  private claimIdsTaken = true;
  /** Whether the server takes the NOT_STARTED outcome; servers before it refuse the value. */
  private notStartedTaken = true;
  /** Task runs whose attempt this executor runs, so an answer holding one again never starts it twice. */
  private readonly runningTaskRuns = new Set<string>();
  /** Claiming paused after an attempt could not be set up here, until a probe passes. */
  private readonly setup = new SetupBackoff();
  private probeTimer: NodeJS.Timeout | null = null;
  gpus: GpuInfo[] = [];

  constructor(private readonly options: AgentOptions) {
    this.endpoint = graphqlEndpoint(options.server);
    this.runtime =
      options.runtime ??
      new LocalAttemptRuntime({
        gpus: options.gpus,
        workdirBase: options.workdirBase ?? os.tmpdir(),
        pipelineDir: path.resolve(options.pipelineDir ?? process.cwd()),
        taskBaseEnv: options.taskBaseEnv,
        graceMs: (options.graceSeconds ?? 10) * 1000,
        log: options.log,
      });
    this.completions = new CompletionBatcher<Completion>({
      // Bounded: a hung request would hold every later completion behind it (report() retries).
      many: (inputs) =>
        this.gql(`mutation($inputs: [CompleteTaskInput!]!) { completeTasks(inputs: $inputs) { id } }`, { inputs }, AbortSignal.timeout(COMPLETION_TIMEOUT_MS)).then(() => undefined),
      one: (input) => this.gql(`mutation($input: CompleteTaskInput!) { completeTask(input: $input) { id } }`, { input }, AbortSignal.timeout(COMPLETION_TIMEOUT_MS)).then(() => undefined),
    });
  }

  get id(): string | null {
    return this.executorId;
  }

  async start(): Promise<void> {
    await this.runtime.init();
    this.gpus = await this.runtime.gpus();
    await this.register();
    this.fillSlots();
  }

  /**
   * Registers (again): the server deletes executors that stayed OFFLINE past its retention, and a
   * claim for one answers NOT_FOUND; this executor then carries on under a new registration.
   */
  private async register(): Promise<void> {
    const input = {
      name: this.options.name ?? `${os.hostname()}-${process.pid}`,
      pool: this.options.pool,
      labels: this.options.labels ?? {},
      cpu: this.options.cpu ?? os.cpus().length,
      memoryMb: this.options.memoryMb ?? Math.floor(os.totalmem() / 1024 / 1024),
      gpus: this.gpus.map((g) => ({ index: g.index, model: g.model, memoryMb: g.memoryMb })),
    };
    const data = await this.gql<{ registerExecutor: { id: string } }>(`mutation($input: RegisterExecutorInput!) { registerExecutor(input: $input) { id } }`, { input });
    this.executorId = data.registerExecutor.id;
    this.options.log.info({ executorId: this.executorId, pool: this.options.pool, gpus: this.gpus.map((g) => g.index), concurrency: this.options.concurrency }, "executor registered");
  }

  /** Stops claiming (in-flight long-polls are abandoned) and waits for running tasks to finish. */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const c of this.claims) c.abort();
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = null;
    // A fatal error is for whoever waits in finished(); stopping itself went fine.
    await this.finished().catch(() => undefined);
  }

  /**
   * Stops the running tasks (SIGTERM to each process group, SIGKILL after the grace; a Kubernetes
   * Job is deleted) and reports them as failed, for an executor that must shut down without
   * waiting for them (a second SIGTERM/SIGINT). Left running, they would outlive the executor,
   * holding their GPUs.
   */
  stopTasks(): void {
    this.stoppingTasks = true;
    for (const proc of this.running) this.stopForShutdown(proc);
  }

  /** Processes stopped because the executor shuts down: FAILED whatever their exit code. */
  private readonly stoppedForShutdown = new WeakSet<RunningAttempt>();

  private stopForShutdown(proc: RunningAttempt): void {
    this.stoppedForShutdown.add(proc);
    proc.stop();
  }

  /** Resolves once stopping and nothing runs or claims any more (after stop()). */
  async finished(): Promise<void> {
    for (;;) {
      if (this.stopping && this.busySlots === 0 && this.reservedSlots === 0) {
        if (this.fatal) throw this.fatal;
        return;
      }
      this.idle ??= (() => {
        let resolve!: () => void;
        const promise = new Promise<void>((r) => (resolve = r));
        return { promise, resolve };
      })();
      await this.idle.promise;
    }
  }

  /** Something changed (a task ended, a claim came back): wake whoever waits in finished(). */
  private changed(): void {
    const idle = this.idle;
    this.idle = null;
    idle?.resolve();
  }

  /** Claims work for every slot that is neither running a task nor already asked for. */
  private fillSlots(): void {
    // Tasks claimed now could not be set up either: each would only go back to the queue.
    if (this.setup.paused) return;
    let free = this.options.concurrency - this.busySlots - this.reservedSlots;
    while (!this.stopping && free > 0) {
      const slots = Math.min(free, MAX_TASKS_PER_CLAIM);
      this.reservedSlots += slots;
      free -= slots;
      void this.claim(slots);
    }
  }

  /**
   * One claim call for `slots` free slots, sent until it gets an answer. It carries a claim id of
   * its own, the same in every resend: a resend after a failure that may have lost the answer (a
   * connection reset, the time limit, a 5xx) is answered by the server with the tasks the lost
   * answer held (with fresh credentials) rather than with other tasks, so those do not sit CLAIMED
   * by nobody until their lease runs out. A call that got an answer is never sent again: the next
   * one has a new id. The slots stay reserved while the call is retried.
   */
  private async claim(slots: number): Promise<void> {
    const abort = new AbortController();
    this.claims.add(abort);
    let assignments: Assignment[] = [];
    const claimId = crypto.randomUUID();
    const wait = this.options.waitSeconds ?? 20;
    try {
      for (let tries = 0; !this.stopping; tries++) {
        const claimedAs = this.executorId;
        const withId = this.claimIdsTaken;
        try {
          const data = await this.gql<{ claimTasks: Assignment[] }>(
            `mutation($id: ID!, $max: Int!, $wait: Int${withId ? ", $claimId: ID" : ""}) { claimTasks(executorId: $id, maxTasks: $max, waitSeconds: $wait${withId ? ", claimId: $claimId" : ""}) { ${ASSIGNMENT_FIELDS} ${this.runtime.needsContainerFields ? CONTAINER_FIELDS : ""} } }`,
            { id: claimedAs, max: slots, wait, ...(withId ? { claimId } : {}) },
            // A half-open connection would otherwise hold these slots for good.
            AbortSignal.any([abort.signal, AbortSignal.timeout(wait * 1000 + CLAIM_TIMEOUT_MARGIN_MS)]),
          );
          assignments = data.claimTasks;
          break;
        } catch (err) {
          if (this.stopping) break;
          if (withId && err instanceof GraphqlError && err.code === "GRAPHQL_VALIDATION_FAILED" && /\bclaimId\b/.test(err.message)) {
            // A server from before claim ids: the call was refused whole, so nothing was claimed.
            this.options.log.warn("the server takes no claim ids (an older release): a claim whose answer is lost leaves its tasks to the lease reaper");
            this.claimIdsTaken = false;
            continue;
          }
          if (err instanceof GraphqlError && err.code === "NOT_FOUND") {
            this.options.log.warn({ executorId: this.executorId }, "the server no longer knows this executor (deleted while offline); registering again");
            // Concurrent claims that all hear NOT_FOUND register once: only a claim made under the
            // current registration starts a new one.
            if (claimedAs === this.executorId) this.reregistering ??= this.register().finally(() => (this.reregistering = null));
            await this.reregistering?.catch((e: Error) => this.options.log.warn({ err: e.message }, "registering again failed; retrying"));
            // A new registration: the next call is a new claim (fillSlots gives it a new id).
            await sleep(CLAIM_RETRY_MS);
            break;
          }
          if (this.runtime.needsContainerFields && err instanceof GraphqlError && err.code === "GRAPHQL_VALIDATION_FAILED" && /\b(image|resources)\b/.test(err.message)) {
            // A server from before TaskAssignment.image/resources refuses every claim the same way:
            // retrying would only log this forever.
            this.fatal ??= new Error(`the server is too old for this runtime: its claimTasks answer has no task image and resources (${err.message}); upgrade the server, or run --runtime local`);
            this.options.log.error({ err: err.message }, "the server is too old for this runtime: stopping");
            this.stopping = true;
            for (const c of this.claims) c.abort();
            break;
          }
          // Sent again with the same claim id: if the server claimed tasks for the call whose answer
          // was lost, the resend gets them (a refusal claimed nothing, so reusing the id is harmless).
          this.options.log.warn({ err: (err as Error).message, claimId, tries: tries + 1 }, "claimTasks failed; sending it again in 1 s");
          await sleep(CLAIM_RETRY_MS);
        }
      }
    } finally {
      this.claims.delete(abort);
    }
    this.reservedSlots -= slots;
    for (const a of assignments) {
      if (this.runningTaskRuns.has(a.taskRun.id)) {
        // Never expected (a claim id is not reused once answered), but a task must not run twice here.
        this.options.log.error({ taskRunId: a.taskRun.id, claimId }, "a claim answer holds a task this executor already runs: not starting it again");
        continue;
      }
      this.runningTaskRuns.add(a.taskRun.id);
      this.busySlots++;
      void this.runTask(a)
        .catch((err: Error) => this.options.log.error({ err: err.message }, "task handling failed"))
        .finally(() => {
          this.runningTaskRuns.delete(a.taskRun.id);
          this.busySlots--;
          this.fillSlots();
          this.changed();
        });
    }
    this.fillSlots();
    this.changed();
  }

  /**
   * An attempt could not be set up here: stop claiming, and probe (growing waits, capped) until the
   * runtime can set attempts up again. Every failed probe is logged; it never gives up.
   */
  private setupFailed(error: string | null, log: Logger): void {
    const delayMs = this.setup.setupFailed();
    if (delayMs === null) return;
    log.warn({ err: error, probeInMs: delayMs }, `could not set up a task attempt on this executor (handed back to the queue): claiming nothing until a probe of ${this.probed()} passes`);
    this.scheduleProbe(delayMs);
  }

  /** What the runtime's probe checks, for the log. */
  private probed(): string {
    return this.runtime.probeSubject ?? "the work directory";
  }

  private scheduleProbe(delayMs: number): void {
    if (this.stopping) return;
    this.probeTimer = setTimeout(() => {
      this.probeTimer = null;
      if (this.stopping) return;
      Promise.resolve()
        .then(() => this.runtime.probe?.())
        .then(
          () => {
            this.setup.probeSucceeded();
            this.options.log.info({ failures: this.setup.consecutiveFailures }, `${this.probed()} is usable again: claiming`);
            this.fillSlots();
            this.changed();
          },
          (err: Error) => {
            const nextMs = this.setup.probeFailed();
            this.options.log.warn({ err: err.message, failures: this.setup.consecutiveFailures, probeInMs: nextMs }, `${this.probed()} is still unusable: claiming nothing`);
            this.scheduleProbe(nextMs);
          },
        );
    }, delayMs);
  }

  private async runTask(a: Assignment): Promise<void> {
    const log = this.options.log.child({ taskRunId: a.taskRun.id, task: a.taskRun.taskId, attempt: a.taskRun.attempt });
    const env: Record<string, string> = { ...a.env, MLGRAPH_URL: this.endpoint };
    let pending: string[] = [];
    let flushing: Promise<void> = Promise.resolve();
    let leaseLost = false;
    /** The outcome stopped waiting for the logs (logDrainSeconds): no more tries. */
    let logsAbandoned = false;
    // The task run's number of the next line to send; null once sending stopped for good (a
    // refusal, or a chunk given up on: later lines would leave a gap the server refuses).
    let nextLine: number | null = a.taskRun.logLines;
    const flush = () => {
      if (pending.length === 0 || leaseLost) return flushing;
      const lines = pending;
      pending = [];
      flushing = flushing.then(async () => {
        if (nextLine !== null) nextLine = await this.sendLogs(a.taskRun.id, a.leaseToken, nextLine, lines, log, () => leaseLost || logsAbandoned);
      });
      return flushing;
    };
    // The lease's length, counted from now, not its end by the server's clock compared with this
    // machine's (skew). Now is a little after the server granted it (the answer's transit time):
    // the margin below covers that.
    const leaseMs = Math.max(1000, a.leaseSeconds !== undefined ? a.leaseSeconds * 1000 : new Date(a.leaseExpiresAt).getTime() - Date.now());
    const beatEveryMs = Math.max(200, Math.floor(leaseMs / 3));
    const graceMs = (this.options.graceSeconds ?? 10) * 1000;
    const marginMs = Math.max(500, leaseMs / 10);
    log.info({ argv: a.command, gpus: a.gpus }, "task started");
    const proc = this.runtime.start({
      taskRunId: a.taskRun.id,
      taskId: a.taskRun.taskId,
      attempt: a.taskRun.attempt,
      command: a.command,
      env,
      timeoutSeconds: a.timeoutSeconds,
      image: a.image ?? null,
      resources: a.resources ?? { cpu: 1, memoryMb: 1024, gpus: a.gpus.length, gpuType: null },
      gpus: a.gpus,
      graceMs,
      // The server gives a timed-out attempt up one lease past its timeout (counted from the claim,
      // heartbeats or not) and hands its GPUs out again: the process must be gone by then, even
      // when the grace is long for the lease.
      timeoutGraceMs: Math.floor(leaseMs - marginMs),
      onLines: (lines) => {
        pending.push(...lines);
        if (pending.length >= LOG_BATCH_LINES) void flush();
      },
      log,
    });
    this.running.add(proc);
    if (this.stoppingTasks) this.stopForShutdown(proc);
    const flushTimer = setInterval(() => void flush(), LOG_FLUSH_MS);
    // The process must be gone before the server's lease runs out, SIGKILL included: stop it once
    // no heartbeat has been confirmed for `stopAfterMs`, and kill it `killWithinMs` later at most
    // (shorter than the configured grace when the grace is long for the lease).
    const stopAfterMs = Math.floor(Math.max(leaseMs / 2, leaseMs - graceMs - marginMs));
    const killWithinMs = Math.max(0, Math.min(graceMs, Math.floor(leaseMs - marginMs - stopAfterMs)));
    // When the last heartbeat the server answered was *sent*: its lease runs from a moment after.
    let leaseConfirmedAt = Date.now();
    let stopTimer: NodeJS.Timeout | undefined;
    let exited = false;
    // A timer of its own, not a check in the heartbeat: a heartbeat may hang rather than fail.
    const armSelfStop = () => {
      clearTimeout(stopTimer);
      stopTimer = setTimeout(() => {
        // Once the process has ended there is nothing to stop: the outcome is still reported (and
        // heartbeats kept going) until the server takes it or refuses it. Giving up here lost a
        // finished attempt when the server came back before its lease ran out.
        if (leaseLost || exited) return;
        // No heartbeat got through for most of a lease: the server gives the task up (or will as
        // soon as it is back) and may run it elsewhere. Stop, so that two attempts of one task
        // never run at once (a network partition, a server down longer than the lease).
        leaseLost = true;
        log.warn({ unconfirmedMs: Date.now() - leaseConfirmedAt, killWithinMs }, "lease expired without a heartbeat getting through: stopping the process");
        proc.stop(killWithinMs);
      }, Math.max(0, leaseConfirmedAt + stopAfterMs - Date.now()));
    };
    armSelfStop();
    const beat = async () => {
      if (leaseLost) return;
      const sentAt = Date.now();
      try {
        const data = await this.gql<{ heartbeatTask: { cancelRequested: boolean } }>(
          `mutation($input: HeartbeatInput!) { heartbeatTask(input: $input) { cancelRequested } }`,
          { input: { taskRunId: a.taskRun.id, leaseToken: a.leaseToken } },
          // A slow answer still counts (from when it was sent) as long as it comes before the stop.
          AbortSignal.timeout(Math.max(beatEveryMs, stopAfterMs)),
        );
        if (sentAt > leaseConfirmedAt) {
          leaseConfirmedAt = sentAt;
          armSelfStop();
        }
        if (data.heartbeatTask.cancelRequested) {
          log.info("cancellation requested: stopping the process");
          proc.cancel();
        }
      } catch (err) {
        if (err instanceof GraphqlError && (err.code === "CONFLICT" || err.code === "NOT_FOUND")) {
          // Another attempt owns the task now: stop this one and report nothing.
          leaseLost = true;
          log.warn("lease lost: stopping the process");
          proc.stop();
        } else {
          log.warn({ err: (err as Error).message }, "heartbeat failed");
        }
      }
    };
    void beat();
    // Heartbeats go on until the outcome is reported: log draining and completion retries keep
    // the lease, so a slow report never turns a finished attempt into a lost one.
    const heartbeatTimer = setInterval(() => void beat(), beatEveryMs);
    try {
      let result: AttemptResult;
      try {
        result = await proc.done;
        exited = true;
      } finally {
        clearInterval(flushTimer);
        this.running.delete(proc);
      }
      const drainMs = (this.options.logDrainSeconds ?? DEFAULT_LOG_DRAIN_SECONDS) * 1000;
      if (!(await settlesWithin(flush(), drainMs))) {
        logsAbandoned = true;
        log.warn({ waitedMs: drainMs }, "could not send logs: reporting the outcome without the last lines");
      }
      if (result.outcome === "NOT_STARTED") this.setupFailed(result.error, log);
      else this.setup.attemptStarted();
      if (leaseLost) return;
      if (result.outcome === "EXECUTOR_LOST") {
        // Not an outcome an executor reports: with heartbeats stopped, the server's reaper fails
        // the attempt as EXECUTOR_LOST once the lease runs out, and the retry policy decides.
        log.warn({ error: result.error }, "the attempt was lost (its pod or Job went away): leaving it to the lease reaper");
        return;
      }
      // A task stopped for the executor's shutdown did not finish, even if it caught SIGTERM and
      // exited 0 (saving a checkpoint, say): SUCCEEDED would release its dependents and on_success.
      const stoppedForShutdown = this.stoppedForShutdown.has(proc) && (result.outcome === "SUCCEEDED" || result.outcome === "FAILED");
      const outcome = stoppedForShutdown ? "FAILED" : result.outcome;
      const error = stoppedForShutdown ? `${result.error ?? `exited with ${result.exitCode}`} (stopped: the executor shut down)` : result.error;
      await this.report({ taskRunId: a.taskRun.id, leaseToken: a.leaseToken, outcome, exitCode: result.exitCode, error }, log, () => leaseLost);
    } finally {
      clearInterval(heartbeatTimer);
      clearTimeout(stopTimer);
    }
  }

  /**
   * Reports an attempt's outcome until the server has it. A failure that says nothing about the
   * attempt (network error, server restarting, UNAVAILABLE, an HTML error page) is retried with
   * backoff while the heartbeats keep the lease; a refusal (CONFLICT, NOT_FOUND: the attempt is
   * not this executor's any more, or an earlier try whose answer was lost already landed) ends it,
   * and so does losing the lease. After COMPLETION_RETRY_FOR_MS the executor gives up, and the
   * lease reaper decides (the attempt counts as lost).
   */
  private async report(completion: Completion, log: Logger, leaseLost: () => boolean): Promise<void> {
    const giveUpAt = Date.now() + COMPLETION_RETRY_FOR_MS;
    if (completion.outcome === "NOT_STARTED" && !this.notStartedTaken) completion = { ...completion, outcome: "FAILED" };
    for (let attempt = 0; ; attempt++) {
      try {
        await this.completions.submit(completion);
        log.info({ outcome: completion.outcome, exitCode: completion.exitCode }, "task finished");
        return;
      } catch (err) {
        // Refused as a value the enum lacks (BAD_USER_INPUT when it came in a variable, as here).
        if (completion.outcome === "NOT_STARTED" && err instanceof GraphqlError && (err.code === "BAD_USER_INPUT" || err.code === "GRAPHQL_VALIDATION_FAILED") && /NOT_STARTED.*TaskOutcome/.test(err.message)) {
          // A server from before NOT_STARTED: reported FAILED, as such servers expect (it uses a retry).
          this.notStartedTaken = false;
          completion = { ...completion, outcome: "FAILED" };
          continue;
        }
        // An internal error may be this completion's own fault: a few tries, not ten minutes. Any
        // answer that is not GraphQL (a proxy's error page) is tried again too: a resend of a
        // completion that landed is refused by its lease token.
        const transient = isTransient(err, attempt) || err instanceof HttpError;
        if (!transient || leaseLost() || Date.now() > giveUpAt) {
          log.warn({ err: (err as Error).message, outcome: completion.outcome, tries: attempt + 1 }, "completeTask refused or given up (a refusal after a lost answer means an earlier try landed)");
          return;
        }
        const delayMs = retryDelayMs(attempt);
        log.warn({ err: (err as Error).message, outcome: completion.outcome, retryInMs: delayMs }, "completeTask failed; retrying");
        await sleep(delayMs);
      }
    }
  }

  /**
   * Sends an attempt's log lines in calls the server takes (one output chunk can hold far more
   * lines than one call may: `seq 1 12000` lost all of them, refused as too many), each numbered
   * from `fromLine`, so a resend after a lost answer stores nothing twice. A failure that says
   * nothing about the lines (network error, server restarting, UNAVAILABLE) is therefore retried
   * with backoff while the lease holds and `stopSending` allows (a finished attempt's outcome waits
   * only so long); a refusal stops the sending. Each call has a time limit. Resolves with the next
   * line's number, or null once sending stopped (later lines would leave a gap).
   */
  private async sendLogs(taskRunId: string, leaseToken: string, fromLine: number, lines: string[], log: Logger, stopSending: () => boolean): Promise<number | null> {
    const giveUpAt = Date.now() + COMPLETION_RETRY_FOR_MS;
    let next = fromLine;
    const calls = logCalls(lines);
    for (const [callIndex, chunk] of calls.entries()) {
      for (let attempt = 0; ; attempt++) {
        const numbered = this.logsNumbered;
        try {
          await this.gql(
            numbered
              ? `mutation($id: ID!, $lease: String!, $lines: [String!]!, $from: Int) { appendTaskLogs(taskRunId: $id, leaseToken: $lease, lines: $lines, fromLine: $from) }`
              : `mutation($id: ID!, $lease: String!, $lines: [String!]!) { appendTaskLogs(taskRunId: $id, leaseToken: $lease, lines: $lines) }`,
            { id: taskRunId, lease: leaseToken, lines: chunk, ...(numbered ? { from: next } : {}) },
            AbortSignal.timeout(LOG_CALL_TIMEOUT_MS),
          );
          next += chunk.length;
          break;
        } catch (err) {
          if (numbered && err instanceof GraphqlError && err.code === "GRAPHQL_VALIDATION_FAILED") {
            this.logsNumbered = false;
            continue;
          }
          if (!numbered) {
            // A server from before fromLine: a resend there could store the lines twice, so only a
            // call that never reached it is sent again (for a while), and other failures drop the chunk.
            if (notDelivered(err) && !stopSending() && Date.now() < giveUpAt) {
              await sleep(retryDelayMs(attempt));
              continue;
            }
            log.warn({ err: (err as Error).message, lines: chunk.length }, "could not send logs");
            if (err instanceof GraphqlError && err.code === "CONFLICT") return null; // the lease is gone: so is every later chunk
            break;
          }
          if (err instanceof GraphqlError && err.code === "CONFLICT") {
            log.warn({ err: err.message }, "could not send logs: the lease is gone");
            return null;
          }
          if (!isTransient(err, attempt)) {
            // Refused whole (stored nothing): these lines are lost, the later ones still go, numbered
            // from the same line (no gap). Previously one refusal silenced the rest of the attempt.
            log.warn({ err: (err as Error).message, lines: chunk.length }, "could not send logs: the server refused them");
            break;
          }
          if (stopSending() || Date.now() > giveUpAt) {
            // Maybe stored, maybe not: the numbering is unknown from here, so nothing more is sent.
            const left = calls.slice(callIndex).reduce((n, c) => n + c.length, 0);
            log.warn({ err: (err as Error).message, lines: left }, "could not send logs; the attempt's later lines are not sent either");
            return null;
          }
          await sleep(retryDelayMs(attempt));
        }
      }
    }
    return next;
  }

  private async gql<T>(query: string, variables: Record<string, unknown>, signal?: AbortSignal): Promise<T> {
    const res = await fetch(this.endpoint, {
      method: "POST",
      headers: { "content-type": "application/json", ...(this.options.token ? { authorization: `Bearer ${this.options.token}` } : {}) },
      body: JSON.stringify({ query, variables }),
      signal,
    });
    let body: { data?: T; errors?: { message: string; extensions?: { code?: string } }[] };
    try {
      body = (await res.json()) as typeof body;
    } catch (err) {
      if (err instanceof SyntaxError) throw new HttpError(res.status);
      throw err;
    }
    if (body.errors?.length) throw new GraphqlError(body.errors[0]!.message, body.errors[0]!.extensions?.code);
    if (!body.data) throw new Error(`no data in answer (HTTP ${res.status})`);
    return body.data;
  }
}
