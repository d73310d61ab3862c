/** CI runs examples/notebook.py (standard-library Python client) against a live server. */
import { execFile, execFileSync } from "node:child_process";
import path from "node:path";
import { startFlakyProxy } from "../helpers/flaky-proxy";
import { ROOT, ok, startTestServer, type TestServer } from "../helpers/test-server";

function hasPython(): boolean {
  try {
    execFileSync("python3", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

const python = hasPython();
if (!python) {
  const message = "notebook e2e SKIPPED: python3 is not installed on this machine";
  console.warn(`\n*** ${message} ***\n`);
  if (process.env.MLGRAPH_REQUIRE_ALL_SERVICES) throw new Error(`${message} (MLGRAPH_REQUIRE_ALL_SERVICES is set)`);
}

(python ? describe : describe.skip)("examples/notebook.py", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("walks the seed's flows against a live server and exits 0", async () => {
    const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        "python3",
        [path.join(ROOT, "examples/notebook.py")],
        { env: { PATH: process.env.PATH ?? "", MLGRAPH_URL: server.url, NOTEBOOK_SUFFIX: "ci" }, timeout: 90_000 },
        (err, out, errOut) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout: out, stderr: errOut }),
      );
    });
    if (code !== 0) throw new Error(`notebook.py exited ${code}\n${stdout}\n${stderr}`);
    expect(stdout).toContain("notebook OK");
    expect(stdout).toMatch(/registered churn-nb-ci v1, @champion -> v1/);
    // What the notebook did is visible through the API, not only in its own output.
    const model = ok(await server.gql(`query { modelVersion(name: "churn-nb-ci", alias: "champion") { version run { name metric(key: "loss") { summary { count } } } } }`)).modelVersion;
    expect(model).toEqual({ version: 1, run: { name: "lr-0.1", metric: { summary: { count: 20 } } } });
  });

  it("python client: refuses bad points alone, ends the run even when a batch was refused, and does not retry a wrong URL forever", async () => {
    // Each line of output is checked below; the script stops at its first unexpected outcome.
    const script = `
import sys, time
sys.path.insert(0, ${JSON.stringify(path.join(ROOT, "client/python"))})
import mlgraph_client as m
c = m.Client(sys.argv[1])
run = c.start_run("python-edges", name="edges")
for bad in [("val:acc", 1.0, 0), ("loss\\n", 1.0, 0), ("loss", 1.0, 0.5), ("loss", 1.0, -1)]:
    try:
        run.log_metric(*bad)
        print("accepted", bad)
    except ValueError:
        print("refused at log_metric")
run.log_metric("loss", float("nan"), 0)
print("nan counted", run.rejected)
for i in range(5):
    run.log_metric("loss", 1.0 / (i + 1), i)
run.flush()
# A batch the server refused (recorded as the flusher does): finish() still ends the run, then
# raises it (the run used to stay RUNNING).
run.errors.append(m.MlgraphError("points[0].key: refused", "BAD_USER_INPUT", "points[0].key"))
try:
    run.finish()
    print("finish raised nothing")
except m.MlgraphError as e:
    print("finish raised", e.code)
print("run", c.query("query($id: ID!) { run(id: $id) { status } }", {"id": run.id})["run"]["status"])
wrong = m.Client(sys.argv[1].replace("/graphql", "/graphq"))
started = time.time()
try:
    wrong.query("{ viewer { name } }")
except m.MlgraphError as e:
    print("wrong url", e.code, e.retryable, time.time() - started < 5)
`;
    const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile("python3", ["-c", script, server.url], { env: { PATH: process.env.PATH ?? "" }, timeout: 60_000 }, (err, out, errOut) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout: out, stderr: errOut }),
      );
    });
    if (code !== 0) throw new Error(`python exited ${code}\n${stdout}\n${stderr}`);
    expect(stdout.trim().split("\n")).toEqual([
      "refused at log_metric",
      "refused at log_metric",
      "refused at log_metric",
      "refused at log_metric",
      "nan counted 1",
      "finish raised BAD_USER_INPUT",
      "run FINISHED",
      "wrong url BAD_REQUEST False True",
    ]);
  });

  /** Runs a Python script with the client importable as `m`; argv[1] is the server's URL. */
  function py(body: string, args: string[] = [server.url]): Promise<{ code: number; stdout: string; stderr: string; seconds: number }> {
    const script = `import sys, time\nsys.path.insert(0, ${JSON.stringify(path.join(ROOT, "client/python"))})\nimport mlgraph_client as m\n${body}`;
    const started = Date.now();
    return new Promise((resolve) => {
      execFile("python3", ["-c", script, ...args], { env: { PATH: process.env.PATH ?? "" }, timeout: 60_000 }, (err, out, errOut) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout: out, stderr: errOut, seconds: (Date.now() - started) / 1000 }),
      );
    });
  }

  it("python client: a script that ends without finish() has its points delivered and its run ended at exit (they were lost)", async () => {
    const log = `
c = m.Client(sys.argv[1])
run = c.start_run("python-atexit", name=sys.argv[2])
for i in range(100):
    run.log_metric("loss", 1.0 / (i + 1), i)
print(run.id)
`;
    const clean = await py(log, [server.url, "clean"]);
    expect(clean.code).toBe(0);
    const crashed = await py(log + `raise RuntimeError("training blew up")\n`, [server.url, "crashed"]);
    expect(crashed.code).toBe(1);
    const status = async (id: string) => ok(await server.gql(`query($id: ID!) { run(id: $id) { status metric(key: "loss") { summary { count } } } }`, { id })).run;
    expect(await status(clean.stdout.trim())).toEqual({ status: "FINISHED", metric: { summary: { count: 100 } } });
    // An uncaught exception ends it FAILED, its points delivered all the same.
    expect(await status(crashed.stdout.trim())).toEqual({ status: "FAILED", metric: { summary: { count: 100 } } });

    // Server down: the exit waits about exit_timeout, not forever, and says what was lost.
    const down = await py(
      `run = m.Run(m.Client(sys.argv[1]), "00000000-0000-4000-8000-000000000000", "down", exit_timeout=2)\nfor i in range(10):\n    run.log_metric("loss", 0.5, i)\n`,
      ["http://127.0.0.1:9/graphql"],
    );
    expect(down.code).toBe(0);
    expect(down.seconds).toBeLessThan(15); // 2 s and a Python start-up; it waited forever
    expect(down.stderr).toMatch(/at exit, run 00000000-0000-4000-8000-000000000000: .*10 metric points not delivered/);
  });

  it("python client: a run whose end was not confirmed stays open for the exit hook, a later failure wins, and many open runs share one exit deadline", async () => {
    const status = async (id: string) => ok(await server.gql(`query($id: ID!) { run(id: $id) { status } }`, { id })).run.status;
    // finish() meets an outage once: the run was dropped from the open runs before the server
    // confirmed its end, so it stayed RUNNING for good.
    const refusedOnce = await py(`
c = m.Client(sys.argv[1])
run = c.start_run("python-end-retry", name="refused-once")
real, calls = c.finish_run, []
def flaky(run_id, status="FINISHED", timeout=None):
    calls.append(status)
    if len(calls) == 1:
        raise m.MlgraphError("server away", "UNAVAILABLE")
    return real(run_id, status, timeout=timeout)
c.finish_run = flaky
try:
    run.finish()
except m.MlgraphError:
    pass
print(run.id)
`);
    expect(refusedOnce.code).toBe(0);
    expect(await status(refusedOnce.stdout.trim())).toBe("FINISHED");
    // Ctrl-C during the flush of a with block's finish(): the run ends FAILED (it was sent FINISHED).
    const interrupted = await py(`
c = m.Client(sys.argv[1])
run = c.start_run("python-end-retry", name="interrupted")
print(run.id, flush=True)
def interrupt(timeout=300.0):
    raise KeyboardInterrupt()
run.flush = interrupt
with run:
    run.log_metric("loss", 1.0, 0)
`);
    expect(interrupted.code).not.toBe(0);
    expect(await status(interrupted.stdout.trim())).toBe("FAILED");
    // 20 runs left open on a server that accepts connections and never answers: about one
    // exit_timeout in all (each waited its own: 43 s for 20 runs).
    const silent = await py(`
import socket
silent = socket.socket()
silent.bind(("127.0.0.1", 0))
silent.listen(100)
url = "http://127.0.0.1:%d/graphql" % silent.getsockname()[1]
runs = [m.Run(m.Client(url), "00000000-0000-4000-8000-%012d" % i, "silent", exit_timeout=2) for i in range(20)]
for run in runs:
    run.log_metric("loss", 0.5, 0)
`);
    expect({ code: silent.code, stderr: silent.stderr }).toEqual({ code: 0, stderr: expect.any(String) }); // shows stderr on failure
    expect(silent.seconds).toBeLessThan(15); // 2 s and a Python start-up; one 2 s per run was 43 s
    expect(silent.stderr).toMatch(/at exit, run 00000000-0000-4000-8000-0000000000\d\d/);
  });

  it("python client: log_metric after finish() raises, and a second finish() changes nothing (it hung 300 s, or flipped FINISHED to FAILED)", async () => {
    const r = await py(`
c = m.Client(sys.argv[1])
run = c.start_run("python-twice", name="twice")
run.log_metric("loss", 1.0, 0)
print("first", run.finish()["status"])
try:
    run.log_metric("loss", 2.0, 1)
    print("logged after finish")
except m.MlgraphError as e:
    print("log after finish raised", e.code)
started = time.time()
print("second", run.finish()["status"], time.time() - started < 5)
try:
    with c.start_run("python-twice", name="with") as inner:
        inner.log_metric("loss", 1.0, 0)
        inner.finish()
        raise KeyError("after the explicit finish")
except KeyError:
    pass
print("with", c.get_run(inner.id)["status"])
print("run", c.get_run(run.id)["status"], c.get_run(run.id)["metrics"][0]["summary"]["count"])
`);
    if (r.code !== 0) throw new Error(`python exited ${r.code}\n${r.stdout}\n${r.stderr}`);
    expect(r.stdout.trim().split("\n")).toEqual(["first FINISHED", "log after finish raised CONFLICT", "second FINISHED True", "with FINISHED", "run FINISHED 1"]);
  });

  it("python client: log_metric stays O(1) once the buffer is full during an outage (each call moved the whole list)", async () => {
    const r = await py(
      `
run = m.Run(m.Client(sys.argv[1]), "00000000-0000-4000-8000-000000000000", "down", max_buffered=400_000)
t = time.perf_counter()
for i in range(400_000):
    run.log_metric("loss", 0.5, i)
below = (time.perf_counter() - t) / 400_000
# The least of five rounds: a round that a loaded machine's scheduler (or the sender thread)
# interrupted says nothing about what a call costs; an O(n) call is slow in every round.
at = float("inf")
for _ in range(5):
    t = time.perf_counter()
    for i in range(10_000):
        run.log_metric("loss", 0.5, i)
    at = min(at, (time.perf_counter() - t) / 10_000)
print("ratio %.2f" % (at / below))
print("dropped", run.dropped > 0, "kept", len(run._buffer) <= 400_000, flush=True)
import os
os._exit(0)  # the server is down: skip the exit hook's wait for it
`,
      ["http://127.0.0.1:9/graphql"],
    );
    if (r.code !== 0) throw new Error(`python exited ${r.code}\n${r.stdout}\n${r.stderr}`);
    const [ratio, rest] = r.stdout.trim().split("\n");
    // Below the bound a call costs a few µs; at the bound it cost ~9x that with 400,000 points held.
    expect(Number(ratio.split(" ")[1])).toBeLessThan(3);
    expect(rest).toBe("dropped True kept True");
  });

  it("python client: helpers raise MlgraphError, not TypeError (missing experiment, numpy values), and take numpy float steps", async () => {
    // numpy where installed; otherwise a stand-in with what matters: not a float, has .item()/shape.
    const r = await py(`
try:
    import numpy as np
    f32, i64, arr = np.float32, np.int64, (lambda v: np.array(v))
except ImportError:
    import numbers
    class f32:
        shape = ()
        def __init__(self, v): self.v = v
        def item(self): return float(self.v)
        def __float__(self): return float(self.v)
    numbers.Real.register(f32)
    i64 = int
    class arr:
        shape = (2,)
        def __init__(self, v): pass
c = m.Client(sys.argv[1])
try:
    c.search_runs("no-such-experiment")
except m.MlgraphError as e:
    print("search_runs", e.code, e.field)
run = c.start_run("python-numpy", name="np")
print(c.log_metrics(run.id, [{"key": "x", "value": f32(0.5), "step": i64(0)}])["accepted"])
try:
    c.log_metrics(run.id, [{"key": "x", "value": arr([1.0, 2.0]), "step": 1}])
except m.MlgraphError as e:
    print("array", e.code, e.field)
run.log_metric("loss", f32(0.25), f32(7.0))
try:
    run.log_metric("loss", 1.0, f32(7.5))
except ValueError:
    print("fractional step refused")
run.finish()
print("history", c.metric_history(run.id, "loss"))
`);
    if (r.code !== 0) throw new Error(`python exited ${r.code}\n${r.stdout}\n${r.stderr}`);
    expect(r.stdout.trim().split("\n").slice(0, 4)).toEqual(["search_runs NOT_FOUND experiment", "1", "array BAD_USER_INPUT variables", "fractional step refused"]);
    expect(r.stdout).toMatch(/history \[\{'step': 7, 'value': 0\.25, /);
  });

  it("python client: an artifact part PUT is retried after a dropped connection and a 5xx, not after a 4xx", async () => {
    const r = await py(`
import http.server, threading
answers = []
class Part(http.server.BaseHTTPRequestHandler):
    def do_PUT(self):
        self.rfile.read(int(self.headers["content-length"]))
        answer = script.pop(0) if script else 200
        answers.append(answer)
        if answer == "drop":
            self.connection.close()
            return
        self.send_response(answer)
        self.send_header("etag", '"e1"')
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Part)
threading.Thread(target=srv.serve_forever, daemon=True).start()
url = "http://127.0.0.1:%d/part" % srv.server_address[1]
script = ["drop", 503]
print("etag", m._put(url, b"x" * 1000, {}), answers)
answers.clear()
script = [403]
try:
    m._put(url, b"x", {})
except m.MlgraphError as e:
    print("4xx", e.code, answers)
answers.clear()
script = [503] * 10
try:
    m._put(url, b"x", {})
except m.MlgraphError as e:
    print("5xx", e.code, len(answers))
`);
    if (r.code !== 0) throw new Error(`python exited ${r.code}\n${r.stdout}\n${r.stderr}`);
    expect(r.stdout.trim().split("\n")).toEqual([`etag "e1" ['drop', 503, 200]`, "4xx BAD_USER_INPUT [403]", "5xx UNAVAILABLE 4"]);
  });

  it("python client: start_run and register_model resend a create whose answer was lost, with one idempotency key each: one run, one version (they failed NETWORK_ERROR, and a resend made a second)", async () => {
    // The first answer of each create is cut off after the server applied it.
    const lose = new Set(["createRun(", "createModelVersion("]);
    const proxy = await startFlakyProxy(server.url, (body) => {
      const op = [...lose].find((o) => body.includes(o));
      if (!op) return false;
      lose.delete(op);
      return "lose-answer";
    });
    let r;
    try {
      r = await py(
        `
c = m.Client(sys.argv[1])
run = c.start_run("python-resend", name="resent")
c.upload_artifact(run.id, "model.bin", b"weights")
version = c.register_model("python-resend", run.id, "model.bin")
run.finish()
print(run.id, version["version"])
`,
        [proxy.url],
      );
    } finally {
      await proxy.close();
    }
    if (r.code !== 0) throw new Error(`python exited ${r.code}\n${r.stdout}\n${r.stderr}`);
    const [runId, version] = r.stdout.trim().split(" ");
    expect(version).toBe("1");
    expect(proxy.lostAnswers).toHaveLength(2);
    expect(proxy.lostAnswers[0]).toContain(runId);
    const experiment = ok(await server.gql(`{ experiment(name: "python-resend") { runs(first: 10) { edges { node { id status } } } } }`)).experiment;
    expect(experiment.runs.edges).toEqual([{ node: { id: runId, status: "FINISHED" } }]);
    const model = ok(await server.gql(`{ registeredModel(name: "python-resend") { versions { edges { node { version } } } } }`)).registeredModel;
    expect(model.versions.edges).toEqual([{ node: { version: 1 } }]);
  });

  it("fails loudly (non-zero exit, the error code) when the server is not there", async () => {
    const code = await new Promise<number>((resolve) => {
      execFile("python3", [path.join(ROOT, "examples/notebook.py")], { env: { PATH: process.env.PATH ?? "", MLGRAPH_URL: "http://127.0.0.1:9/graphql" }, timeout: 60_000 }, (err) =>
        resolve(err ? Number((err as { code?: number }).code ?? 1) : 0),
      );
    });
    expect(code).not.toBe(0);
  });
});
