import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

/**
 * A stand-in for the few Kubernetes API server endpoints the executor's Kubernetes runtime calls,
 * so the real @kubernetes/client-node client can be pointed at it (see `writeKubeconfig`): create,
 * read, list (by label) and delete Jobs, list a Job's pods by `job-name` label, follow a pod's log,
 * list events by field selector, delete pods by label selector, create, patch (ownerReferences), list and delete Secrets; a
 * deleted Job's owned Secrets go with it. No controller
 * runs here: the test decides when a Job's pod exists, what it prints, and how it ends.
 */
export interface StubJob {
  name: string;
  namespace: string;
  manifest: any;
  status: Record<string, unknown>;
  pod: any | null;
}

export interface KubeApiStub {
  url: string;
  /** Jobs created, in order (deleted ones included). */
  created: StubJob[];
  /** DELETE calls: the Job and its propagation policy (query parameter or body). */
  deletes: { name: string; propagationPolicy: string | undefined }[];
  /** Authorization headers seen (the kubeconfig's token proves the real client sent them). */
  authorizations: Set<string>;
  /** Requests answered, as "METHOD path". */
  requests: string[];
  /** Secrets that exist now, by name (a deleted Job's dependents are gone with it, as the garbage collector does). */
  secrets: Map<string, any>;
  /** Secrets created, in order (deleted ones included). */
  secretsCreated: any[];
  /** Names of the Secrets deleted by a DELETE call. */
  secretDeletes: string[];
  /** DELETE calls on the pod collection: the label selector and the grace asked for. */
  podDeletes: { labelSelector: string | undefined; gracePeriodSeconds: number | undefined }[];
  /** Namespaces where every request is refused with 403 (an account without RBAC there). */
  forbiddenNamespaces: Set<string>;
  /** The next `count` requests matching `method` and `path` get `code` (a 5xx, an API server restarting), with `message` in the Status. */
  failNext(method: string, path: RegExp, count: number, code?: number, message?: string): void;
  /** Requests matching `method` and `path` get no answer until `release()` (a half-open connection). */
  hang(method: string, path: RegExp): { release(): void };
  /** A Job that exists before the test's executor starts (left by another one). */
  addJob(manifest: any, status?: Record<string, unknown>): StubJob;
  /** Log follows still open. */
  openFollows(): number;
  /** Waits for a created Job whose container env has `name=value`. */
  waitForJob(envName: string, envValue: string, timeoutMs?: number): Promise<StubJob>;
  /** The pod starts its container: running and ready. */
  startPod(job: StubJob): void;
  /** The pod waits, e.g. ErrImagePull / ImagePullBackOff. */
  podWaiting(job: StubJob, reason: string, message: string): void;
  /**
   * Appends to the pod's log (followers get it at once). Lines started by one call share a
   * timestamp (`timestamps=true`); `sameTimestamp` gives them the previous call's.
   */
  log(job: StubJob, text: string | Buffer, options?: { sameTimestamp?: boolean }): void;
  /** The Job controller cannot create the Job's pod (quota, admission): a FailedCreate event for the Job, no pod. */
  failedCreate(job: StubJob, message: string): void;
  /** The API server drops the open follows of the pod's log: a clean end, or a reset connection. */
  dropFollows(job: StubJob, how: "end" | "reset"): void;
  /** Log reads, in order, with the options that matter for resuming one. */
  logRequests: { pod: string; follow: boolean; timestamps: boolean; sinceTime?: string }[];
  /** The container exits with `exitCode`; the Job is Complete (0) or Failed with `reason`. */
  finish(job: StubJob, exitCode: number, failure?: { reason: string; message: string }, options?: { keepLogOpen?: boolean }): void;
  /** Like startPod, with a sidecar container listed before the task's (as its name sorts first). */
  startPodWithSidecar(job: StubJob): void;
  stop(): Promise<void>;
}

interface PodLog {
  /** Lines with the timestamp the "runtime" gave them; the last may lack its newline yet. */
  lines: { ts: string; text: Buffer }[];
  ended: boolean;
  followers: Set<{ res: http.ServerResponse; timestamps: boolean }>;
}

/** A line as the kubelet sends it: with `timestamps=true`, RFC3339Nano and a space first. */
function render(ts: string, text: Buffer, timestamps: boolean): Buffer {
  return timestamps ? Buffer.concat([Buffer.from(`${ts} `), text]) : text;
}

