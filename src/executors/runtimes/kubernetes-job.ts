import { createHash } from "node:crypto";
// Types only: @kubernetes/client-node is ESM-only, so the runtime loads it with import() when a
// cluster is actually used, and the manifest code stays loadable everywhere (jest included).
import type { BatchV1Api, CoreV1Api, KubeConfig, V1EnvVar, V1Job, V1JobStatus, V1Secret, V1Toleration } from "@kubernetes/client-node";
import { DomainError } from "../../services/errors.js";
import type { FailureKind } from "../../scheduler/retry-policy.js";

/** What one attempt of one task needs to run as a Kubernetes Job. */
export interface JobManifestInput {
  taskRunId: string;
  /** 1-based attempt number; each attempt is its own Job. */
  attempt: number;
  image: string;
  /** Full argv (the container's entrypoint is replaced). */
  command: string[];
  env: Record<string, string>;
  resources: { cpu: number; memory_mb: number; gpus: number };
  /** Node label value of `gpuTypeLabel`, e.g. "NVIDIA-H100-80GB-HBM3". */
  gpuType?: string;
  /** The node label a GPU task's `gpuType` selects on (default GPU_PRODUCT_LABEL); null: none. */
  gpuTypeLabel?: string | null;
  /** Node labels every pod must land on (the executor's --node-selector). */
  nodeSelector?: Record<string, string>;
  /** Taints every pod tolerates (the executor's --toleration), beside the GPU one of GPU pods. */
  tolerations?: V1Toleration[];
  namespace: string;
  /** Without one, no service account token is mounted: task code talks to mlgraph, not to the cluster. */
  serviceAccount?: string;
  /** The task's timeout; Kubernetes kills the pod and marks the Job DeadlineExceeded. */
  activeDeadlineSeconds: number;
  /** Finished Jobs are garbage-collected after this long (default 1 hour). */
  ttlSecondsAfterFinished?: number;
  /** Extra labels (values sanitized like the built-in ones). */
  labels?: Record<string, string>;
  /** Between SIGTERM and SIGKILL when the pod is deleted (the executor's --grace-seconds); Kubernetes' default (30 s) without it. */
  terminationGracePeriodSeconds?: number;
  /**
   * A Secret holding the variables of SECRET_ENV (buildSecretManifest): they are taken from it
   * (`valueFrom.secretKeyRef`) instead of standing in the Job's spec. Without one, every variable
   * is a plain value.
   */
  secretName?: string;
}

/** Variables that stand in the attempt's Secret, not in the Job: whoever may read Jobs must not read them. */
export const SECRET_ENV = ["MLGRAPH_TOKEN"];

export const TASK_RUN_ID_LABEL = "mlgraph.io/task-run-id";
export const ATTEMPT_LABEL = "mlgraph.io/attempt";
export const GPU_RESOURCE = "nvidia.com/gpu";
export const GPU_PRODUCT_LABEL = "nvidia.com/gpu.product";
/** The executor that created the Job: a restarted executor of the same name deletes the Jobs left running. */
export const EXECUTOR_LABEL = "mlgraph.io/executor";
/** The task's container (a pod may have others, injected sidecars, listed before it). */
export const TASK_CONTAINER = "task";

/**
 * Name of the Job for an attempt: DNS-1123 label, at most 63 characters (the Job controller
 * copies it into a pod label, whose limit that is), deterministic so a re-sent create for the
 * same attempt conflicts instead of starting a second copy.
 */
export function jobName(taskRunId: string, attempt: number): string {
  const suffix = `-a${attempt}`;
  const slug = dnsSlug(taskRunId);
  const room = 63 - "mlgraph-".length - suffix.length;
  if (slug.length <= room && slug.length > 0) return `mlgraph-${slug}${suffix}`;
  // Too long (or nothing usable): keep a readable prefix and make it unique with a hash.
  const hash = createHash("sha256").update(taskRunId).digest("hex").slice(0, 10);
  const prefix = slug.slice(0, Math.max(0, room - hash.length - 1)).replace(/-+$/, "");
  return `mlgraph-${prefix ? `${prefix}-` : ""}${hash}${suffix}`;
}

