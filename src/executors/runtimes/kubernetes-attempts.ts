import { StringDecoder } from "node:string_decoder";
import { Writable } from "node:stream";
import type { CoreV1Api, CoreV1Event, KubeConfig, LogOptions, V1Pod, V1Toleration } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { ConfigError } from "../../config.js";
import type { GpuInfo } from "../gpu-detection.js";
import { settlesWithin } from "../settles-within.js";
import type { AttemptRequest, AttemptResult, AttemptRuntime, RunningAttempt } from "./attempt-runtime.js";
import { LogLineDedupe } from "./kubernetes-log.js";
import { EXECUTOR_LABEL, KubernetesJobRuntime, TASK_CONTAINER, clusterCannotTakeJobsNow, httpCode, jobStatusToOutcome, labelValue, type JobHandle, type JobOutcome, type JobsApi, type SecretsApi } from "./kubernetes-job.js";

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
  /** The model its GPU slots register with (tasks with that `gpu_type` are claimed); default "unknown". */
  gpuType?: string;
  /** The node label a task's `gpu_type` selects on (default nvidia.com/gpu.product); null: none. */
  gpuTypeLabel?: string | null;
  /** Node labels every pod must land on. */
  nodeSelector?: Record<string, string>;
  /** Taints every pod tolerates. */
  tolerations?: V1Toleration[];
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
  core: Pick<CoreV1Api, "listNamespacedPod" | "listNamespacedEvent" | "deleteCollectionNamespacedPod">;
  /** Set once listing events was refused (RBAC): FailedCreate is not looked for any more. */
  eventsForbidden: boolean;
  /** Reads (follows) a container's log into a stream; resolves with the request's abort handle once it answered. */
  readLog(namespace: string, pod: string, container: string, into: Writable, options: LogOptions): Promise<AbortController>;
}

/**
 * Attempts as Kubernetes Jobs (`mlgraph executor --runtime kubernetes`): one Job per attempt in
 * the task's image, followed by polling the Job (and its pod, for image and scheduling errors)
 * until it ends; the pod's log is followed into the task's log. The cluster schedules CPU,
 * memory and GPUs; the executor only bounds how many Jobs (and GPUs) it has in flight.
 */
export class KubernetesAttemptRuntime implements AttemptRuntime {
  readonly needsContainerFields = true;
  readonly probeSubject = "the Kubernetes API";
  private clients: Clients | null = null;
  private listOneJob: (() => Promise<unknown>) | null = null;

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
    const timedCore = {
      listNamespacedPod: (p) => withTimeout(core.listNamespacedPod(p), ms, "listing the Job's pods"),
      listNamespacedEvent: (p) => withTimeout(core.listNamespacedEvent(p), ms, "listing the Job's events"),
      deleteCollectionNamespacedPod: (p) => withTimeout(core.deleteCollectionNamespacedPod(p), ms, "deleting the Job's pods"),
    } as Pick<CoreV1Api, "listNamespacedPod" | "listNamespacedEvent" | "deleteCollectionNamespacedPod">;
    const secrets: SecretsApi = {
      createNamespacedSecret: (p) => withTimeout(core.createNamespacedSecret(p), ms, "creating the attempt's Secret"),
      patchNamespacedSecret: (p) => withTimeout(core.patchNamespacedSecret(p), ms, "making the attempt's Secret its Job's dependent"),
      deleteNamespacedSecret: (p) => withTimeout(core.deleteNamespacedSecret(p), ms, "deleting the attempt's Secret"),
      listNamespacedSecret: (p) => withTimeout(core.listNamespacedSecret(p), ms, "listing Secrets"),
    };
    const executorLabel = labelValue(this.options.executorName);
    this.clients = {
      jobs: new KubernetesJobRuntime(api, {
        namespace,
        ...(this.options.serviceAccount !== undefined && { serviceAccount: this.options.serviceAccount }),
        labels: { [EXECUTOR_LABEL]: executorLabel },
        secrets,
        ...(this.options.gpuTypeLabel !== undefined && { gpuTypeLabel: this.options.gpuTypeLabel }),
        ...(this.options.nodeSelector !== undefined && { nodeSelector: this.options.nodeSelector }),
        ...(this.options.tolerations !== undefined && { tolerations: this.options.tolerations }),
      }),
      core: timedCore,
      eventsForbidden: false,
      readLog: (ns, pod, container, into, options) => log.log(ns, pod, container, into, options),
    };