function status(res: http.ServerResponse, code: number, reason: string, message: string): void {
  res.writeHead(code, { "content-type": "application/json" });
  res.end(JSON.stringify({ kind: "Status", apiVersion: "v1", status: "Failure", reason, message, code }));
}

function json(res: http.ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

export async function startKubeApiStub(): Promise<KubeApiStub> {
  const jobs = new Map<string, StubJob>();
  const created: StubJob[] = [];
  const deletes: KubeApiStub["deletes"] = [];
  const authorizations = new Set<string>();
  const requests: string[] = [];
  const logs = new Map<string, PodLog>();
  const logRequests: KubeApiStub["logRequests"] = [];
  const events: any[] = [];
  const secrets = new Map<string, any>();
  const secretsCreated: any[] = [];
  const secretDeletes: string[] = [];
  const podDeletes: KubeApiStub["podDeletes"] = [];
  let uids = 0;
  let lastTimestamp = "";
  let stamps = 0;
  const jobWaiters = new Set<() => void>();
  const forbiddenNamespaces = new Set<string>();
  const failures: { method: string; path: RegExp; count: number; code: number; message: string }[] = [];
  const hangs: { method: string; path: RegExp; held: http.ServerResponse[]; released: boolean }[] = [];

  const podLog = (pod: string): PodLog => {
    let l = logs.get(pod);
    if (!l) logs.set(pod, (l = { lines: [], ended: false, followers: new Set() }));
    return l;
  };
  const endLog = (pod: string) => {
    const l = podLog(pod);
    l.ended = true;
    for (const f of l.followers) f.res.end();
    l.followers.clear();
  };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url!, "http://stub");
    requests.push(`${req.method} ${url.pathname}`);
    if (req.headers.authorization) authorizations.add(req.headers.authorization);
    let body = "";
    req.on("data", (d: Buffer) => (body += d.toString()));
    req.on("end", () => {
      let m: RegExpExecArray | null;
      const ns = /^\/apis?\/(?:batch\/)?v1\/namespaces\/([^/]+)/.exec(url.pathname)?.[1];
      if (ns && forbiddenNamespaces.has(ns)) return status(res, 403, "Forbidden", `jobs.batch is forbidden: User "stub" cannot list resource "jobs" in API group "batch" in the namespace "${ns}"`);
      const failure = failures.find((f) => f.count > 0 && f.method === req.method && f.path.test(url.pathname));
      if (failure) {
        failure.count--;
        return status(res, failure.code, failure.code === 403 ? "Forbidden" : "InternalError", failure.message);
      }
      const hung = hangs.find((h) => !h.released && h.method === req.method && h.path.test(url.pathname));
      if (hung) return void hung.held.push(res);
      if (req.method === "GET" && (m = /^\/apis\/batch\/v1\/namespaces\/([^/]+)\/jobs$/.exec(url.pathname))) {
        const selector = (url.searchParams.get("labelSelector") ?? "").split(",").filter(Boolean).map((s) => s.split("=") as [string, string]);
        const items = [...jobs.values()]
          .filter((j) => j.namespace === m![1] && selector.every(([k, v]) => j.manifest.metadata.labels?.[k] === v))
          .map((j) => ({ ...j.manifest, status: j.status }));
        const limit = Number(url.searchParams.get("limit") ?? 0);
        return json(res, 200, { kind: "JobList", apiVersion: "batch/v1", metadata: {}, items: limit > 0 ? items.slice(0, limit) : items });
      }
      if (req.method === "POST" && (m = /^\/apis\/batch\/v1\/namespaces\/([^/]+)\/jobs$/.exec(url.pathname))) {
        const manifest = JSON.parse(body);
        const name = manifest.metadata.name as string;
        if (jobs.has(name)) return status(res, 409, "AlreadyExists", `jobs.batch "${name}" already exists`);
        manifest.metadata.uid = `uid-${++uids}`;
        const job: StubJob = { name, namespace: m[1]!, manifest, status: {}, pod: null };
        jobs.set(name, job);
        created.push(job);
        for (const w of jobWaiters) w();
        return json(res, 201, { ...manifest, status: {} });
      }
      if ((m = /^\/apis\/batch\/v1\/namespaces\/([^/]+)\/jobs\/([^/]+)(\/status)?$/.exec(url.pathname))) {
        const job = jobs.get(m[2]!);
        if (!job) return status(res, 404, "NotFound", `jobs.batch "${m[2]}" not found`);
        if (req.method === "GET") return json(res, 200, { ...job.manifest, status: job.status });
        if (req.method === "DELETE") {
          const fromBody = body ? (JSON.parse(body) as { propagationPolicy?: string }).propagationPolicy : undefined;
          deletes.push({ name: job.name, propagationPolicy: url.searchParams.get("propagationPolicy") ?? fromBody });
          jobs.delete(job.name);
          if (job.pod) endLog(job.pod.metadata.name);
          // The garbage collector: the Job's dependents go with it.
          for (const [name, secret] of secrets) if (secret.metadata.ownerReferences?.some((o: any) => o.uid === job.manifest.metadata.uid)) secrets.delete(name);
          return json(res, 200, { kind: "Status", apiVersion: "v1", status: "Success" });
        }
      }
      if (req.method === "DELETE" && (m = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(url.pathname))) {
        const fromBody = body ? (JSON.parse(body) as { gracePeriodSeconds?: number }).gracePeriodSeconds : undefined;
        const grace = url.searchParams.get("gracePeriodSeconds");
        podDeletes.push({ labelSelector: url.searchParams.get("labelSelector") ?? undefined, gracePeriodSeconds: grace !== null ? Number(grace) : fromBody });
        return json(res, 200, { kind: "PodList", apiVersion: "v1", metadata: {}, items: [] });
      }
      if (req.method === "GET" && (m = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(url.pathname))) {
        const selector = /^job-name=(.+)$/.exec(url.searchParams.get("labelSelector") ?? "");
        if (!selector) return status(res, 400, "BadRequest", "this stub lists pods by job-name only");
        const pod = jobs.get(selector[1]!)?.pod;
        return json(res, 200, { kind: "PodList", apiVersion: "v1", metadata: {}, items: pod ? [pod] : [] });
      }
      if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/secrets$/.exec(url.pathname))) {
        if (req.method === "POST") {
          const secret = JSON.parse(body);
          if (secrets.has(secret.metadata.name)) return status(res, 409, "AlreadyExists", `secrets "${secret.metadata.name}" already exists`);
          secret.metadata.uid = `uid-${++uids}`;
          secrets.set(secret.metadata.name, secret);
          secretsCreated.push(secret);
          return json(res, 201, secret);
        }
        if (req.method === "GET") {
          const selector = (url.searchParams.get("labelSelector") ?? "").split(",").filter(Boolean).map((l) => l.split("=") as [string, string]);
          const items = [...secrets.values()].filter((x) => x.metadata.namespace === m![1] && selector.every(([k, v]) => x.metadata.labels?.[k] === v));
          return json(res, 200, { kind: "SecretList", apiVersion: "v1", metadata: {}, items });
        }
      }
      if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/secrets\/([^/]+)$/.exec(url.pathname))) {
        const secret = secrets.get(m[2]!);
        if (!secret) return status(res, 404, "NotFound", `secrets "${m[2]}" not found`);
        if (req.method === "DELETE") {
          secrets.delete(m[2]!);
          secretDeletes.push(m[2]!);
          return json(res, 200, { kind: "Status", apiVersion: "v1", status: "Success" });
        }
        if (req.method === "PATCH") {
          // JSON Patch, "add" at a top-level metadata field only: what the executor sends.
          if (req.headers["content-type"] !== "application/json-patch+json") return status(res, 415, "UnsupportedMediaType", `the stub takes JSON Patch, got ${req.headers["content-type"]}`);
          for (const op of JSON.parse(body) as { op: string; path: string; value: unknown }[]) {
            const field = /^\/metadata\/([A-Za-z]+)$/.exec(op.path)?.[1];
            if (op.op !== "add" || !field) return status(res, 422, "Invalid", `the stub cannot apply ${JSON.stringify(op)}`);
            secret.metadata[field] = op.value;
          }
          return json(res, 200, secret);
        }
      }
      if (req.method === "GET" && (m = /^\/api\/v1\/namespaces\/([^/]+)\/events$/.exec(url.pathname))) {
        // Field selectors as the API server takes them for events: dotted paths, k=v joined by commas.
        const fields = (url.searchParams.get("fieldSelector") ?? "").split(",").filter(Boolean).map((f) => f.split("=") as [string, string]);
        const field = (e: any, p: string) => p.split(".").reduce((o, k) => o?.[k], e);
        const items = events.filter((e) => e.metadata.namespace === m![1] && fields.every(([k, v]) => String(field(e, k)) === v));
        return json(res, 200, { kind: "EventList", apiVersion: "v1", metadata: {}, items });
      }
      if (req.method === "GET" && (m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/log$/.exec(url.pathname))) {
        if (![...jobs.values()].some((j) => j.pod?.metadata.name === m![2])) return status(res, 404, "NotFound", `pods "${m[2]}" not found`);
        const l = podLog(m[2]!);
        const follow = url.searchParams.get("follow") === "true";
        const timestamps = url.searchParams.get("timestamps") === "true";
        const sinceTime = url.searchParams.get("sinceTime") ?? undefined;
        logRequests.push({ pod: m[2]!, follow, timestamps, ...(sinceTime !== undefined && { sinceTime }) });
        // The kubelet compares whole lines' timestamps with sinceTime.
        const since = sinceTime !== undefined ? Date.parse(sinceTime) : -Infinity;
        res.writeHead(200, { "content-type": "text/plain" });
        res.write(Buffer.concat(l.lines.filter((line) => Date.parse(line.ts) >= since).map((line) => render(line.ts, line.text, timestamps))));
        if (l.ended || !follow) return res.end();
        const follower = { res, timestamps };
        l.followers.add(follower);
        res.on("close", () => l.followers.delete(follower));
        return;
      }
      status(res, 404, "NotFound", `the stub does not serve ${req.method} ${url.pathname}`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;

  const setPod = (job: StubJob, podStatus: Record<string, unknown>) => {
    job.pod = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: `${job.name}-x7k2p`, namespace: job.namespace, labels: { "job-name": job.name, "batch.kubernetes.io/job-name": job.name } },
      spec: job.manifest.spec.template.spec,
      status: podStatus,
    };
  };
  const container = (state: Record<string, unknown>, ready: boolean, name = "task") => ({ name, image: "", imageID: "", ready, restartCount: 0, state });

  return {
    url: `http://127.0.0.1:${port}`,
    created,
    deletes,
    authorizations,
    requests,
    logRequests,
    secrets,
    secretsCreated,
    secretDeletes,
    podDeletes,
    forbiddenNamespaces,
    failNext(method, path, count, code = 500, message = "the stub was told to fail this request") {
      failures.push({ method, path, count, code, message });
    },
    hang(method, path) {
      const h = { method, path, held: [] as http.ServerResponse[], released: false };
      hangs.push(h);
      return {
        release() {
          h.released = true;
          for (const r of h.held) status(r, 503, "ServiceUnavailable", "released");
        },
      };
    },
    addJob(manifest, jobStatus = { active: 1, ready: 1 }) {
      const job: StubJob = { name: manifest.metadata.name, namespace: manifest.metadata.namespace, manifest, status: jobStatus, pod: null };
      jobs.set(job.name, job);
      return job;
    },
    openFollows() {
      return [...logs.values()].reduce((n, l) => n + l.followers.size, 0);
    },
    async waitForJob(envName, envValue, timeoutMs = 30_000) {
      const find = () => created.find((j) => (j.manifest.spec.template.spec.containers[0].env as { name: string; value: string }[]).some((e) => e.name === envName && e.value === envValue));
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const job = find();
        if (job) return job;
        if (Date.now() > deadline) throw new Error(`no Job with ${envName}=${envValue} was created in ${timeoutMs} ms (requests: ${requests.join(", ")})`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 200);
          jobWaiters.add(() => {
            clearTimeout(timer);
            resolve();
          });
        });
        jobWaiters.clear();
      }
    },
    startPod(job) {
      setPod(job, { phase: "Running", conditions: [{ type: "PodScheduled", status: "True" }], containerStatuses: [container({ running: { startedAt: new Date().toISOString() } }, true)] });
      job.status = { active: 1, ready: 1 };
    },
    startPodWithSidecar(job) {
      const running = { running: { startedAt: new Date().toISOString() } };
      setPod(job, { phase: "Running", conditions: [{ type: "PodScheduled", status: "True" }], containerStatuses: [container(running, true, "istio-proxy"), container(running, true)] });
      job.status = { active: 1, ready: 1 };
    },
    podWaiting(job, reason, message) {
      setPod(job, { phase: "Pending", conditions: [{ type: "PodScheduled", status: "True" }], containerStatuses: [container({ waiting: { reason, message } }, false)] });
      job.status = { active: 1, ready: 0 };
    },
    log(job, text, options) {
      const l = podLog(job.pod.metadata.name);
      // One timestamp per call, as the runtime stamps what one read of the container's output
      // brought (several lines may share it); strictly increasing otherwise, nanoseconds included.
      const ts = options?.sameTimestamp && lastTimestamp ? lastTimestamp : (lastTimestamp = `${new Date().toISOString().slice(0, 23)}${String(++stamps % 1_000_000).padStart(6, "0")}Z`);
      let rest = Buffer.from(text);
      while (rest.length > 0) {
        const nl = rest.indexOf(10);
        const piece = nl < 0 ? rest : rest.subarray(0, nl + 1);
        rest = rest.subarray(piece.length);
        const last = l.lines[l.lines.length - 1];
        const continues = last !== undefined && last.text[last.text.length - 1] !== 10;
        if (continues) last.text = Buffer.concat([last.text, piece]);
        else l.lines.push({ ts, text: Buffer.from(piece) });
        for (const f of l.followers) f.res.write(continues ? piece : render(ts, piece, f.timestamps));
      }
    },
    failedCreate(job, message) {
      const now = new Date().toISOString();
      const previous = events.find((e) => e.involvedObject.name === job.name && e.reason === "FailedCreate");
      if (previous) {
        previous.count++;
        previous.lastTimestamp = now;
        previous.message = message;
        return;
      }
      events.push({
        metadata: { name: `${job.name}.${events.length}`, namespace: job.namespace },
        involvedObject: { kind: "Job", apiVersion: "batch/v1", name: job.name, namespace: job.namespace },
        reason: "FailedCreate",
        type: "Warning",
        message,
        count: 1,
        firstTimestamp: now,
        lastTimestamp: now,
        source: { component: "job-controller" },
      });
    },
    dropFollows(job, how) {
      const l = podLog(job.pod.metadata.name);
      for (const f of l.followers) {
        if (how === "reset") f.res.destroy();
        else f.res.end();
      }
      l.followers.clear();
    },
    finish(job, exitCode, failure, options) {
      const now = new Date().toISOString();
      const sidecars = (job.pod.status.containerStatuses as { name: string }[]).filter((c) => c.name !== "task");
      job.pod.status = {
        phase: exitCode === 0 ? "Succeeded" : "Failed",
        // A sidecar keeps running after the task's container ended.
        containerStatuses: [...sidecars, container({ terminated: { exitCode, reason: exitCode === 0 ? "Completed" : "Error", startedAt: now, finishedAt: now } }, false)],
      };
      if (!options?.keepLogOpen) endLog(job.pod.metadata.name);
      job.status = failure
        ? { failed: 1, ready: 0, conditions: [{ type: "Failed", status: "True", reason: failure.reason, message: failure.message, lastTransitionTime: now }] }
        : { succeeded: 1, ready: 0, conditions: [{ type: "Complete", status: "True", lastTransitionTime: now }] };
    },
    async stop() {
      for (const l of logs.values()) for (const f of l.followers) f.res.end();
      for (const h of hangs) for (const r of h.held) r.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A kubeconfig file (JSON is YAML) whose only cluster is the stub, with a bearer token. */
export function writeKubeconfig(dir: string, stubUrl: string, token = "stub-token"): string {
  const file = path.join(dir, "kubeconfig");
  const config = {
    apiVersion: "v1",
    kind: "Config",
    // client-node refuses a plain-HTTP server unless TLS verification is off for it.
    clusters: [{ name: "stub", cluster: { server: stubUrl, "insecure-skip-tls-verify": true } }],
    users: [{ name: "stub", user: { token } }],
    contexts: [{ name: "stub", context: { cluster: "stub", user: "stub" } }],
    "current-context": "stub",
  };
  fs.writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}
