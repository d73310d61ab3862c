import { StringDecoder } from "node:string_decoder";
import { Writable } from "node:stream";
import type { CoreV1Api, KubeConfig, V1Pod } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { ConfigError } from "../../config.js";
import type { GpuInfo } from "../gpu-detection.js";
import { settlesWithin } from "../settles-within.js";
import type { AttemptRequest, AttemptResult, AttemptRuntime, RunningAttempt } from "./attempt-runtime.js";
import { EXECUTOR_LABEL, KubernetesJobRuntime, TASK_CONTAINER, httpCode, jobStatusToOutcome, labelValue, type JobHandle, type JobOutcome, type JobsApi } from "./kubernetes-job.js";

export interface KubernetesAttemptRuntimeOptions {
  namespace: string;
  serviceAccount?: string;
  /** A kubeconfig file; default: $KUBECONFIG, then ~/.kube/config, then in-cluster (client-node's loadFromDefault). */
  kubeconfig?: string;
  /**
   * This executor's name, the same across its restarts: its Jobs are labelled with it
   * (EXECUTOR_LABEL), and init() deletes the unfinished ones a predecessor of that name left.
   */
  executorName: string;
  /** How many GPUs this executor's Jobs may request at once (registered as that many GPU slots). */
  gpus: number;
  /** Between two reads of the Job and its pod. */
  pollMs?: number;
  /** How long a pod may sit in an image or config error before the attempt fails. */
  podErrorGraceMs?: number;
  /** How long a pod may stay unschedulable (no node fits it) before the attempt fails. */
  unschedulableGraceMs?: number;
  /** How long a finished attempt waits for its log stream to end before aborting it (default 10 s). */
  logEndWaitMs?: number;
  /** One API call's time limit (default 30 s). */
  requestTimeoutMs?: number;
  log: Logger;
}

/** Container waiting reasons that do not go away by themselves (a typo in the image, a missing secret). */
const STUCK_REASONS = new Set(["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"]);
/** A failing pull alternates between these two: one stuck state, timed once. */
const IMAGE_PULL_REASONS = new Set(["ErrImagePull", "ImagePullBackOff"]);
/** How long the outcome of a stopped attempt waits for its Job's deletion; the deletion goes on after it. */
const DELETE_WAIT_MS = 10_000;
/** Longest wait between two tries of deleting a Job. */
const DELETE_RETRY_MAX_MS = 30_000;
/** How long a create that fails on the way (5xx, network, timeout) is retried. */
const CREATE_RETRY_FOR_MS = 60_000;
/** How long a finished attempt waits for its log stream to end (the API server closes it when the container ended). */
const LOG_END_WAIT_MS = 10_000;
/** Variables that name local GPU slots: in a pod the device plugin decides what CUDA sees. */
const LOCAL_GPU_VARIABLES = ["CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"];

interface Clients {
  jobs: KubernetesJobRuntime;
  core: CoreV1Api;
  /** Follows a container's log into a stream; resolves with the request's abort handle. */
  followLog(namespace: string, pod: string, container: string, into: Writable): Promise<AbortController>;
}

/**
 * Attempts as Kubernetes Jobs (`mlgraph executor --runtime kubernetes`): one Job per attempt in
 * the task's image, followed by polling the Job (and its pod, for image and scheduling errors)
 * until it ends; the pod's log is followed into the task's log. The cluster schedules CPU,
 * memory and GPUs; the executor only bounds how many Jobs (and GPUs) it has in flight.
 */
export class KubernetesAttemptRuntime implements AttemptRuntime {
  readonly needsContainerFields = true;
  private clients: Clients | null = null;

  constructor(private readonly options: KubernetesAttemptRuntimeOptions) {}