    // Fail before registering: an executor that cannot reach the cluster, or may not use the
    // namespace, would otherwise claim the pool's tasks and fail every one of them.
    this.listOneJob = () => api.listNamespacedJob({ namespace, limit: 1 });
    try {
      await this.listOneJob();
    } catch (err) {
      throw new ConfigError(
        `--runtime kubernetes: cannot list Jobs in namespace ${JSON.stringify(namespace)} (${errorText(err)}); check --namespace, --kubeconfig ` +
          `(default: $KUBECONFIG, ~/.kube/config, then the in-cluster service account) and that the account may create, read, list and delete Jobs, ` +
          `create, patch, list and delete Secrets, list pods and events and read pods' logs there`,
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
    // Its Secrets: most go with their Jobs, but not one created just before it died (the Job not
    // created yet, or not yet its owner). Every attempt of a predecessor is over: none is needed.
    // Listing them is also where an account that may not use Secrets is told so, before registering.
    let secretsLeft;
    try {
      secretsLeft = await secrets.listNamespacedSecret({ namespace, labelSelector: `${EXECUTOR_LABEL}=${executorLabel}` });
    } catch (err) {
      throw new ConfigError(
        `--runtime kubernetes: cannot list Secrets in namespace ${JSON.stringify(namespace)} (${errorText(err)}); each attempt's task token is passed to its pod in a Secret: ` +
          `the account needs to create, patch, list and delete Secrets there`,
      );
    }
    for (const secret of secretsLeft.items) {
      const name = secret.metadata!.name!;
      this.options.log.info({ secret: name, namespace, executor: this.options.executorName }, "deleting a task token Secret left by a previous executor of this name");
      await this.clients.jobs.deleteSecret(name);
    }
  }

  async gpus(): Promise<GpuInfo[]> {
    // Slots, not devices: the server counts them so that the Jobs in flight ask for at most this
    // many GPUs; which card a pod gets is the cluster's business (nvidia.com/gpu).
    // A task with a gpu_type is claimed only by slots of that model: --gpu-type names the one the
    // pods' nodes have (the task's gpu_type then selects them, gpuTypeLabel).
    return Array.from({ length: this.options.gpus }, (_, index) => ({ index, model: this.options.gpuType ?? "unknown", memoryMb: null }));
  }

  /** After an attempt came back NOT_STARTED: the API server answers again (a quota is found out by the next create). */
  async probe(): Promise<void> {
    if (!this.listOneJob) throw new Error("KubernetesAttemptRuntime.probe before init");
    await this.listOneJob();
  }

  start(req: AttemptRequest): RunningAttempt {
    if (!this.clients) throw new Error("KubernetesAttemptRuntime.start before init");
    return new KubernetesAttempt(this.clients, this.options, req);
  }
}

class KubernetesAttempt implements RunningAttempt {
  readonly done: Promise<AttemptResult>;
  private stopRequested: "stop" | "cancel" | null = null;
  /** The shortest grace a stop asked for, when shorter than the pod's own. */
  private stopGraceMs: number | undefined;
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