function dnsSlug(text: string): string {
  return text.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/-{2,}/g, "-").replace(/^-+|-+$/g, "");
}

/** A label value: at most 63 of [A-Za-z0-9._-], starting and ending alphanumeric. */
export function labelValue(text: string): string {
  const cleaned = text.replace(/[^A-Za-z0-9._-]+/g, "-").slice(0, 63);
  return cleaned.replace(/^[^A-Za-z0-9]+/, "").replace(/[^A-Za-z0-9]+$/, "");
}

/** Kubernetes CPU quantity: whole cores as "2", fractions in millicores ("500m"). */
export function cpuQuantity(cores: number): string {
  const milli = Math.max(1, Math.round(cores * 1000));
  return milli % 1000 === 0 ? String(milli / 1000) : `${milli}m`;
}

/**
 * A `batch/v1` Job running one attempt of a task. Kubernetes never retries (`backoffLimit: 0`,
 * `restartPolicy: Never`): mlgraph's retry policy decides, and each retry is a new Job.
 */
export function buildJobManifest(input: JobManifestInput): V1Job {
  if (!input.image) throw new DomainError("BAD_USER_INPUT", "image: a Kubernetes task needs a container image", "image");
  if (input.command.length === 0) throw new DomainError("BAD_USER_INPUT", "command: must not be empty", "command");
  if (!Number.isInteger(input.attempt) || input.attempt < 1) throw new RangeError(`attempt must be a positive integer, got ${input.attempt}`);
  if (!Number.isInteger(input.activeDeadlineSeconds) || input.activeDeadlineSeconds < 1) {
    throw new RangeError(`activeDeadlineSeconds must be a positive integer, got ${input.activeDeadlineSeconds}`);
  }

  const labels = attemptLabels(input);
  const gpus = input.resources.gpus;
  const memory = `${input.resources.memory_mb}Mi`;
  const { secretName } = input;
  const gpuTypeLabel = input.gpuTypeLabel === undefined ? GPU_PRODUCT_LABEL : input.gpuTypeLabel;
  const nodeSelector = { ...input.nodeSelector, ...(gpus > 0 && input.gpuType !== undefined && gpuTypeLabel !== null && { [gpuTypeLabel]: input.gpuType }) };
  // GPU nodes are commonly tainted so only GPU pods land there.
  const tolerations: V1Toleration[] = [...(gpus > 0 ? [{ key: GPU_RESOURCE, operator: "Exists", effect: "NoSchedule" }] : []), ...(input.tolerations ?? [])];
  const env: V1EnvVar[] = Object.keys(input.env)
    .sort()
    .map((name) => (secretName !== undefined && SECRET_ENV.includes(name) ? { name, valueFrom: { secretKeyRef: { name: secretName, key: name } } } : { name, value: input.env[name]! }));

  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name: jobName(input.taskRunId, input.attempt),
      namespace: input.namespace,
      labels,
      // Label values are cut to 63 characters; the annotation keeps the exact id.
      annotations: { [TASK_RUN_ID_LABEL]: input.taskRunId },
    },
    spec: {
      backoffLimit: 0,
      activeDeadlineSeconds: input.activeDeadlineSeconds,
      ttlSecondsAfterFinished: input.ttlSecondsAfterFinished ?? 3600,
      // Tells an evicted/preempted pod (node lost, spot reclaim) from a failing task: the Job
      // then fails with reason PodFailurePolicy naming DisruptionTarget, mapped to EXECUTOR_LOST.
      podFailurePolicy: {
        rules: [{ action: "FailJob", onPodConditions: [{ type: "DisruptionTarget", status: "True" }] }],
      },
      template: {
        metadata: { labels },
        spec: {
          restartPolicy: "Never",
          ...(input.terminationGracePeriodSeconds !== undefined && { terminationGracePeriodSeconds: input.terminationGracePeriodSeconds }),
          ...(input.serviceAccount !== undefined && { serviceAccountName: input.serviceAccount }),
          automountServiceAccountToken: input.serviceAccount !== undefined,
          // Service-link env vars would mix the namespace's services into the task's environment.
          enableServiceLinks: false,
          ...(Object.keys(nodeSelector).length > 0 && { nodeSelector }),
          ...(tolerations.length > 0 && { tolerations }),
          containers: [
            {
              name: TASK_CONTAINER,
              image: input.image,
              command: [...input.command],
              env,
              resources: {
                // No CPU limit: CFS throttling slows data loaders for no gain on a dedicated request.
                requests: { cpu: cpuQuantity(input.resources.cpu), memory, ...(gpus > 0 && { [GPU_RESOURCE]: String(gpus) }) },
                limits: { memory, ...(gpus > 0 && { [GPU_RESOURCE]: String(gpus) }) },
              },
            },
          ],
        },
      },
    },
  };
}

