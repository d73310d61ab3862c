import { Writable } from "node:stream";
import type { CoreV1Api, KubeConfig, V1Pod } from "@kubernetes/client-node";
import type { GpuInfo } from "../gpu-detection.js";
import type { AttemptRequest, AttemptResult, AttemptRuntime, RunningAttempt } from "./attempt-runtime.js";
import { KubernetesJobRuntime, type JobHandle, type JobOutcome } from "./kubernetes-job.js";

export interface KubernetesAttemptRuntimeOptions {
  namespace: string;
  serviceAccount?: string;
  /** A kubeconfig file; default: in-cluster, then $KUBECONFIG / ~/.kube/config. */
  kubeconfig?: string;
  /** How many GPUs this executor's Jobs may request at once (registered as that many GPU slots). */
  gpus: number;
  /** Between two reads of the Job and its pod. */
  pollMs?: number;
  /** How long a pod may sit in an image or config error before the attempt fails. */
  podErrorGraceMs?: number;
  /** How long a pod may stay unschedulable (no node fits it) before the attempt fails. */
  unschedulableGraceMs?: number;
}

/** Container waiting reasons that do not go away by themselves (a typo in the image, a missing secret). */
const STUCK_REASONS = new Set(["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"]);
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
    this.clients = {
      jobs: new KubernetesJobRuntime(kc.makeApiClient(k8s.BatchV1Api), {
        namespace: this.options.namespace,
        ...(this.options.serviceAccount !== undefined && { serviceAccount: this.options.serviceAccount }),
      }),
      core: kc.makeApiClient(k8s.CoreV1Api),
      followLog: (namespace, pod, container, into) => log.log(namespace, pod, container, into, { follow: true }),
    };
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

  constructor(
    private readonly clients: Clients,
    private readonly options: KubernetesAttemptRuntimeOptions,
    private readonly req: AttemptRequest,
  ) {
    this.done = this.run().catch((err: Error): AttemptResult => ({ outcome: "FAILED", exitCode: null, error: `mlgraph executor (kubernetes): ${err.message}` }));
  }

  stop(): void {
    this.stopRequested ??= "stop";
    this.wake?.();
  }

  cancel(): void {
    if (this.stopRequested !== "cancel") this.stopRequested = "cancel";
    this.wake?.();
  }

  private async run(): Promise<AttemptResult> {
    const { req } = this;
    if (!req.image) {
      return { outcome: "FAILED", exitCode: null, error: "image: the task has no container image; a Kubernetes executor runs each task in the image its spec names (tasks[].image)" };
    }
    const env = { ...req.env };
    for (const name of LOCAL_GPU_VARIABLES) delete env[name];
    let handle: JobHandle;
    try {
      handle = await this.clients.jobs.start({
        taskRunId: req.taskRunId,
        attempt: req.attempt,
        image: req.image,
        command: req.command,
        env,
        resources: { cpu: req.resources.cpu, memory_mb: req.resources.memoryMb, gpus: req.resources.gpus },
        ...(req.resources.gpuType !== null && { gpuType: req.resources.gpuType }),
        activeDeadlineSeconds: req.timeoutSeconds,
      });
    } catch (err) {
      req.log.warn({ err: errorText(err) }, "could not create the Kubernetes Job");
      return { outcome: "FAILED", exitCode: null, error: `could not create the Kubernetes Job: ${errorText(err)}` };
    }
    req.log.info({ job: handle.name, namespace: handle.namespace }, "kubernetes job created");
    const logs = new LogFollower(this.clients, handle.namespace, req.onLines, req.log);
    const pollMs = this.options.pollMs ?? 2000;
    /** Since when the pod has been stuck, per reason. */
    const stuckSince = new Map<string, number>();
    let exitCode: number | null = null;
    for (;;) {
      if (this.stopRequested) {
        await this.deleteJob(handle);
        await logs.end(2000);
        return this.stopRequested === "cancel"
          ? { outcome: "CANCELLED", exitCode: null, error: "cancelled" }
          : { outcome: "FAILED", exitCode: null, error: `stopped: Job ${handle.name} deleted` };
      }
      let outcome: JobOutcome | null = null;
      let pods: V1Pod[] = [];
      try {
        outcome = await this.clients.jobs.status(handle);
        pods = (await this.clients.core.listNamespacedPod({ namespace: handle.namespace, labelSelector: `job-name=${handle.name}` })).items;
      } catch (err) {
        // The API server restarting, a network blip: the Job runs on without us; read again later.
        req.log.warn({ err: errorText(err), job: handle.name }, "could not read the Job; retrying");
      }
      const pod = pods[0];
      if (pod) {
        const container = pod.status?.containerStatuses?.[0];
        const terminated = container?.state?.terminated;
        if (terminated) exitCode = terminated.exitCode;
        // A container that has started has a log to follow (a finished one's log is sent whole).
        if (container?.state?.running || terminated) logs.follow(pod.metadata!.name!, container!.name);
      }
      if (outcome && (outcome.state === "succeeded" || outcome.state === "failed")) {
        if (pod) logs.follow(pod.metadata!.name!, pod.status?.containerStatuses?.[0]?.name ?? "task");
        await logs.end(LOG_END_WAIT_MS);
        return toResult(outcome, exitCode, req.timeoutSeconds);
      }
      const stuck = pod ? stuckReason(pod) : null;
      for (const key of stuckSince.keys()) if (key !== stuck?.reason) stuckSince.delete(key);
      if (stuck) {
        const since = stuckSince.get(stuck.reason) ?? Date.now();
        stuckSince.set(stuck.reason, since);
        const graceMs = stuck.reason === "Unschedulable" ? this.options.unschedulableGraceMs ?? 600_000 : this.options.podErrorGraceMs ?? 60_000;
        if (Date.now() - since >= graceMs) {
          req.log.warn({ job: handle.name, reason: stuck.reason }, "the pod is stuck: deleting the Job");
          await this.deleteJob(handle);
          await logs.end(0);
          return { outcome: "FAILED", exitCode: null, error: `${stuck.reason}: ${stuck.message} (pod ${pod!.metadata!.name}, for ${Math.round((Date.now() - since) / 1000)} s)` };
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

  /** Deletes the Job and its pods (Background propagation); tried a few times, then left to its TTL and deadline. */
  private async deleteJob(handle: JobHandle): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.clients.jobs.cancel(handle);
        this.req.log.info({ job: handle.name }, "kubernetes job deleted");
        return;
      } catch (err) {
        if (attempt >= 5) {
          this.req.log.error({ err: errorText(err), job: handle.name }, "could not delete the Job; its activeDeadlineSeconds still ends it");
          return;
        }
        await new Promise((r) => setTimeout(r, 500 * attempt));
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
          const parts = (this.partial + chunk.toString("utf8")).split(/\r?\n/);
          this.partial = parts.pop() ?? "";
          if (parts.length) this.onLines(parts);
        }
        callback();
      },
    });
    sink.on("finish", finish);
    sink.on("error", finish);
    // Not aborted when given up on: client-node pipes the response into the sink without an error
    // handler on the response, so an abort would be an unhandled stream error. The API server ends
    // the stream when the container ends or its pod is deleted; lines after end() are dropped.
    this.clients.followLog(this.namespace, pod, container, sink).catch((err: unknown) => {
      this.log.warn({ err: errorText(err), pod }, "could not follow the pod's log");
      finish();
    });
  }

  /** Waits up to `waitMs` for the log to end (the container ended), then hands on what is left and stops. */
  async end(waitMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.ended, new Promise<void>((r) => (timer = setTimeout(r, waitMs)))]);
    clearTimeout(timer);
    if (!this.closed && this.partial) this.onLines([this.partial]);
    this.closed = true;
    this.partial = "";
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
