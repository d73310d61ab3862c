import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startExecutor, type TestExecutor } from "../helpers/executors";
import { startKubeApiStub, writeKubeconfig, type KubeApiStub, type StubJob } from "../helpers/kube-api-stub";
import { TcpProxy } from "../helpers/tcp-proxy";
import { ok, startTestServer, type TestServer, waitFor } from "../helpers/test-server";

/**
 * `mlgraph executor --runtime kubernetes` end to end: a real server, a real executor process
 * using the real @kubernetes/client-node, and a stub API server (no cluster exists here) where
 * the test plays the Job controller and kubelet.
 */
let server: TestServer;
let stub: KubeApiStub;
let executor: TestExecutor;
let dir: string;

const POOL = "k8s";
const RUN = `query($id: ID!) { pipelineRun(id: $id) { id status tasks { id status exitCode error failureKind logs } } }`;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-k8s-"));
  stub = await startKubeApiStub();
  server = await startTestServer({ env: { MLGRAPH_LEASE_SECONDS: "3", MLGRAPH_SCHEDULER_INTERVAL_MS: "200" } });
  executor = await startExecutor(server.url, [
    "--pool", POOL, "--concurrency", "4",
    "--runtime", "kubernetes", "--namespace", "ml", "--kubeconfig", writeKubeconfig(dir, stub.url),
    "--job-poll-seconds", "0.2", "--pod-error-grace-seconds", "1",
    // The stub closes a finished Job's log at once; only the test that keeps one open waits this out.
    "--log-end-seconds", "3",
  ]);
});
afterAll(async () => {
  await executor?.stop();
  await server?.stop();
  await stub?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

let pipelines = 0;
/** Creates a one-task pipeline on the Kubernetes pool and submits a run of it. */
async function submitTask(task: Record<string, unknown>): Promise<string> {
  const name = `k8s-${++pipelines}`;
  ok(await server.gql(`mutation($input: CreatePipelineInput!) { createPipeline(input: $input) { id } }`, { input: { spec: { pipeline: { name, tasks: [{ id: "train", pool: POOL, ...task }] } } } }));
  return ok(await server.gql(`mutation($input: SubmitPipelineRunInput!) { submitPipelineRun(input: $input) { id } }`, { input: { pipelineName: name } })).submitPipelineRun.id;
}

async function jobOf(runId: string): Promise<StubJob> {
  return stub.waitForJob("MLGRAPH_PIPELINE_RUN_ID", runId).catch((err: Error) => {
    throw new Error(`${err.message}\nexecutor output:\n${executor.output()}`);
  });
}

async function finished(runId: string): Promise<any> {
  return waitFor(`pipeline run ${runId} to finish`, async () => {
    const run = ok(await server.gql(RUN, { id: runId })).pipelineRun;
    return ["SUCCEEDED", "FAILED", "CANCELLED"].includes(run.status) ? run : null;
  });
}

const IMAGE = "ghcr.io/acme/train:1.4";

describe("executor --runtime kubernetes (stub API server, real client)", () => {
  it("runs a task as a Job with its image, command, env, resources and timeout, streams its pod log and reports SUCCEEDED", async () => {
    const runId = await submitTask({
      image: IMAGE,
      command: ["python3", "train.py", "--lr", "0.01"],
      env: { FOO: "bar" },
      resources: { cpu: 0.5, memory_mb: 256 },
      timeout_seconds: 120,
    });
    const job = await jobOf(runId);
    expect(job.namespace).toBe("ml");
    const spec = job.manifest.spec;
    expect(spec.activeDeadlineSeconds).toBe(120);
    expect(spec.backoffLimit).toBe(0);
    // The executor's --grace-seconds (1 here) between SIGTERM and SIGKILL when the pod is deleted.
    expect(spec.template.spec.terminationGracePeriodSeconds).toBe(1);
    const c = spec.template.spec.containers[0];
    expect(c.image).toBe(IMAGE);
    expect(c.command).toEqual(["python3", "train.py", "--lr", "0.01"]);
    expect(c.resources).toEqual({ requests: { cpu: "500m", memory: "256Mi" }, limits: { memory: "256Mi" } });
    const env = Object.fromEntries((c.env as { name: string; value: string }[]).map((e) => [e.name, e.value]));
    expect(env.FOO).toBe("bar");
    // The task token is in the attempt's Secret, owned by the Job (gone with it), not in the Job:
    // whoever may read Jobs does not get it.
    expect(env.MLGRAPH_TOKEN).toBeUndefined();
    expect(c.env).toContainEqual({ name: "MLGRAPH_TOKEN", valueFrom: { secretKeyRef: { name: job.name, key: "MLGRAPH_TOKEN" } } });
    const secret = await waitFor("the Secret to be owned by its Job", () => (stub.secrets.get(job.name)?.metadata.ownerReferences ? stub.secrets.get(job.name) : null));
    expect(secret.metadata.ownerReferences).toEqual([{ apiVersion: "batch/v1", kind: "Job", name: job.name, uid: job.manifest.metadata.uid }]);
    expect(secret).toMatchObject({ type: "Opaque", immutable: true, metadata: { namespace: "ml", labels: { "mlgraph.io/executor": job.manifest.metadata.labels["mlgraph.io/executor"], "mlgraph.io/attempt": "1" } } });
    expect(Object.keys(secret.data)).toEqual(["MLGRAPH_TOKEN"]);
    const token = Buffer.from(secret.data.MLGRAPH_TOKEN, "base64").toString();
    expect(token).toMatch(/.{20,}/);
    expect(JSON.stringify(job.manifest)).not.toContain(token);
    expect(env.MLGRAPH_URL).toBe(server.url);
    expect(env.MLGRAPH_PIPELINE_RUN_ID).toBe(runId);
    // Local GPU slots mean nothing in a pod (the device plugin decides), nor does the executor's own environment.
    expect(env).not.toHaveProperty("CUDA_VISIBLE_DEVICES");
    expect(env).not.toHaveProperty("PATH");
    expect([...stub.authorizations]).toEqual(["Bearer stub-token"]);

    stub.startPod(job);
    stub.log(job, "epoch 1\nepoch 2\n");
    // Streamed while the pod runs, not only at its end.
    const running = await waitFor("the pod's first lines in the task's log", async () => {
      const run = ok(await server.gql(RUN, { id: runId })).pipelineRun;
      return run.tasks[0].logs.length >= 2 ? run : null;
    });
    expect(running.tasks[0]).toMatchObject({ status: "RUNNING", logs: ["epoch 1", "epoch 2"] });
    stub.log(job, "done");
    stub.finish(job, 0);
    const run = await finished(runId);
    expect(run.status).toBe("SUCCEEDED");
    expect(run.tasks[0]).toMatchObject({ status: "SUCCEEDED", exitCode: 0, logs: ["epoch 1", "epoch 2", "done"] });
    expect(stub.deletes.filter((d) => d.name === job.name)).toEqual([]);
  });

  it("reports a failed Job as FAILED with its exit code and reason", async () => {
    const runId = await submitTask({ image: IMAGE, command: ["python3", "-c", "raise SystemExit(3)"] });
    const job = await jobOf(runId);
    stub.startPod(job);
    stub.log(job, "Traceback: boom\n");
    stub.finish(job, 3, { reason: "BackoffLimitExceeded", message: "Job has reached the specified backoff limit" });
    const run = await finished(runId);
    expect(run.tasks[0]).toMatchObject({ status: "FAILED", exitCode: 3, failureKind: "FAILED", logs: ["Traceback: boom"] });
    expect(run.tasks[0].error).toMatch(/exited with 3 .*BackoffLimitExceeded: Job has reached the specified backoff limit/);
  });

  it("reports a Job past its activeDeadlineSeconds as TIMED_OUT", async () => {
    const runId = await submitTask({ image: IMAGE, command: ["sleep", "infinity"], timeout_seconds: 5 });
    const job = await jobOf(runId);
    expect(job.manifest.spec.activeDeadlineSeconds).toBe(5);
    stub.startPod(job);
    stub.finish(job, 137, { reason: "DeadlineExceeded", message: "Job was active longer than specified deadline" });
    const run = await finished(runId);
    expect(run.tasks[0]).toMatchObject({ status: "FAILED", failureKind: "TIMED_OUT" });
    expect(run.tasks[0].error).toMatch(/timed out after 5 s .*DeadlineExceeded/);
  });

  it("fails an attempt whose image cannot be pulled, naming the reason, and deletes its Job", async () => {
    const runId = await submitTask({ image: "ghcr.io/acme/no-such-image:0", command: ["true"] });
    const job = await jobOf(runId);
    stub.podWaiting(job, "ImagePullBackOff", 'Back-off pulling image "ghcr.io/acme/no-such-image:0"');
    const run = await finished(runId);
    expect(run.tasks[0]).toMatchObject({ status: "FAILED", failureKind: "FAILED" });
    expect(run.tasks[0].error).toMatch(/^ImagePullBackOff: Back-off pulling image "ghcr.io\/acme\/no-such-image:0"/);
    expect(stub.deletes).toContainEqual({ name: job.name, propagationPolicy: "Background" });
  });

  it("fails an attempt whose pod can never be created (an admission webhook denies it), with the Job's FailedCreate event, and deletes its Job", async () => {
    const runId = await submitTask({ image: IMAGE, command: ["true"], resources: { cpu: 0.5, memory_mb: 256 } });
    const job = await jobOf(runId);
    const denied = `admission webhook "policy.example.com" denied the request: images must come from registry.internal`;
    // The Job controller retries (the event repeats); no pod ever appears.
    stub.failedCreate(job, denied);
    const repeat = setInterval(() => stub.failedCreate(job, denied), 300);
    try {
      const run = await finished(runId);
      expect(run.tasks[0]).toMatchObject({ status: "FAILED", failureKind: "FAILED", exitCode: null });
      expect(run.tasks[0].error).toContain(`FailedCreate: ${denied} (Job ${job.name}, no pod, for `);
      expect(stub.deletes).toContainEqual({ name: job.name, propagationPolicy: "Background" });
      expect(stub.requests).toContain("GET /api/v1/namespaces/ml/events");
    } finally {
      clearInterval(repeat);
    }
  });

  it("hands back, without using a retry, an attempt whose pod a used-up ResourceQuota keeps from being created, and runs it when there is room", async () => {
    const runId = await submitTask({ image: IMAGE, command: ["true"], resources: { cpu: 0.5, memory_mb: 256 }, retries: 0 });
    const first = await jobOf(runId);
    const quota = `pods "${first.name}-x7k2p" is forbidden: exceeded quota: compute, requested: requests.cpu=500m, used: requests.cpu=2, limited: requests.cpu=2`;
    stub.failedCreate(first, quota);
    const repeat = setInterval(() => stub.failedCreate(first, quota), 300);
    try {
      await waitFor("the first attempt's Job to be deleted", () => stub.deletes.some((d) => d.name === first.name));
    } finally {
      clearInterval(repeat);
    }
    const second = await waitFor("a second attempt's Job", () => stub.created.find((j) => j.name !== first.name && JSON.stringify(j.manifest).includes(runId)) ?? null);
    stub.startPod(second);
    stub.finish(second, 0);
    const run = await finished(runId);
    expect(run.tasks[0]).toMatchObject({ status: "SUCCEEDED" });
    const task = ok(await server.gql(`query($id: ID!) { pipelineRun(id: $id) { tasks { uncountedAttempts attempts { attempt outcome error } } } }`, { id: runId })).pipelineRun.tasks[0];
    expect(task.uncountedAttempts).toBe(1);
    expect(task.attempts.map((a: { outcome: string }) => a.outcome)).toEqual(["NOT_STARTED", "SUCCEEDED"]);
    expect(task.attempts[0].error).toContain(`FailedCreate: ${quota} (Job ${first.name}, no pod, for `);
  });

  it("deletes the Job of a cancelled task and reports it CANCELLED", async () => {
    const runId = await submitTask({ image: IMAGE, command: ["sleep", "infinity"] });
    const job = await jobOf(runId);
    stub.startPod(job);
    stub.log(job, "working\n");
    await waitFor("the task to run", async () => ok(await server.gql(RUN, { id: runId })).pipelineRun.tasks[0].logs.length > 0);
    ok(await server.gql(`mutation($id: ID!) { cancelPipelineRun(id: $id) { id } }`, { id: runId }));
    await waitFor("the Job to be deleted", () => stub.deletes.some((d) => d.name === job.name));
    expect(stub.deletes.filter((d) => d.name === job.name)).toEqual([{ name: job.name, propagationPolicy: "Background" }]);
    const run = await finished(runId);
    expect(run.status).toBe("CANCELLED");
    expect(run.tasks[0]).toMatchObject({ status: "CANCELLED", logs: ["working"] });
    expect(stub.secrets.has(job.name)).toBe(false);
    // A cancellation leaves the pod its own grace (the executor's --grace-seconds).
    expect(stub.podDeletes.filter((d) => d.labelSelector === `job-name=${job.name}`)).toEqual([]);
  });

  it("reads the task's container, not a sidecar listed before it, and decodes a character split across log chunks", async () => {
    const runId = await submitTask({ image: IMAGE, command: ["python3", "-c", "raise SystemExit(3)"] });
    const job = await jobOf(runId);
    stub.startPodWithSidecar(job);
    const text = Buffer.from("température 23°\n");
    const cut = text.indexOf(Buffer.from("é")) + 1; // between the two bytes of "é"
    await waitFor("the log to be followed", () => stub.openFollows() > 0);
    stub.log(job, text.subarray(0, cut));
    await new Promise((r) => setTimeout(r, 300));
    stub.log(job, text.subarray(cut));
    stub.finish(job, 3, { reason: "BackoffLimitExceeded", message: "Job has reached the specified backoff limit" });
    const run = await finished(runId);
    expect(run.tasks[0]).toMatchObject({ status: "FAILED", exitCode: 3, logs: ["température 23°"] });
  });

  it("reopens a log follow the API server dropped while the container runs, and reads the rest after it ended, without duplicates", async () => {
    const runId = await submitTask({ image: IMAGE, command: ["python3", "train.py"] });
    const job = await jobOf(runId);
    const pod = `${job.name}-x7k2p`;
    const reads = () => stub.logRequests.filter((r) => r.pod === pod);
    stub.startPod(job);
    await waitFor("the log to be followed", () => stub.openFollows() > 0);
    const logsOf = async () => ok(await server.gql(RUN, { id: runId })).pipelineRun.tasks[0].logs as string[];
    stub.log(job, "one\ntwo\n");
    await waitFor("the first lines in the task's log", async () => (await logsOf()).length >= 2);
    // A connection reset; then a line with the same timestamp as the last ones forwarded (one
    // write of the runtime), and another, while no follow is open.
    stub.dropFollows(job, "reset");
    stub.log(job, "three\n", { sameTimestamp: true });
    stub.log(job, "four\n");
    await waitFor("the follow to be reopened", () => reads().length >= 2 && stub.openFollows() > 0);
    await waitFor("the lines written while no follow was open", async () => (await logsOf()).length >= 4);
    stub.log(job, "five\n");
    // A clean end this time, and the container ends before the executor could reopen: the last
    // lines come from the read after the end (an unterminated last line included).
    stub.dropFollows(job, "end");
    stub.log(job, "six\nlast words");
    stub.finish(job, 0);
    const run = await finished(runId);
    expect(run.tasks[0]).toMatchObject({ status: "SUCCEEDED", logs: ["one", "two", "three", "four", "five", "six", "last words"] });
    // Every read asked for timestamps; every one after the first started from where the log was.
    expect(reads().every((r) => r.timestamps)).toBe(true);
    expect(reads()[0]).toMatchObject({ follow: true });
    expect(reads()[0]).not.toHaveProperty("sinceTime");
    expect(reads()[1]).toMatchObject({ follow: true, sinceTime: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/) });
    expect(reads()[reads().length - 1]).toMatchObject({ follow: false, sinceTime: expect.any(String) });
  });

  it("times one image pull failure across ErrImagePull and ImagePullBackOff", async () => {
    const runId = await submitTask({ image: "ghcr.io/acme/no-such-image:1", command: ["true"] });
    const job = await jobOf(runId);
    // A failing pull alternates between the two, faster here than the 1 s grace.
    let flips = 0;
    const flip = setInterval(() => {
      const reason = flips++ % 2 ? "ImagePullBackOff" : "ErrImagePull";
      stub.podWaiting(job, reason, `${reason} ghcr.io/acme/no-such-image:1`);
    }, 300);
    try {
      const run = await finished(runId);
      expect(run.tasks[0]).toMatchObject({ status: "FAILED", failureKind: "FAILED" });
      expect(run.tasks[0].error).toMatch(/^(ErrImagePull|ImagePullBackOff): /);
    } finally {
      clearInterval(flip);
    }
  });

  it("retries a Job create that failed with a 5xx (the Job is created once)", async () => {
    stub.failNext("POST", /\/namespaces\/ml\/jobs$/, 2, 503);
    const posts = () => stub.requests.filter((r) => r === "POST /apis/batch/v1/namespaces/ml/jobs").length;
    const before = posts();
    const runId = await submitTask({ image: IMAGE, command: ["true"] });
    const job = await jobOf(runId);
    expect(posts() - before).toBe(3);
    stub.startPod(job);
    stub.finish(job, 0);
    const run = await finished(runId);
    expect(run.tasks[0]).toMatchObject({ status: "SUCCEEDED" });
  });

  it("deletes the attempt's Secret when the API server refuses its Job, and fails the attempt", async () => {
    stub.failNext("POST", /\/namespaces\/ml\/jobs$/, 1, 422);
    const before = stub.secretsCreated.length;
    const runId = await submitTask({ image: IMAGE, command: ["true"] });
    const run = await finished(runId);
    expect(run.tasks[0]).toMatchObject({ status: "FAILED", failureKind: "FAILED" });
    expect(run.tasks[0].error).toMatch(/^could not create the Kubernetes Job: HTTP 422/);
    // Created first (so that the pod never waits for it), deleted when the Job could not be.
    const created = stub.secretsCreated.slice(before);
    expect(created).toHaveLength(1);
    const name = created[0].metadata.name;
    expect(stub.created.some((j) => j.name === name)).toBe(false);
    await waitFor("the Secret to be deleted", () => stub.secretDeletes.includes(name));
    expect(stub.secrets.has(name)).toBe(false);
  });

  it("hands a task back without using a retry when the cluster refuses its Job for a quota, pauses claiming, and runs it once a create goes through", async () => {
    const quota = 'jobs "x" is forbidden: exceeded quota: team-quota, requested: count/jobs.batch=1, used: count/jobs.batch=10, limited: count/jobs.batch=10';
    stub.failNext("POST", /\/namespaces\/ml\/jobs$/, 1, 403, quota);
    const runId = await submitTask({ image: IMAGE, command: ["true"], retries: 0 });
    // With no retry to use, only a handed-back (uncounted) first attempt lets a second one run.
    const job = await jobOf(runId);
    stub.startPod(job);
    stub.finish(job, 0);
    const run = await finished(runId);
    expect(run.tasks[0]).toMatchObject({ status: "SUCCEEDED" });
    const task = ok(
      await server.gql(`query($id: ID!) { pipelineRun(id: $id) { tasks { attempt uncountedAttempts attempts { attempt outcome error } } } }`, { id: runId }),
    ).pipelineRun.tasks[0];
    expect(task.uncountedAttempts).toBe(1);
    expect(task.attempts).toHaveLength(2);
    expect(task.attempts[0]).toMatchObject({ attempt: 1, outcome: "NOT_STARTED" });
    expect(task.attempts[0].error).toMatch(/^could not create the Kubernetes Job: HTTP 403: .*exceeded quota/);
    expect(task.attempts[1]).toMatchObject({ attempt: 2, outcome: "SUCCEEDED" });
    expect(executor.output()).toMatch(/claiming nothing until a probe of the Kubernetes API passes/);
  });

  it("keeps deleting a cancelled task's Job while the API server refuses the delete", async () => {
    const runId = await submitTask({ image: IMAGE, command: ["sleep", "infinity"] });
    const job = await jobOf(runId);
    stub.failNext("DELETE", new RegExp(`/jobs/${job.name}$`), 6, 500);
    stub.startPod(job);
    await waitFor("the task to run", async () => ok(await server.gql(RUN, { id: runId })).pipelineRun.tasks[0].status === "RUNNING");
    ok(await server.gql(`mutation($id: ID!) { cancelPipelineRun(id: $id) { id } }`, { id: runId }));
    await waitFor("the Job to be deleted", () => stub.deletes.some((d) => d.name === job.name), 20_000);
    expect(stub.requests.filter((r) => r === `DELETE /apis/batch/v1/namespaces/ml/jobs/${job.name}`)).toHaveLength(7);
    const run = await finished(runId);
    expect(run.tasks[0]).toMatchObject({ status: "CANCELLED" });
  });

  it("cancels without waiting for a read of the Job that hangs", async () => {
    const runId = await submitTask({ image: IMAGE, command: ["sleep", "infinity"] });
    const job = await jobOf(runId);
    stub.startPod(job);
    await waitFor("the task to run", async () => ok(await server.gql(RUN, { id: runId })).pipelineRun.tasks[0].status === "RUNNING");
    const hung = stub.hang("GET", new RegExp(`/jobs/${job.name}/status$`));
    try {
      await new Promise((r) => setTimeout(r, 500)); // a read is in flight, unanswered
      ok(await server.gql(`mutation($id: ID!) { cancelPipelineRun(id: $id) { id } }`, { id: runId }));
      await waitFor("the Job to be deleted", () => stub.deletes.some((d) => d.name === job.name), 8_000);
      expect((await finished(runId)).tasks[0]).toMatchObject({ status: "CANCELLED" });
    } finally {
      hung.release();
    }
  });

  it("refuses to start when the namespace cannot be used, naming --namespace", async () => {
    stub.forbiddenNamespaces.add("locked");
    const started = startExecutor(server.url, ["--pool", "k8s-locked", "--runtime", "kubernetes", "--namespace", "locked", "--kubeconfig", path.join(dir, "kubeconfig")]);
    await expect(started).rejects.toThrow(/executor exited with 2:[\s\S]*cannot list Jobs in namespace "locked" \(HTTP 403[\s\S]*--namespace, --kubeconfig/);
  });

  it("deletes at start the unfinished Jobs a previous executor of its name left, and no others", async () => {
    const manifest = (name: string, executorName: string) => ({
      apiVersion: "batch/v1",
      kind: "Job",
      metadata: { name, namespace: "ml", labels: { "app.kubernetes.io/managed-by": "mlgraph", "mlgraph.io/executor": executorName } },
      spec: { template: { spec: { containers: [{ name: "task", image: IMAGE, env: [] }] } } },
    });
    stub.addJob(manifest("mlgraph-left-running-a1", "trainer-0"));
    stub.addJob(manifest("mlgraph-left-finished-a1", "trainer-0"), { succeeded: 1, conditions: [{ type: "Complete", status: "True" }] });
    stub.addJob(manifest("mlgraph-other-executor-a1", "trainer-1"));
    // A Secret created just before the executor died (no Job owns it), and another executor's.
    const secret = (name: string, executorName: string) => ({ apiVersion: "v1", kind: "Secret", metadata: { name, namespace: "ml", labels: { "mlgraph.io/executor": executorName } }, data: { MLGRAPH_TOKEN: "dG9r" } });
    stub.secrets.set("mlgraph-left-starting-a1", secret("mlgraph-left-starting-a1", "trainer-0"));
    stub.secrets.set("mlgraph-other-starting-a1", secret("mlgraph-other-starting-a1", "trainer-1"));
    const successor = await startExecutor(server.url, ["--pool", "k8s-orphans", "--name", "trainer-0", "--runtime", "kubernetes", "--namespace", "ml", "--kubeconfig", path.join(dir, "kubeconfig")]);
    try {
      const deleted = stub.deletes.map((d) => d.name);
      expect(deleted).toContain("mlgraph-left-running-a1");
      expect(deleted).not.toContain("mlgraph-left-finished-a1");
      expect(deleted).not.toContain("mlgraph-other-executor-a1");
      expect(stub.secretDeletes).toContain("mlgraph-left-starting-a1");
      expect(stub.secrets.has("mlgraph-other-starting-a1")).toBe(true);
      // Its own Jobs carry its name.
      const runId = await submitTask({ image: IMAGE, command: ["true"], pool: "k8s-orphans" });
      const job = await jobOf(runId);
      expect(job.manifest.metadata.labels["mlgraph.io/executor"]).toBe("trainer-0");
      stub.startPod(job);
      stub.finish(job, 0);
      expect((await finished(runId)).tasks[0]).toMatchObject({ status: "SUCCEEDED" });
    } finally {
      await successor.stop();
    }
  });

  it("stops following a log that stays open after the Job ended (after --log-end-seconds)", async () => {
    const runId = await submitTask({ image: IMAGE, command: ["true"] });
    const job = await jobOf(runId);
    stub.startPod(job);
    await waitFor("the log to be followed", () => stub.openFollows() > 0);
    stub.log(job, "last words\n");
    stub.finish(job, 0, undefined, { keepLogOpen: true });
    const run = await finished(runId);
    expect(run.tasks[0]).toMatchObject({ status: "SUCCEEDED", logs: ["last words"] });
    await waitFor("the follow to be aborted", () => stub.openFollows() === 0, 3_000);
  });

  it("fails a task without an image at once, naming image, and creates no Job", async () => {
    const jobsBefore = stub.created.length;
    const runId = await submitTask({ command: ["true"] });
    const run = await finished(runId);
    expect(run.tasks[0]).toMatchObject({ status: "FAILED", failureKind: "FAILED" });
    expect(run.tasks[0].error).toMatch(/^image: the task has no container image/);
    expect(stub.created.length).toBe(jobsBefore);
  });

  it("deletes the Job, and its pods with a grace that fits the lease, once its heartbeats stop getting through (lease lost), and the attempt ends EXECUTOR_LOST", async () => {
    const target = new URL(server.url);
    const proxy = new TcpProxy(target.hostname, Number(target.port));
    await proxy.start();
    const cut = await startExecutor(`http://127.0.0.1:${proxy.port}${target.pathname}`, [
      "--pool", "k8s-lease", "--runtime", "kubernetes", "--namespace", "ml", "--kubeconfig", path.join(dir, "kubeconfig"), "--job-poll-seconds", "0.2",
      // A grace longer than the lease (3 s): the pod must be gone before the lease runs out anyway.
      "--grace-seconds", "30",
    ]);
    try {
      const runId = await submitTask({ image: IMAGE, command: ["sleep", "infinity"], pool: "k8s-lease" });
      const job = await jobOf(runId);
      stub.startPod(job);
      await waitFor("the task to run", async () => ok(await server.gql(RUN, { id: runId })).pipelineRun.tasks[0].status === "RUNNING");
      // The executor can no longer reach the server (the cluster it still can): after most of a
      // lease (3 s here) without a heartbeat it must stop the Job, as another attempt may start.
      proxy.cut();
      await waitFor("the Job to be deleted", () => stub.deletes.some((d) => d.name === job.name), 15_000);
      expect(stub.deletes.filter((d) => d.name === job.name)).toEqual([{ name: job.name, propagationPolicy: "Background" }]);
      // The garbage collector would give the pod its own 30 s: its pods are deleted with the
      // second the agent has left (3 s lease - 1.5 s unconfirmed - 0.5 s margin).
      expect(job.manifest.spec.template.spec.terminationGracePeriodSeconds).toBe(30);
      await waitFor("the Job's pods to be deleted", () => stub.podDeletes.some((d) => d.labelSelector === `job-name=${job.name}`));
      expect(stub.podDeletes.filter((d) => d.labelSelector === `job-name=${job.name}`)).toEqual([{ labelSelector: `job-name=${job.name}`, gracePeriodSeconds: 1 }]);
      const run = await finished(runId);
      expect(run.tasks[0]).toMatchObject({ status: "FAILED", failureKind: "EXECUTOR_LOST" });
    } finally {
      proxy.restore();
      await cut.stop();
      await proxy.stop();
    }
  });

  it("claims tasks of its --gpu-type and steers their pods with the type's node label, --node-selector and --toleration", async () => {
    const gpuExecutor = await startExecutor(server.url, [
      "--pool", "k8s-gpu", "--runtime", "kubernetes", "--namespace", "ml", "--kubeconfig", path.join(dir, "kubeconfig"), "--job-poll-seconds", "0.2",
      "--gpus", "2", "--gpu-type", "NVIDIA-A100-SXM4-80GB",
      "--node-selector", "node-pool=a100", "--node-selector", "topology.kubernetes.io/zone=europe-west4-a",
      "--toleration", "dedicated=ml:NoSchedule", "--toleration", "spot:NoExecute",
    ]);
    try {
      const runId = await submitTask({ image: IMAGE, command: ["python3", "train.py"], pool: "k8s-gpu", resources: { gpus: 2, gpu_type: "NVIDIA-A100-SXM4-80GB" } });
      const job = await jobOf(runId);
      const pod = job.manifest.spec.template.spec;
      expect(pod.nodeSelector).toEqual({ "node-pool": "a100", "topology.kubernetes.io/zone": "europe-west4-a", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB" });
      expect(pod.tolerations).toEqual([
        { key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" },
        { key: "dedicated", operator: "Equal", value: "ml", effect: "NoSchedule" },
        { key: "spot", operator: "Exists", effect: "NoExecute" },
      ]);
      expect(pod.containers[0].resources.limits).toMatchObject({ "nvidia.com/gpu": "2" });
      stub.startPod(job);
      stub.finish(job, 0);
      expect((await finished(runId)).tasks[0]).toMatchObject({ status: "SUCCEEDED" });
      // A CPU task on the same executor: the executor's selector and toleration, no GPU ones.
      const cpuRunId = await submitTask({ image: IMAGE, command: ["true"], pool: "k8s-gpu" });
      const cpuJob = await jobOf(cpuRunId);
      expect(cpuJob.manifest.spec.template.spec.nodeSelector).toEqual({ "node-pool": "a100", "topology.kubernetes.io/zone": "europe-west4-a" });
      expect(cpuJob.manifest.spec.template.spec.tolerations).toEqual([
        { key: "dedicated", operator: "Equal", value: "ml", effect: "NoSchedule" },
        { key: "spot", operator: "Exists", effect: "NoExecute" },
      ]);
      stub.startPod(cpuJob);
      stub.finish(cpuJob, 0);
      expect((await finished(cpuRunId)).tasks[0]).toMatchObject({ status: "SUCCEEDED" });
    } finally {
      await gpuExecutor.stop();
    }
  });

  // Last: it shuts the shared executor down.
  it("drains on SIGTERM (the Job runs on), and a second SIGTERM deletes the Job and reports the task as stopped", async () => {
    const runId = await submitTask({ image: IMAGE, command: ["sleep", "infinity"] });
    const job = await jobOf(runId);
    stub.startPod(job);
    stub.log(job, "long job\n");
    await waitFor("the task to run", async () => ok(await server.gql(RUN, { id: runId })).pipelineRun.tasks[0].logs.length > 0);
    const exited = new Promise<number | null>((resolve) => executor.process.once("exit", (code) => resolve(code)));
    executor.process.kill("SIGTERM");
    // Draining waits for the Job: many polls later it still stands.
    await new Promise((r) => setTimeout(r, 1500));
    expect(stub.deletes.some((d) => d.name === job.name)).toBe(false);
    executor.process.kill("SIGTERM");
    await waitFor("the Job to be deleted", () => stub.deletes.some((d) => d.name === job.name));
    expect(stub.deletes.filter((d) => d.name === job.name)).toEqual([{ name: job.name, propagationPolicy: "Background" }]);
    expect(await exited).toBe(0);
    const run = await finished(runId);
    expect(run.tasks[0]).toMatchObject({ status: "FAILED", failureKind: "FAILED" });
    expect(run.tasks[0].error).toMatch(/Job .* deleted \(stopped: the executor shut down\)/);
  });
});