function attemptLabels(input: Pick<JobManifestInput, "labels" | "taskRunId" | "attempt">): Record<string, string> {
  return {
    ...Object.fromEntries(Object.entries(input.labels ?? {}).map(([k, v]) => [k, labelValue(v)])),
    "app.kubernetes.io/managed-by": "mlgraph",
    [TASK_RUN_ID_LABEL]: labelValue(input.taskRunId),
    [ATTEMPT_LABEL]: String(input.attempt),
  };
}

/**
 * The attempt's Secret: the variables of SECRET_ENV (the task-scoped token), labelled like its
 * Job (a successor executor finds the ones it left), named like it, immutable (the kubelet need
 * not watch it).
 */
export function buildSecretManifest(input: Pick<JobManifestInput, "labels" | "taskRunId" | "attempt" | "env" | "namespace">): V1Secret {
  const data = Object.fromEntries(SECRET_ENV.filter((name) => input.env[name] !== undefined).map((name) => [name, Buffer.from(input.env[name]!).toString("base64")]));
  return {
    apiVersion: "v1",
    kind: "Secret",
    type: "Opaque",
    immutable: true,
    metadata: {
      name: jobName(input.taskRunId, input.attempt),
      namespace: input.namespace,
      labels: attemptLabels(input),
      annotations: { [TASK_RUN_ID_LABEL]: input.taskRunId },
    },
    data,
  };
}

/**
 * A toleration written as kubectl writes taints: `key=value:Effect` (Equal), `key:Effect`
 * (Exists), `key=value` or `key` (any effect).
 */
export function parseToleration(text: string): V1Toleration {
  const m = /^([A-Za-z0-9][-A-Za-z0-9_./]*)(?:=([-A-Za-z0-9_.]*))?(?::(NoSchedule|PreferNoSchedule|NoExecute))?$/.exec(text);
  if (!m) throw new DomainError("BAD_USER_INPUT", `expected key[=value][:NoSchedule|PreferNoSchedule|NoExecute], got ${JSON.stringify(text)}`, "toleration");
  const [, key, value, effect] = m;
  return { key: key!, ...(value !== undefined ? { operator: "Equal", value } : { operator: "Exists" }), ...(effect !== undefined && { effect }) };
}

/** Where a Job stands, in mlgraph's terms. */
export type JobOutcome =
  | { state: "pending" }
  | { state: "running" }
  | { state: "succeeded" }
  | { state: "failed"; failureKind: Exclude<FailureKind, "CANCELLED">; reason: string; message?: string };

/**
 * Maps a Job's status to an outcome. Terminal conditions decide (Complete / SuccessCriteriaMet,
 * Failed / FailureTarget); `DeadlineExceeded` is a timeout, a disruption of the pod is a lost
 * executor, anything else a failed task. Without a terminal condition the Job is running once a
 * pod is ready, else pending (e.g. waiting for a GPU node).
 */
