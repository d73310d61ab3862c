import type { V1Job, V1JobStatus } from "@kubernetes/client-node";
import {
  clusterCannotTakeJobsNow,
  EXECUTOR_LABEL,
  KubernetesJobRuntime,
  TASK_CONTAINER,
  buildJobManifest,
  cpuQuantity,
  jobName,
  jobStatusToOutcome,
  labelValue,
  parseToleration,
  type JobManifestInput,
  type JobsApi,
} from "../../../src/executors/runtimes/kubernetes-job.js";

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

const input: JobManifestInput = {
  taskRunId: "3f1c9a4e-7b2d-4c1a-9e8f-0a1b2c3d4e5f",
  attempt: 2,
  image: "ghcr.io/acme/train:1.4",
  command: ["python3", "train.py", "--lr", "0.01"],
  env: { MLGRAPH_TOKEN: "tok", B: "2", A: "1" },
  resources: { cpu: 7.5, memory_mb: 32768, gpus: 2 },
  gpuType: "NVIDIA-H100-80GB-HBM3",
  namespace: "ml",
  activeDeadlineSeconds: 3600,
};

describe("buildJobManifest", () => {
  it("builds a batch/v1 Job that Kubernetes never retries", () => {
    const job = buildJobManifest(input);
    expect(job.apiVersion).toBe("batch/v1");
    expect(job.kind).toBe("Job");
    expect(job.metadata).toMatchObject({
      name: "mlgraph-3f1c9a4e-7b2d-4c1a-9e8f-0a1b2c3d4e5f-a2",
      namespace: "ml",
      labels: { "mlgraph.io/task-run-id": input.taskRunId, "mlgraph.io/attempt": "2", "app.kubernetes.io/managed-by": "mlgraph" },
    });
    const spec = job.spec!;
    expect(spec.backoffLimit).toBe(0);
    expect(spec.activeDeadlineSeconds).toBe(3600);
    expect(spec.ttlSecondsAfterFinished).toBe(3600);
    const pod = spec.template.spec!;
    expect(pod.restartPolicy).toBe("Never");
    expect(pod.terminationGracePeriodSeconds).toBeUndefined();
    expect(buildJobManifest({ ...input, terminationGracePeriodSeconds: 15 }).spec!.template.spec!.terminationGracePeriodSeconds).toBe(15);
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.serviceAccountName).toBeUndefined();
    expect(pod.nodeSelector).toEqual({ "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3" });
    expect(pod.tolerations).toEqual([{ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }]);
    expect(spec.template.metadata!.labels!["mlgraph.io/task-run-id"]).toBe(input.taskRunId);
    const c = pod.containers[0]!;
    expect(c.name).toBe(TASK_CONTAINER);
    expect(c.image).toBe(input.image);
    expect(c.command).toEqual(input.command);
    expect(c.env).toEqual([
      { name: "A", value: "1" },
      { name: "B", value: "2" },
      { name: "MLGRAPH_TOKEN", value: "tok" },
    ]);
    expect(c.resources).toEqual({
      requests: { cpu: "7500m", memory: "32768Mi", "nvidia.com/gpu": "2" },
      limits: { memory: "32768Mi", "nvidia.com/gpu": "2" },
    });
  });

  it("selects a GPU task's nodes by another label, or by none, and adds the executor's selector and tolerations", () => {
    const gke = buildJobManifest({ ...input, gpuTypeLabel: "cloud.google.com/gke-accelerator", nodeSelector: { pool: "gpu" }, tolerations: [parseToleration("dedicated=ml:NoSchedule")] }).spec!.template.spec!;
    expect(gke.nodeSelector).toEqual({ pool: "gpu", "cloud.google.com/gke-accelerator": "NVIDIA-H100-80GB-HBM3" });
    expect(gke.tolerations).toEqual([
      { key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" },
      { key: "dedicated", operator: "Equal", value: "ml", effect: "NoSchedule" },
    ]);
    expect(buildJobManifest({ ...input, gpuTypeLabel: null }).spec!.template.spec!.nodeSelector).toBeUndefined();
  });

  it("reads tolerations as kubectl writes taints", () => {
    expect(parseToleration("spot")).toEqual({ key: "spot", operator: "Exists" });
    expect(parseToleration("spot:NoExecute")).toEqual({ key: "spot", operator: "Exists", effect: "NoExecute" });
    expect(parseToleration("example.com/team=ml")).toEqual({ key: "example.com/team", operator: "Equal", value: "ml" });
    expect(parseToleration("dedicated=ml:PreferNoSchedule")).toEqual({ key: "dedicated", operator: "Equal", value: "ml", effect: "PreferNoSchedule" });
    expect(() => parseToleration("dedicated=ml:Sometimes")).toThrow(/key\[=value\]/);
    expect(() => parseToleration("=ml")).toThrow();
  });

  it("leaves GPU settings out of CPU tasks and mounts a named service account", () => {
    const job = buildJobManifest({ ...input, resources: { cpu: 1, memory_mb: 512, gpus: 0 }, serviceAccount: "trainer", ttlSecondsAfterFinished: 60 });
    const pod = job.spec!.template.spec!;
    expect(pod.nodeSelector).toBeUndefined();
    expect(pod.tolerations).toBeUndefined();
    expect(pod.serviceAccountName).toBe("trainer");
    expect(pod.automountServiceAccountToken).toBe(true);
    expect(job.spec!.ttlSecondsAfterFinished).toBe(60);
    expect(pod.containers[0]!.resources).toEqual({ requests: { cpu: "1", memory: "512Mi" }, limits: { memory: "512Mi" } });
  });

  it("makes DNS-1123 names of at most 63 characters, distinct per run and attempt", () => {
    const ids = ["RUN_ABC.def", "x".repeat(200), "é✓ weird / id", "---", "a".repeat(100) + "1", "a".repeat(100) + "2"];
    const names = ids.flatMap((id) => [jobName(id, 1), jobName(id, 12)]);
    for (const name of names) {
      expect(name.length).toBeLessThanOrEqual(63);
      expect(name).toMatch(DNS1123_LABEL);
    }
    expect(new Set(names).size).toBe(names.length);
    expect(jobName("RUN_ABC.def", 1)).toBe("mlgraph-run-abc-def-a1");
  });

  it("sanitizes label values", () => {
    expect(labelValue("ok-1.2_3")).toBe("ok-1.2_3");
    expect(labelValue("-a b/c-")).toBe("a-b-c");
    expect(labelValue("z".repeat(100))).toHaveLength(63);
  });

  it("writes CPU quantities", () => {
    expect(cpuQuantity(2)).toBe("2");
    expect(cpuQuantity(0.5)).toBe("500m");
    expect(cpuQuantity(0.0001)).toBe("1m");
  });

  it("refuses a missing image, empty command and bad numbers", () => {
    expect(() => buildJobManifest({ ...input, image: "" })).toThrow(/image/);
    expect(() => buildJobManifest({ ...input, command: [] })).toThrow(/command/);
    expect(() => buildJobManifest({ ...input, attempt: 0 })).toThrow(RangeError);
    expect(() => buildJobManifest({ ...input, activeDeadlineSeconds: 0 })).toThrow(RangeError);
  });
});