  /**
   * The pod's grace is its terminationGracePeriodSeconds (the executor's --grace-seconds); a
   * shorter `graceMs` (the agent's stop when no heartbeat got through: the pod must be gone before
   * the lease runs out) is passed to the deletion of the Job's pods.
   */
  stop(graceMs?: number): void {
    if (graceMs !== undefined) this.stopGraceMs = Math.min(this.stopGraceMs ?? Infinity, graceMs);
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
      // A cluster that cannot take Jobs now is this executor's problem, not the task's: handed
      // back without using a retry. A refusal of the Job itself (400/422: bad image name,
      // resources; 403 not for quota: RBAC) is the task's or the operator's, and fails it.
      const outcome = clusterCannotTakeJobsNow(err) ? "NOT_STARTED" : "FAILED";
      return { outcome, exitCode: null, error: `could not create the Kubernetes Job: ${errorText(err)}` };
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
        const deleted = await this.deleteJob(handle, this.shortGraceSeconds());
        await logs.end(2000);
        return this.stoppedResult(deleted ? `Job ${handle.name} deleted` : `Job ${handle.name} not deleted yet (the executor goes on trying)`);
      }
      let read: Awaited<ReturnType<KubernetesAttempt["read"]>> | "stopped" | null = null;
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
          // A running container's log is followed (again, when a follow dropped); a finished one's
          // is read by logs.end().
          if (container?.state?.running) logs.follow(pod.metadata!.name!);
          else if (terminated) logs.at(pod.metadata!.name!);
        }
        if (outcome.state === "succeeded" || outcome.state === "failed") {
          if (pod && !stuckReason(pod)) logs.at(pod.metadata!.name!);
          await logs.end(this.options.logEndWaitMs ?? LOG_END_WAIT_MS);
          return toResult(outcome, exitCode, req.timeoutSeconds);
        }
        const stuck = pod ? stuckReason(pod) : read.failedCreate;
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
            const where = pod ? `pod ${pod.metadata!.name}` : `Job ${handle.name}, no pod`;
            // A pod refused for a used-up ResourceQuota: the cluster is full, the task is not at
            // fault (handed back, as when the Job itself is refused for a quota).
            const outcome = stuck.reason === "FailedCreate" && /exceeded quota/i.test(stuck.message) ? "NOT_STARTED" : "FAILED";
            return { outcome, exitCode: null, error: `${stuck.reason}: ${stuck.message} (${where}, for ${Math.round((Date.now() - since) / 1000)} s)` };
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

  private async read(handle: JobHandle): Promise<{ outcome: JobOutcome; pods: V1Pod[]; failedCreate: StuckReason | null }> {
    const outcome = await this.clients.jobs.status(handle);
    const pods = (await this.clients.core.listNamespacedPod({ namespace: handle.namespace, labelSelector: `job-name=${handle.name}` })).items;
    const failedCreate = pods.length === 0 && (outcome.state === "pending" || outcome.state === "running") ? await this.failedCreate(handle) : null;
    return { outcome, pods, failedCreate };
  }