export function jobStatusToOutcome(status: V1JobStatus | undefined): JobOutcome {
  const conditions = (status?.conditions ?? []).filter((c) => c.status === "True");
  if (conditions.some((c) => c.type === "Complete" || c.type === "SuccessCriteriaMet")) return { state: "succeeded" };
  const failed = conditions.find((c) => c.type === "Failed") ?? conditions.find((c) => c.type === "FailureTarget");
  if (failed) {
    const reason = failed.reason ?? "Failed";
    const message = failed.message;
    let failureKind: Exclude<FailureKind, "CANCELLED"> = "FAILED";
    if (reason === "DeadlineExceeded") failureKind = "TIMED_OUT";
    else if (reason === "PodFailurePolicy" && message?.includes("DisruptionTarget")) failureKind = "EXECUTOR_LOST";
    return { state: "failed", failureKind, reason, ...(message !== undefined && { message }) };
  }
  if ((status?.ready ?? 0) > 0) return { state: "running" };
  // Older API servers do not report `ready`; an active pod is then taken as running.
  if (status?.ready === undefined && (status?.active ?? 0) > 0) return { state: "running" };
  // A pod that finished but whose terminal condition is not written yet is still "running".
  if ((status?.succeeded ?? 0) > 0 || (status?.failed ?? 0) > 0) return { state: "running" };
  return { state: "pending" };
}

/** The BatchV1Api calls the runtime uses (a fake can stand in for tests). */
export type JobsApi = Pick<BatchV1Api, "createNamespacedJob" | "readNamespacedJobStatus" | "deleteNamespacedJob" | "listNamespacedJob">;
/** The CoreV1Api calls for the attempts' Secrets. */
export type SecretsApi = Pick<CoreV1Api, "createNamespacedSecret" | "patchNamespacedSecret" | "deleteNamespacedSecret" | "listNamespacedSecret">;

export interface KubernetesJobRuntimeOptions {
  namespace: string;
  serviceAccount?: string;
  ttlSecondsAfterFinished?: number;
  /** Labels on every Job (e.g. EXECUTOR_LABEL). */
  labels?: Record<string, string>;
  /** With it, SECRET_ENV goes into a Secret per attempt, owned by its Job; without, into the Job's env. */
  secrets?: SecretsApi;
  /** See JobManifestInput. */
  gpuTypeLabel?: string | null;
  nodeSelector?: Record<string, string>;
  tolerations?: V1Toleration[];
}

/** Reference to a started Job. */
export interface JobHandle {
  name: string;
  namespace: string;
}

/** Runs task attempts as Kubernetes Jobs through @kubernetes/client-node 1.x (object-style params). */
export class KubernetesJobRuntime {
  constructor(
    private readonly api: JobsApi,
    private readonly options: KubernetesJobRuntimeOptions,
  ) {}

  /** Builds the API client from a KubeConfig (default: loadFromDefault: $KUBECONFIG, ~/.kube/config, then in-cluster). */
  static async fromKubeConfig(options: KubernetesJobRuntimeOptions & { kubeConfig?: KubeConfig }): Promise<KubernetesJobRuntime> {
    const k8s = await import("@kubernetes/client-node");
    let kc = options.kubeConfig;
    if (!kc) {
      kc = new k8s.KubeConfig();
      kc.loadFromDefault();
    }
    return new KubernetesJobRuntime(kc.makeApiClient(k8s.BatchV1Api), options);
  }