  async init(): Promise<void> {
    // client-node is ESM-only: loaded when a cluster is actually used.
    const k8s = await import("@kubernetes/client-node");
    const kc: KubeConfig = new k8s.KubeConfig();
    if (this.options.kubeconfig) kc.loadFromFile(this.options.kubeconfig);
    else kc.loadFromDefault();
    const log = new k8s.Log(kc);
    const { namespace } = this.options;
    // Every call is bounded: a read that hangs (a half-open connection) would otherwise hold an
    // attempt's polling, its stop and its deletion forever. The request itself is left to the
    // socket's own end; only the wait for it is cut.
    const ms = this.options.requestTimeoutMs ?? 30_000;
    const batch = kc.makeApiClient(k8s.BatchV1Api);
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const api: JobsApi = {
      createNamespacedJob: (p) => withTimeout(batch.createNamespacedJob(p), ms, "creating the Job"),
      readNamespacedJobStatus: (p) => withTimeout(batch.readNamespacedJobStatus(p), ms, "reading the Job"),
      deleteNamespacedJob: (p) => withTimeout(batch.deleteNamespacedJob(p), ms, "deleting the Job"),
      listNamespacedJob: (p) => withTimeout(batch.listNamespacedJob(p), ms, "listing Jobs"),
    };
    const timedCore = { listNamespacedPod: (p) => withTimeout(core.listNamespacedPod(p), ms, "listing the Job's pods") } as Pick<CoreV1Api, "listNamespacedPod">;
    const executorLabel = labelValue(this.options.executorName);
    this.clients = {
      jobs: new KubernetesJobRuntime(api, {
        namespace,
        ...(this.options.serviceAccount !== undefined && { serviceAccount: this.options.serviceAccount }),
        labels: { [EXECUTOR_LABEL]: executorLabel },
      }),
      core: timedCore as CoreV1Api,
      followLog: (ns, pod, container, into) => log.log(ns, pod, container, into, { follow: true }),
    };

    // Fail before registering: an executor that cannot reach the cluster, or may not use the
    // namespace, would otherwise claim the pool's tasks and fail every one of them.
    try {
      await api.listNamespacedJob({ namespace, limit: 1 });
    } catch (err) {
      throw new ConfigError(
        `--runtime kubernetes: cannot list Jobs in namespace ${JSON.stringify(namespace)} (${errorText(err)}); check --namespace, --kubeconfig ` +
          `(default: $KUBECONFIG, ~/.kube/config, then the in-cluster service account) and that the account may create, read, list and delete Jobs and list pods and read their logs there`,
      );
    }

    // Jobs a predecessor of this name left running (killed with SIGKILL, OOM-killed): the server
    // gives their attempts up when the leases run out and runs the tasks again, so these would run
    // twice. Finished ones are left to their TTL (their logs stay readable).
    const left = await api.listNamespacedJob({ namespace, labelSelector: `${EXECUTOR_LABEL}=${executorLabel}` });
    for (const job of left.items) {
      const state = jobStatusToOutcome(job.status).state;
      if (state !== "pending" && state !== "running") continue;
      const name = job.metadata!.name!;
      this.options.log.warn({ job: name, namespace, executor: this.options.executorName }, "deleting a Job left running by a previous executor of this name");
      await this.clients.jobs.cancel({ name, namespace });
    }
  }

  async gpus(): Promise<GpuInfo[]> {
    // Slots, not devices: the server counts them so that the Jobs in flight ask for at most this
    // many GPUs; which card a pod gets is the cluster's business (nvidia.com/gpu).
    return Array.from({ length: this.options.gpus }, (_, index) => ({ index, model: "unknown", memoryMb: null }));
  }

  start(req: AttemptRequest): RunningAttempt {
    if (!this.clients) throw new Error("KubernetesAttemptRuntime.start before init");
    return new KubernetesAttempt(this.clients, this.options, req);
  }
}

class KubernetesAttempt implements RunningAttempt {
  readonly done: Promise<AttemptResult>;
  private stopRequested: "stop" | "cancel" | null = null;
  private wake: (() => void) | null = null;
  /** Resolves when stop() or cancel() is called: a read in flight is not waited for. */
  private readonly stopped: Promise<"stopped">;
  private onStopped!: () => void;

  constructor(
    private readonly clients: Clients,
    private readonly options: KubernetesAttemptRuntimeOptions,
    private readonly req: AttemptRequest,
  ) {
    this.stopped = new Promise((resolve) => (this.onStopped = () => resolve("stopped")));
    // Run from the next microtask: the agent stops an attempt right after starting it when the
    // executor is already shutting down, and no Job must be created for it then.
    this.done = Promise.resolve()
      .then(() => this.run())
      .catch((err: Error): AttemptResult => ({ outcome: "FAILED", exitCode: null, error: `mlgraph executor (kubernetes): ${err.message}` }));
  }