describe("jobStatusToOutcome", () => {
  const cond = (type: string, reason?: string, message?: string) => ({ type, status: "True", ...(reason && { reason }), ...(message && { message }) });

  it.each<[string, V1JobStatus | undefined, unknown]>([
    ["no status yet", undefined, { state: "pending" }],
    ["pod not ready", { active: 1, ready: 0 }, { state: "pending" }],
    ["pod ready", { active: 1, ready: 1 }, { state: "running" }],
    ["old API server without ready", { active: 1 }, { state: "running" }],
    ["finished, condition not yet written", { succeeded: 1 }, { state: "running" }],
    ["complete", { succeeded: 1, conditions: [cond("SuccessCriteriaMet"), cond("Complete")] }, { state: "succeeded" }],
    ["deadline", { failed: 1, conditions: [cond("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")] }, { state: "failed", failureKind: "TIMED_OUT", reason: "DeadlineExceeded", message: "Job was active longer than specified deadline" }],
    ["task failed", { failed: 1, conditions: [cond("FailureTarget", "BackoffLimitExceeded"), cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")] }, { state: "failed", failureKind: "FAILED", reason: "BackoffLimitExceeded", message: "Job has reached the specified backoff limit" }],
    ["pod evicted", { failed: 1, conditions: [cond("Failed", "PodFailurePolicy", "Pod ml/p-1 has condition DisruptionTarget matching FailJob rule at index 0")] }, { state: "failed", failureKind: "EXECUTOR_LOST", reason: "PodFailurePolicy", message: "Pod ml/p-1 has condition DisruptionTarget matching FailJob rule at index 0" }],
    ["failure target before Failed", { conditions: [cond("FailureTarget", "DeadlineExceeded")] }, { state: "failed", failureKind: "TIMED_OUT", reason: "DeadlineExceeded" }],
    ["a False condition is ignored", { active: 1, ready: 1, conditions: [{ type: "Failed", status: "False" }] }, { state: "running" }],
  ])("%s", (_name, status, expected) => {
    expect(jobStatusToOutcome(status)).toEqual(expected);
  });
});

describe("KubernetesJobRuntime (fake API)", () => {
  function fakeApi() {
    const calls: { op: string; param: unknown }[] = [];
    let status: V1JobStatus = {};
    let readError: unknown;
    const api: JobsApi = {
      createNamespacedJob: (async (param: { body: V1Job }) => {
        calls.push({ op: "create", param });
        if (calls.filter((c) => c.op === "create").length > 1) throw Object.assign(new Error("exists"), { code: 409 });
        return param.body;
      }) as unknown as JobsApi["createNamespacedJob"],
      readNamespacedJobStatus: (async (param: unknown) => {
        calls.push({ op: "read", param });
        if (readError) throw readError;
        return { status };
      }) as unknown as JobsApi["readNamespacedJobStatus"],
      deleteNamespacedJob: (async (param: unknown) => {
        calls.push({ op: "delete", param });
        throw Object.assign(new Error("gone"), { code: 404 });
      }) as unknown as JobsApi["deleteNamespacedJob"],
      listNamespacedJob: (async (param: unknown) => {
        calls.push({ op: "list", param });
        return { items: [] };
      }) as unknown as JobsApi["listNamespacedJob"],
    };
    return { api, calls, setStatus: (s: V1JobStatus) => (status = s), setReadError: (e: unknown) => (readError = e) };
  }

  it("creates idempotently, reads status, deletes in the background", async () => {
    const fake = fakeApi();
    const runtime = new KubernetesJobRuntime(fake.api, { namespace: "ml", serviceAccount: "trainer", labels: { [EXECUTOR_LABEL]: "exec-1" } });
    const { namespace: _ns, ...attempt } = input;
    const handle = await runtime.start(attempt);
    expect(await runtime.start(attempt)).toEqual(handle);
    expect(handle).toEqual({ name: jobName(input.taskRunId, 2), namespace: "ml" });
    const created = (fake.calls[0]!.param as { namespace: string; body: V1Job });
    expect(created.namespace).toBe("ml");
    expect(created.body.spec!.template.spec!.serviceAccountName).toBe("trainer");
    // The executor's label, for its successor's cleanup of Jobs it left running.
    expect(created.body.metadata!.labels![EXECUTOR_LABEL]).toBe("exec-1");
    expect(created.body.metadata!.labels!["mlgraph.io/attempt"]).toBe("2");
    expect(runtime.handle(input.taskRunId, 2)).toEqual(handle);

    fake.setStatus({ active: 1, ready: 1 });
    expect(await runtime.status(handle)).toEqual({ state: "running" });
    fake.setReadError(Object.assign(new Error("not found"), { code: 404 }));
    expect(await runtime.status(handle)).toMatchObject({ state: "failed", failureKind: "EXECUTOR_LOST", reason: "JobNotFound" });
    fake.setReadError(Object.assign(new Error("boom"), { code: 500 }));
    await expect(runtime.status(handle)).rejects.toThrow("boom");

    await runtime.cancel(handle);
    expect(fake.calls.at(-1)).toEqual({ op: "delete", param: { name: handle.name, namespace: "ml", propagationPolicy: "Background" } });
  });
});

describe("clusterCannotTakeJobsNow", () => {
  const status = (code: number, message: string) => Object.assign(new Error(`HTTP ${code}`), { code, body: { kind: "Status", message } });

  it("is the executor's problem when the API server is unreachable, overloaded or a quota is used up", () => {
    expect(clusterCannotTakeJobsNow(new Error("connect ECONNREFUSED 10.0.0.1:6443"))).toBe(true);
    expect(clusterCannotTakeJobsNow(status(503, "the server is currently unable to handle the request"))).toBe(true);
    expect(clusterCannotTakeJobsNow(status(429, "too many requests"))).toBe(true);
    expect(clusterCannotTakeJobsNow(status(403, 'jobs "t" is forbidden: exceeded quota: team, requested: count/jobs.batch=1'))).toBe(true);
  });

  it("is the Job's (or the operator's) problem when the Job itself is refused", () => {
    expect(clusterCannotTakeJobsNow(status(422, 'Job.batch "t" is invalid: spec.template.spec.containers[0].image: Required value'))).toBe(false);
    expect(clusterCannotTakeJobsNow(status(400, "bad request"))).toBe(false);
    expect(clusterCannotTakeJobsNow(status(403, 'jobs.batch is forbidden: User "system:serviceaccount:ml:exec" cannot create resource "jobs"'))).toBe(false);
  });
});