  /**
   * Why the Job controller cannot create the Job's pod (a ResourceQuota exceeded, an admission
   * webhook's denial, a LimitRange), from the Job's newest `FailedCreate` event: a Job has no
   * condition for it. Asked only while the Job has no pod. Null when there is none, or when the
   * events cannot be read (not allowed: said once, then not asked again).
   */
  private async failedCreate(handle: JobHandle): Promise<StuckReason | null> {
    if (this.clients.eventsForbidden) return null;
    try {
      const events = await this.clients.core.listNamespacedEvent({
        namespace: handle.namespace,
        fieldSelector: `involvedObject.kind=Job,involvedObject.name=${handle.name},reason=FailedCreate`,
      });
      const when = (e: CoreV1Event) => new Date(e.lastTimestamp ?? e.series?.lastObservedTime ?? e.eventTime ?? e.firstTimestamp ?? 0).getTime();
      const newest = events.items.sort((a, b) => when(b) - when(a))[0];
      return newest ? { reason: "FailedCreate", message: newest.message ?? "the Job controller could not create the pod" } : null;
    } catch (err) {
      const code = httpCode(err);
      if (code === 401 || code === 403) {
        this.clients.eventsForbidden = true;
        this.req.log.warn({ err: errorText(err) }, "may not list events: a pod that can never be created (quota, admission) waits for the Job's deadline");
      } else {
        this.req.log.warn({ err: errorText(err), job: handle.name }, "could not list the Job's events");
      }
      return null;
    }
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
          if (code !== undefined && code < 500 && code !== 429) {
            // Refused: not the Job, but its Secret (created first) may exist.
            await this.deleteJob(this.clients.jobs.handle(input.taskRunId, input.attempt));
            throw err;
          }
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
  private async deleteJob(handle: JobHandle, podGraceSeconds?: number): Promise<boolean> {
    const deleted = await settlesWithin(this.deleteUntilGone(handle, podGraceSeconds), DELETE_WAIT_MS);
    if (!deleted) this.req.log.error({ job: handle.name }, "could not delete the Job yet: reporting the outcome, deleting on in the background");
    return deleted;
  }

  /**
   * The grace for the pods of a stopped attempt, in whole seconds (at least 1: 0 would remove the
   * pod from the API at once, whatever the kubelet still runs), when a stop asked for less than
   * the pod's terminationGracePeriodSeconds; else undefined (the pod's own).
   */
  private shortGraceSeconds(): number | undefined {
    if (this.stopGraceMs === undefined || this.stopRequested !== "stop") return undefined;
    const seconds = Math.max(1, Math.floor(this.stopGraceMs / 1000));
    return seconds < Math.ceil(this.req.graceMs / 1000) ? seconds : undefined;
  }

  /**
   * Deletes the Job, and with `podGraceSeconds` its pods too: the garbage collector deletes a
   * deleted Job's pods with their own terminationGracePeriodSeconds (a Job deletion's
   * gracePeriodSeconds is not passed on to its dependents), and a second deletion of a pod with a
   * shorter grace shortens it. A refusal of that (an account that may not delete pods) leaves the
   * pods their own grace.
   */
  private async deleteUntilGone(handle: JobHandle, podGraceSeconds?: number): Promise<void> {
    let podsDone = podGraceSeconds === undefined;
    for (let tries = 1, delayMs = 200; ; tries++, delayMs = Math.min(Math.round(delayMs * 1.5), DELETE_RETRY_MAX_MS)) {
      try {
        await this.clients.jobs.cancel(handle);
        if (!podsDone) {
          try {
            await this.clients.core.deleteCollectionNamespacedPod({ namespace: handle.namespace, labelSelector: `job-name=${handle.name}`, gracePeriodSeconds: podGraceSeconds! });
          } catch (err) {
            const code = httpCode(err);
            if (code !== 401 && code !== 403) throw err;
            this.req.log.warn({ err: errorText(err), job: handle.name }, "may not delete pods: the Job's pod keeps its own termination grace");
          }
          podsDone = true;
        }
        this.req.log.info({ job: handle.name, tries, podGraceSeconds }, "kubernetes job deleted");
        return;
      } catch (err) {
        this.req.log.warn({ err: errorText(err), job: handle.name, tries, retryInMs: delayMs }, "could not delete the Job; retrying");
        await new Promise((r) => setTimeout(r, delayMs));
      }
    }
  }
}

interface StuckReason {
  reason: string;
  message: string;
}

/** A pod waiting on something that will not fix itself, or that no node can take. */
function stuckReason(pod: V1Pod): StuckReason | null {
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

/**
 * Follows the task container's log into the task's log. A follow that ends while the container
 * runs (the API server or the kubelet dropped it) is reopened at the next poll; after the
 * container ended the log is read once more, so lines a dropped follow missed at the end are
 * there too. Each read starts at the second of the newest line forwarded, with timestamps, and
 * the lines it repeats are dropped (LogLineDedupe).
 */
class LogFollower {
  private pod: string | null = null;
  private closed = false;
  /** The follow open now; null when none is (never opened, or it ended). */
  private current: LogRead | null = null;
  /** Bumped when a read is abandoned: what it still delivers is ignored. */
  private generation = 0;
  private readonly lines = new LogLineDedupe();
  /** The unterminated last line of the read that ended last (the container's last words without a newline). */
  private leftover: { text: string; keep: (line: string) => string | null } | null = null;
  private follows = 0;

  constructor(
    private readonly clients: Clients,
    private readonly namespace: string,
    private readonly onLines: (lines: string[]) => void,
    private readonly log: AttemptRequest["log"],
  ) {}

  /** The container runs: follow its log, unless a follow is open. */
  follow(pod: string): void {
    this.pod = pod;
    if (this.closed || this.current) return;
    if (this.follows++ > 0) this.log.info({ pod, sinceTime: this.lines.sinceTime() }, "the pod's log follow ended while the container runs: reopening it");
    const read = this.open(true);
    this.current = read;
    void read.ended.then(() => {
      if (this.current === read) this.current = null;
    });
  }

  /** The container has started (it may have ended already): end() reads its log. */
  at(pod: string): void {
    this.pod = pod;
  }

  /**
   * Waits up to `waitMs` for the follow to end (the container ended), stops it, then reads what
   * came after the last line forwarded once more (when the container ever started), hands on the
   * last unterminated line, and stops.
   */
  async end(waitMs: number): Promise<void> {
    if (this.closed) return;
    if (this.current) {
      await settlesWithin(this.current.ended, waitMs);
      this.current?.abort();
      this.current = null;
    }
    if (this.pod) {
      const rest = this.open(false);
      if (!(await settlesWithin(rest.ended, Math.max(waitMs, 2000)))) rest.abort();
    }
    const leftover = this.leftover;
    const text = leftover ? leftover.keep(leftover.text) : null;
    if (text) this.onLines([text]);
    this.closed = true;
  }

  private open(follow: boolean): LogRead {
    const gen = ++this.generation;
    const keep = this.lines.read();
    const sinceTime = this.lines.sinceTime();
    /** A character split across two chunks is decoded whole. */
    const decoder = new StringDecoder("utf8");
    let partial = "";
    let received = false;
    let finish!: () => void;
    const ended = new Promise<void>((resolve) => (finish = resolve));
    let request: AbortController | null = null;
    let aborted = false;
    const sink = new Writable({
      write: (chunk: Buffer, _enc, callback) => {
        if (gen === this.generation && !this.closed) {
          if (!received) {
            received = true;
            // This read repeats the earlier one's unterminated line, complete or as far as it goes now.
            this.leftover = null;
          }
          const parts = (partial + decoder.write(chunk)).split(/\r?\n/);
          partial = parts.pop() ?? "";
          const fresh: string[] = [];
          for (const line of parts) {
            const text = keep(line);
            if (text !== null) fresh.push(text);
          }
          if (fresh.length) this.onLines(fresh);
        }
        callback();
      },
    });
    const done = () => {
      if (gen === this.generation && !this.closed) {
        const rest = partial + decoder.end();
        if (rest) this.leftover = { text: rest, keep };
      }
      finish();
    };
    sink.on("finish", done);
    sink.on("error", done);
    // client-node pipes the response into the sink without an error handler on the response: one
    // here makes an abort (and a dropped connection) end the read, not the process, and a dropped
    // stream counts as ended instead of being waited for.
    sink.on("pipe", (source) => source.on("error", done));
    this.clients
      .readLog(this.namespace, this.pod!, TASK_CONTAINER, sink, { follow, timestamps: true, ...(sinceTime !== undefined && { sinceTime }) })
      .then(
        (controller) => {
          request = controller;
          if (aborted) controller.abort();
        },
        (err: unknown) => {
          // A deleted attempt's pod may be gone already: its log with it.
          const level = httpCode(err) === 404 ? "info" : "warn";
          this.log[level]({ err: errorText(err), pod: this.pod, follow }, "could not read the pod's log");
          finish();
        },
      );
    return {
      ended,
      abort: () => {
        aborted = true;
        if (gen === this.generation) this.generation++;
        request?.abort();
        finish();
      },
    };
  }
}

interface LogRead {
  /** Resolves when the read ended: the stream closed, dropped or was aborted, or could not be opened. */
  readonly ended: Promise<void>;
  abort(): void;
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