  /** The pod's grace is its terminationGracePeriodSeconds (the executor's --grace-seconds). */
  stop(): void {
    this.stopRequested ??= "stop";
    this.onStopped();
    this.wake?.();
  }

  cancel(): void {
    if (this.stopRequested !== "cancel") this.stopRequested = "cancel";
    this.onStopped();
    this.wake?.();
  }

  private stoppedResult(detail: string): AttemptResult {
    return this.stopRequested === "cancel" ? { outcome: "CANCELLED", exitCode: null, error: "cancelled" } : { outcome: "FAILED", exitCode: null, error: `stopped: ${detail}` };
  }

  private async run(): Promise<AttemptResult> {
    const { req } = this;
    if (!req.image) {
      return { outcome: "FAILED", exitCode: null, error: "image: the task has no container image; a Kubernetes executor runs each task in the image its spec names (tasks[].image)" };
    }
    if (this.stopRequested) return this.stoppedResult("before its Job was created");
    const env = { ...req.env };
    for (const name of LOCAL_GPU_VARIABLES) delete env[name];
    let handle: JobHandle | null;
    try {
      handle = await this.createJob({
        taskRunId: req.taskRunId,
        attempt: req.attempt,
        image: req.image,
        command: req.command,
        env,
        resources: { cpu: req.resources.cpu, memory_mb: req.resources.memoryMb, gpus: req.resources.gpus },
        ...(req.resources.gpuType !== null && { gpuType: req.resources.gpuType }),
        activeDeadlineSeconds: req.timeoutSeconds,
        // The executor's --grace-seconds, as for a local process: SIGTERM, then SIGKILL after it.
        terminationGracePeriodSeconds: Math.ceil(req.graceMs / 1000),
      });
    } catch (err) {
      req.log.warn({ err: errorText(err) }, "could not create the Kubernetes Job");
      return { outcome: "FAILED", exitCode: null, error: `could not create the Kubernetes Job: ${errorText(err)}` };
    }
    if (!handle) return this.stoppedResult("before its Job was created");
    req.log.info({ job: handle.name, namespace: handle.namespace }, "kubernetes job created");
    const logs = new LogFollower(this.clients, handle.namespace, req.onLines, req.log);
    const pollMs = this.options.pollMs ?? 2000;
    /** Since when the pod has been stuck, per reason. */
    const stuckSince = new Map<string, number>();
    let exitCode: number | null = null;
    for (;;) {
      if (this.stopRequested) {
        const deleted = await this.deleteJob(handle);
        await logs.end(2000);
        return this.stoppedResult(deleted ? `Job ${handle.name} deleted` : `Job ${handle.name} not deleted yet (the executor goes on trying)`);
      }
      let read: { outcome: JobOutcome; pods: V1Pod[] } | "stopped" | null = null;
      try {
        read = await Promise.race([this.read(handle), this.stopped]);
      } catch (err) {
        // The API server restarting, a network blip: the Job runs on without us; read again later.
        req.log.warn({ err: errorText(err), job: handle.name }, "could not read the Job; retrying");
      }
      if (read === "stopped") continue;
      // Nothing is concluded from a failed read: stuck timers run on.
      if (read) {
        const { outcome, pods } = read;
        const pod = pods[0];
        if (pod) {
          const container = pod.status?.containerStatuses?.find((c) => c.name === TASK_CONTAINER);
          const terminated = container?.state?.terminated;
          if (terminated) exitCode = terminated.exitCode;
          // A container that has started has a log to follow (a finished one's log is sent whole).
          if (container?.state?.running || terminated) logs.follow(pod.metadata!.name!, TASK_CONTAINER);
        }
        if (outcome.state === "succeeded" || outcome.state === "failed") {
          if (pod) logs.follow(pod.metadata!.name!, TASK_CONTAINER);
          await logs.end(this.options.logEndWaitMs ?? LOG_END_WAIT_MS);
          return toResult(outcome, exitCode, req.timeoutSeconds);
        }
        const stuck = pod ? stuckReason(pod) : null;
        const stuckKey = stuck && IMAGE_PULL_REASONS.has(stuck.reason) ? "image pull" : stuck?.reason;
        for (const key of stuckSince.keys()) if (key !== stuckKey) stuckSince.delete(key);
        if (stuck && stuckKey) {
          const since = stuckSince.get(stuckKey) ?? Date.now();
          stuckSince.set(stuckKey, since);
          const graceMs = stuck.reason === "Unschedulable" ? this.options.unschedulableGraceMs ?? 600_000 : this.options.podErrorGraceMs ?? 60_000;
          if (Date.now() - since >= graceMs) {
            req.log.warn({ job: handle.name, reason: stuck.reason }, "the pod is stuck: deleting the Job");
            await this.deleteJob(handle);
            await logs.end(0);
            return { outcome: "FAILED", exitCode: null, error: `${stuck.reason}: ${stuck.message} (pod ${pod!.metadata!.name}, for ${Math.round((Date.now() - since) / 1000)} s)` };
          }
        }
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, pollMs);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  private async read(handle: JobHandle): Promise<{ outcome: JobOutcome; pods: V1Pod[] }> {
    const outcome = await this.clients.jobs.status(handle);
    const pods = (await this.clients.core.listNamespacedPod({ namespace: handle.namespace, labelSelector: `job-name=${handle.name}` })).items;
    return { outcome, pods };
  }

  /**
   * Creates the attempt's Job; a create that failed on the way (5xx, network, timeout) is tried
   * again for CREATE_RETRY_FOR_MS: the name is deterministic and an existing Job (409) is taken,
   * so a create that went through but whose answer was lost does not start a second Job. Null
   * when stopped meanwhile. Given up after such a failure, a Job that may exist is deleted.
   */
  private async createJob(input: Parameters<KubernetesJobRuntime["start"]>[0]): Promise<JobHandle | null> {
    const deadline = Date.now() + CREATE_RETRY_FOR_MS;
    let uncertain = false;
    for (let delayMs = 500; ; delayMs = Math.min(delayMs * 2, 5000)) {
      let failure: unknown;
      if (!this.stopRequested) {
        try {
          return await this.clients.jobs.start(input);
        } catch (err) {
          const code = httpCode(err);
          if (code !== undefined && code < 500 && code !== 429) throw err; // refused: nothing was created
          uncertain = true;
          failure = err;
        }
      }
      if (this.stopRequested || Date.now() + delayMs > deadline) {
        if (uncertain) await this.deleteJob(this.clients.jobs.handle(input.taskRunId, input.attempt));
        if (this.stopRequested) return null;
        throw failure;
      }
      this.req.log.warn({ err: errorText(failure), retryInMs: delayMs }, "could not create the Kubernetes Job; retrying");
      await Promise.race([new Promise((r) => setTimeout(r, delayMs)), this.stopped]);
    }
  }

  /**
   * Deletes the Job and its pods (Background propagation), tried until the API server takes it
   * or the Job is gone: true when that happened within DELETE_WAIT_MS; false when the outcome must
   * go out first, the deletion going on in the background (an executor that exits before it ends
   * leaves the Job to its successor's cleanup, its deadline and TTL).
   */
  private async deleteJob(handle: JobHandle): Promise<boolean> {
    const deleted = await settlesWithin(this.deleteUntilGone(handle), DELETE_WAIT_MS);
    if (!deleted) this.req.log.error({ job: handle.name }, "could not delete the Job yet: reporting the outcome, deleting on in the background");
    return deleted;
  }

  private async deleteUntilGone(handle: JobHandle): Promise<void> {
    for (let tries = 1, delayMs = 200; ; tries++, delayMs = Math.min(Math.round(delayMs * 1.5), DELETE_RETRY_MAX_MS)) {
      try {
        await this.clients.jobs.cancel(handle);
        this.req.log.info({ job: handle.name, tries }, "kubernetes job deleted");
        return;
      } catch (err) {
        this.req.log.warn({ err: errorText(err), job: handle.name, tries, retryInMs: delayMs }, "could not delete the Job; retrying");
        await new Promise((r) => setTimeout(r, delayMs));
      }
    }
  }
}

/** A pod waiting on something that will not fix itself, or that no node can take. */
function stuckReason(pod: V1Pod): { reason: string; message: string } | null {
  for (const c of pod.status?.containerStatuses ?? []) {
    const waiting = c.state?.waiting;
    if (waiting?.reason && STUCK_REASONS.has(waiting.reason)) return { reason: waiting.reason, message: waiting.message ?? `container ${c.name} is waiting` };
  }
  const scheduled = pod.status?.conditions?.find((c) => c.type === "PodScheduled");
  if (scheduled?.status === "False" && scheduled.reason === "Unschedulable") return { reason: "Unschedulable", message: scheduled.message ?? "no node can run the pod" };
  return null;
}

function toResult(outcome: JobOutcome & { state: "succeeded" | "failed" }, exitCode: number | null, timeoutSeconds: number): AttemptResult {
  if (outcome.state === "succeeded") return { outcome: "SUCCEEDED", exitCode: exitCode ?? 0, error: null };
  const why = `${outcome.reason}${outcome.message ? `: ${outcome.message}` : ""}`;
  switch (outcome.failureKind) {
    case "TIMED_OUT":
      return { outcome: "TIMED_OUT", exitCode, error: `timed out after ${timeoutSeconds} s (Job ${why})` };
    case "EXECUTOR_LOST":
      return { outcome: "EXECUTOR_LOST", exitCode, error: why };
    default:
      return { outcome: "FAILED", exitCode, error: exitCode !== null ? `exited with ${exitCode} (Job ${why})` : `Job ${why}` };
  }
}

/** Follows one pod's container log (once) and hands its complete lines on. */
class LogFollower {
  private started = false;
  private closed = false;
  private ended: Promise<void> = Promise.resolve();
  private partial = "";
  /** A character split across two chunks is decoded whole. */
  private readonly decoder = new StringDecoder("utf8");
  private request: AbortController | null = null;

  constructor(
    private readonly clients: Clients,
    private readonly namespace: string,
    private readonly onLines: (lines: string[]) => void,
    private readonly log: AttemptRequest["log"],
  ) {}

  follow(pod: string, container: string): void {
    if (this.started || this.closed) return;
    this.started = true;
    let finish!: () => void;
    this.ended = new Promise<void>((r) => (finish = r));
    const sink = new Writable({
      write: (chunk: Buffer, _enc, callback) => {
        if (!this.closed) {
          const parts = (this.partial + this.decoder.write(chunk)).split(/\r?\n/);
          this.partial = parts.pop() ?? "";
          if (parts.length) this.onLines(parts);
        }
        callback();
      },
    });
    sink.on("finish", finish);
    sink.on("error", finish);
    // client-node pipes the response into the sink without an error handler on the response: one
    // here makes the abort in end() (and a dropped connection) end the follow, not the process,
    // and a dropped stream counts as ended instead of being waited for.
    sink.on("pipe", (source) => source.on("error", finish));
    this.clients.followLog(this.namespace, pod, container, sink).then(
      (request) => {
        this.request = request;
        if (this.closed) request.abort();
      },
      (err: unknown) => {
        this.log.warn({ err: errorText(err), pod }, "could not follow the pod's log");
        finish();
      },
    );
  }

  /** Waits up to `waitMs` for the log to end (the container ended), then hands on what is left and stops following. */
  async end(waitMs: number): Promise<void> {
    await settlesWithin(this.ended, waitMs);
    const rest = this.partial + this.decoder.end();
    if (!this.closed && rest) this.onLines([rest]);
    this.closed = true;
    this.partial = "";
    this.request?.abort();
  }
}

function errorText(err: unknown): string {
  const e = err as { code?: unknown; body?: unknown; message?: string };
  if (typeof e?.code === "number" && e.body !== undefined) {
    const body = typeof e.body === "string" ? e.body : JSON.stringify(e.body);
    return `HTTP ${e.code}: ${body.slice(0, 500)}`;
  }
  return e?.message ?? String(err);
}

/** `call`, or a rejection once `ms` have passed without its answer. */
function withTimeout<T>(call: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer from the API server in ${ms / 1000} s`)), ms)));
  return Promise.race([call, timeout]).finally(() => clearTimeout(timer));
}