  /**
   * Creates the Job for an attempt. Creating the same attempt twice (an executor that restarted
   * after sending the create) finds the existing Job instead of failing. With `secrets`: first the
   * attempt's Secret (so the pod never waits for it), then the Job, then the Secret is made the
   * Job's dependent (ownerReferences), so the garbage collector deletes it with the Job. A
   * failure on the way leaves what was created: `cancel` deletes the Job and the Secret, and a
   * successor executor's start deletes the Secrets of this executor's name.
   */
  async start(input: Omit<JobManifestInput, "namespace" | "serviceAccount" | "ttlSecondsAfterFinished">): Promise<JobHandle> {
    const inNamespace = {
      ...input,
      ...(this.options.labels !== undefined && { labels: { ...this.options.labels, ...input.labels } }),
      namespace: this.options.namespace,
    };
    const secrets = this.options.secrets;
    const secret = secrets && SECRET_ENV.some((name) => input.env[name] !== undefined) ? buildSecretManifest(inNamespace) : null;
    const body = buildJobManifest({
      ...inNamespace,
      ...(this.options.serviceAccount !== undefined && { serviceAccount: this.options.serviceAccount }),
      ...(this.options.ttlSecondsAfterFinished !== undefined && { ttlSecondsAfterFinished: this.options.ttlSecondsAfterFinished }),
      ...(secret && { secretName: secret.metadata!.name! }),
      ...(this.options.gpuTypeLabel !== undefined && { gpuTypeLabel: this.options.gpuTypeLabel }),
      ...(this.options.nodeSelector !== undefined && { nodeSelector: this.options.nodeSelector }),
      ...(this.options.tolerations !== undefined && { tolerations: this.options.tolerations }),
    });
    const handle = { name: body.metadata!.name!, namespace: this.options.namespace };
    if (secrets && secret) {
      try {
        await secrets.createNamespacedSecret({ namespace: handle.namespace, body: secret });
      } catch (e) {
        // The same attempt's: the same token.
        if (httpCode(e) !== 409) throw e;
      }
    }
    let uid: string | undefined;
    try {
      uid = (await this.api.createNamespacedJob({ namespace: handle.namespace, body })).metadata?.uid;
    } catch (e) {
      if (httpCode(e) !== 409) throw e;
    }
    if (secrets && secret) {
      uid ??= (await this.api.readNamespacedJobStatus({ name: handle.name, namespace: handle.namespace })).metadata?.uid;
      if (!uid) throw new Error(`Job ${handle.name} has no uid: cannot make its Secret its dependent`);
      await secrets.patchNamespacedSecret({
        name: handle.name,
        namespace: handle.namespace,
        // JSON Patch (client-node's default content type). No blockOwnerDeletion: that would need
        // the right to update the Job's finalizers.
        body: [{ op: "add", path: "/metadata/ownerReferences", value: [{ apiVersion: "batch/v1", kind: "Job", name: handle.name, uid }] }],
      });
    }
    return handle;
  }

  /** The Job an attempt has (or would have): its name is deterministic. */
  handle(taskRunId: string, attempt: number): JobHandle {
    return { name: jobName(taskRunId, attempt), namespace: this.options.namespace };
  }

  /** Current outcome; a Job that no longer exists counts as a lost executor. */
  async status(handle: JobHandle): Promise<JobOutcome> {
    try {
      const job = await this.api.readNamespacedJobStatus({ name: handle.name, namespace: handle.namespace });
      return jobStatusToOutcome(job.status);
    } catch (e) {
      if (httpCode(e) === 404) return { state: "failed", failureKind: "EXECUTOR_LOST", reason: "JobNotFound", message: `job ${handle.name} no longer exists` };
      throw e;
    }
  }

  /**
   * Deletes the Job and (in the background) its pods, and the attempt's Secret (its dependent
   * too, but one whose Job was never created or that lost its owner on the way has none); what
   * is already gone is fine.
   */
  async cancel(handle: JobHandle): Promise<void> {
    try {
      await this.api.deleteNamespacedJob({ name: handle.name, namespace: handle.namespace, propagationPolicy: "Background" });
    } catch (e) {
      if (httpCode(e) !== 404) throw e;
    }
    if (this.options.secrets) await this.deleteSecret(handle.name);
  }

  /** Deletes one of the attempts' Secrets; one already gone is fine. */
  async deleteSecret(name: string): Promise<void> {
    try {
      await this.options.secrets?.deleteNamespacedSecret({ name, namespace: this.options.namespace });
    } catch (e) {
      if (httpCode(e) !== 404) throw e;
    }
  }
}

/** client-node 1.x throws ApiException with the HTTP status in `code`. */
/**
 * Whether a failed Job create says the cluster cannot take Jobs now (unreachable, no answer, 5xx,
 * 429, or a ResourceQuota used up: 403 "exceeded quota") rather than that this Job is refused.
 */
export function clusterCannotTakeJobsNow(error: unknown): boolean {
  const code = httpCode(error);
  if (code === undefined || code >= 500 || code === 429) return true;
  const body = (error as { body?: unknown }).body;
  return code === 403 && /exceeded quota/i.test(typeof body === "string" ? body : JSON.stringify(body ?? ""));
}

export function httpCode(error: unknown): number | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "number" ? code : undefined;
}
