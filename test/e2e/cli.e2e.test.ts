/** The `mlgraph` client commands as a shell user runs them: child processes against a live server. */
import { startExecutor } from "../helpers/executors";
import { startFlakyProxy } from "../helpers/flaky-proxy";
import { TcpProxy } from "../helpers/tcp-proxy";
import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { MAIN, ok, probeUntil, sleep, startTestServer, type TestServer } from "../helpers/test-server";

let server: TestServer;
let tmp: string;

beforeAll(async () => {
  server = await startTestServer();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-cli-"));
});
afterAll(async () => {
  await server?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI in the background, collecting its output as it comes. */
function spawnCli(args: string[], url = server.url) {
  const child = spawn(process.execPath, [MAIN, ...args], { env: { PATH: process.env.PATH ?? "", MLGRAPH_URL: url } });
  const out = { stdout: "", stderr: "" };
  child.stdout.on("data", (d: Buffer) => (out.stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out.stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  return { child, out, exited };
}

async function until(what: string, condition: () => boolean, timeoutMs = 20_000): Promise<void> {
  for (const started = Date.now(); !condition(); await sleep(100)) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
  }
}

/** A proxy in front of the test server: cut() drops every connection (a network blip). */
async function proxyToServer(): Promise<{ proxy: TcpProxy; url: string }> {
  const target = new URL(server.url);
  const proxy = new TcpProxy(target.hostname, Number(target.port));
  await proxy.start();
  return { proxy, url: `http://127.0.0.1:${proxy.port}${target.pathname}` };
}

function cli(args: string[], env: Record<string, string> = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { env: { PATH: process.env.PATH ?? "", MLGRAPH_URL: server.url, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === "number" ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

async function json<T = any>(args: string[]): Promise<T> {
  const r = await cli([...args, "--json"]);
  if (r.code !== 0) throw new Error(`mlgraph ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

async function seedRuns() {
  const exp = ok(await server.gql(`mutation { createExperiment(input: {name: "cli-exp"}) { id } }`)).createExperiment;
  const ids: string[] = [];
  for (const [name, lr, losses] of [["base", "0.1", [0.9, 0.5]], ["better", "0.01", [0.8, 0.3]]] as const) {
    const run = ok(await server.gql(`mutation($e: ID!, $n: String!, $lr: String!) { createRun(input: {experimentId: $e, name: $n, params: [{key: "lr", value: $lr}, {key: "epochs", value: "2"}]}) { id } }`, { e: exp.id, n: name, lr })).createRun;
    ok(await server.gql(`mutation($id: ID!, $p: [MetricPointInput!]!) { logMetrics(runId: $id, points: $p) { accepted } }`, { id: run.id, p: losses.map((value, step) => ({ key: "loss", value, step })) }));
    ids.push(run.id);
  }
  return { experimentId: exp.id, base: ids[0], better: ids[1] };
}

describe("mlgraph CLI", () => {
  let runs: Awaited<ReturnType<typeof seedRuns>>;
  beforeAll(async () => {
    runs = await seedRuns();
  });

  it("lists experiments and runs as aligned tables and as JSON", async () => {
    const exps = await cli(["experiments", "list"]);
    expect(exps.code).toBe(0);
    expect(exps.stdout.split("\n")[0]).toMatch(/^ID\s+NAME\s+CREATED\s+TAGS$/);
    expect(exps.stdout).toContain("cli-exp");

    const table = await cli(["runs", "list", "--experiment", "cli-exp", "--order-by", "metrics.loss ASC"]);
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^ID\s+NAME\s+EXPERIMENT\s+STATUS\s+STARTED\s+loss$/);
    expect(lines.slice(1).map((l) => l.split(/\s+/)[1])).toEqual(["better", "base"]);
    // Aligned: every row's NAME column starts where the header's does.
    const col = lines[0].indexOf("NAME");
    for (const l of lines.slice(1)) expect(l[col - 1]).toBe(" ");

    const filtered = await json<{ name: string }[]>(["runs", "list", "--filter", "params.lr = '0.1'"]);
    expect(filtered.map((r) => r.name)).toEqual(["base"]);
  });

  it("shows one run and compares runs against a baseline", async () => {
    const show = await cli(["runs", "show", runs.better]);
    expect(show.code).toBe(0);
    expect(show.stdout).toMatch(/name\s+better/);
    expect(show.stdout).toMatch(/loss\s+0\.3\s+0\.3\s+0\.8\s+1\s+2/);

    const compare = await cli(["runs", "compare", runs.base, runs.better, "--metric", "loss"]);
    expect(compare.code).toBe(0);
    expect(compare.stdout).toMatch(/RUN\s+ID\s+params\.lr\s+loss/);
    expect(compare.stdout).toMatch(/base \*.*0\.1\s+0\.5/);
    expect(compare.stdout).toMatch(/better.*0\.01\s+0\.3 \(-0\.2\)/);
    const data = await json(["runs", "compare", runs.base, runs.better]);
    expect(data.differingParams).toEqual(["lr"]);
  });

  it("watches a run's metrics live until the run ends", async () => {
    const run = ok(await server.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e, name: "watched"}) { id } }`, { e: runs.experimentId })).createRun;
    const child = spawn(process.execPath, [MAIN, "runs", "watch", run.id], { env: { PATH: process.env.PATH ?? "", MLGRAPH_URL: server.url } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
    await until("the watch to start", () => stderr.includes("watching"));
    // Live points only (no --from-step), and the metric subscription opens after "watching" is
    // printed: a point logged before the server holds it is never shown. A point of the key
    // "probe" every second until one is printed.
    const LOG_POINT = `mutation($id: ID!, $k: String!, $s: SafeInt!) { logMetrics(runId: $id, points: [{key: $k, value: 0.5, step: $s}]) { accepted } }`;
    await probeUntil("the watch's metric stream", async (i) => ok(await server.gql(LOG_POINT, { id: run.id, k: "probe", s: i })), () => /probe = /.test(stdout));
    for (let step = 0; step < 3; step++) {
      ok(await server.gql(LOG_POINT, { id: run.id, k: "acc", s: step }));
      await sleep(100);
    }
    await until("the three points", () => (stdout.match(/acc = /g) ?? []).length >= 3);
    ok(await server.gql(`mutation($id: ID!) { updateRun(input: {runId: $id, status: FINISHED}) { id } }`, { id: run.id }));
    const code = await Promise.race([exited, sleep(20_000).then(() => "timeout")]);
    if (code === "timeout") child.kill();
    expect(code).toBe(0);
    expect(stdout).toMatch(/step\s+0\s+acc = 0\.5/);
    expect(stdout).toMatch(/step\s+2\s+acc = 0\.5/);
    expect(stderr).toContain("run FINISHED");
  });

  it("watch --from-step on a run that already ended replays its points and exits (it waited forever)", async () => {
    const run = ok(await server.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e, name: "ended-watch"}) { id } }`, { e: runs.experimentId })).createRun;
    ok(await server.gql(`mutation($id: ID!) { logMetrics(runId: $id, points: [{key: "acc", value: 0.25, step: 0}, {key: "acc", value: 0.75, step: 1}]) { accepted } }`, { id: run.id }));
    ok(await server.gql(`mutation($id: ID!) { updateRun(input: {runId: $id, status: FINISHED}) { id } }`, { id: run.id }));
    const started = Date.now();
    const watched = await cli(["runs", "watch", run.id, "--from-step", "0"]);
    expect(watched.code).toBe(0);
    // About 3 s of quiet after the replay plus a CLI start-up; it used to wait forever.
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(watched.stdout).toMatch(/step\s+0\s+acc = 0\.25/);
    expect(watched.stdout).toMatch(/step\s+1\s+acc = 0\.75/);
    expect(watched.stderr).toContain("run FINISHED");
  });

  it("exits with codes a shell can act on, and says what to do", async () => {
    const missing = await cli(["runs", "show", "00000000-0000-4000-8000-000000000000"]);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toMatch(/^mlgraph: run .* not found/);

    const badFlag = await cli(["runs", "list", "--no-such-flag"]);
    expect(badFlag.code).toBe(2);
    const badValue = await cli(["runs", "list", "--limit", "zero"]);
    expect(badValue.code).toBe(2);
    expect(badValue.stderr).toContain("--limit: expected a positive integer");
    const badFilter = await cli(["runs", "list", "--filter", "metrics.loss <<< 1"]);
    expect(badFilter.code).toBe(2);

    const badToken = await cli(["runs", "list"], { MLGRAPH_TOKEN: "mlg_nope" });
    expect(badToken.code).toBe(4);
    expect(badToken.stderr).toContain("--token or MLGRAPH_TOKEN");

    const down = await cli(["runs", "list", "--server", "http://127.0.0.1:9/graphql"]);
    expect(down.code).toBe(1);
    expect(down.stderr).toContain("is the server running?");
  });

  it("creates and revokes tokens; a viewer token cannot write", async () => {
    const created = await cli(["token", "create", "ci-viewer", "--role", "viewer"]);
    expect(created.code).toBe(0);
    const secret = /secret \(shown only once\): (\S+)/.exec(created.stdout)![1];
    const id = /created token (\S+)/.exec(created.stdout)![1];
    const asViewer = await cli(["runs", "list", "--json"], { MLGRAPH_TOKEN: secret });
    expect(asViewer.code).toBe(0);
    const forbidden = await cli(["token", "create", "x"], { MLGRAPH_TOKEN: secret });
    expect(forbidden.code).toBe(4);
    const list = await cli(["token", "list"]);
    expect(list.stdout).toContain("ci-viewer");
    expect((await cli(["token", "revoke", id])).code).toBe(0);
    const revoked = await cli(["runs", "list"], { MLGRAPH_TOKEN: secret });
    expect(revoked.code).toBe(4);
    expect((await cli(["token", "create", "x", "--role", "root"])).code).toBe(2);
  });

  it("uploads and downloads artifacts (file and folder) with progress, and registers, aliases and promotes a model", async () => {
    const run = ok(await server.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e, name: "trainer"}) { id } }`, { e: runs.experimentId })).createRun;
    const modelDir = path.join(tmp, "model");
    fs.mkdirSync(path.join(modelDir, "sub"), { recursive: true });
    fs.writeFileSync(path.join(modelDir, "weights.bin"), Buffer.alloc(200_000, 7));
    fs.writeFileSync(path.join(modelDir, "sub", "config.json"), '{"layers": 2}');

    const up = await cli(["artifacts", "upload", run.id, modelDir, "--progress"]);
    expect(up.code).toBe(0);
    expect(up.stdout).toContain("uploaded model/weights.bin");
    expect(up.stdout).toContain("uploaded model/sub/config.json");
    expect(up.stderr).toMatch(/upload model \[#+\] 100%/);

    const listed = await cli(["artifacts", "list", run.id, "--path", "model"]);
    expect(listed.stdout).toMatch(/model\/sub\//);
    expect(listed.stdout).toMatch(/model\/weights\.bin\s+200000/);

    const out = path.join(tmp, "downloaded");
    const down = await cli(["artifacts", "download", run.id, "model", "--out", out]);
    expect(down.code).toBe(0);
    expect(fs.readFileSync(path.join(out, "weights.bin")).equals(Buffer.alloc(200_000, 7))).toBe(true);
    expect(fs.readFileSync(path.join(out, "sub", "config.json"), "utf8")).toBe('{"layers": 2}');
    const one = await cli(["artifacts", "download", run.id, "model/sub/config.json", "--out", path.join(tmp, "c.json")]);
    expect(one.code).toBe(0);
    expect(fs.readFileSync(path.join(tmp, "c.json"), "utf8")).toBe('{"layers": 2}');
    expect((await cli(["artifacts", "download", run.id, "nope"])).code).toBe(3);

    const card = path.join(tmp, "card.md");
    fs.writeFileSync(card, "# churn\nIntended use: tests.\n");
    const reg = await cli(["models", "register", "cli-churn", "--run", run.id, "--path", "model", "--model-card", card]);
    expect(reg.code).toBe(0);
    expect(reg.stdout).toContain("registered cli-churn version 1");
    expect((await cli(["models", "alias", "cli-churn", "champion", "1"])).stdout).toContain("cli-churn@champion -> version 1");
    const versions = await cli(["models", "versions", "cli-churn"]);
    expect(versions.stdout).toMatch(/^VERSION\s+STAGE\s+ALIASES/);
    expect(versions.stdout).toMatch(/1\s+NONE\s+@champion/);
    expect((await cli(["models", "list"])).stdout).toMatch(/cli-churn\s+1\s+NONE\s+@champion=v1/);

    // Requested with a token: the open loopback admin (no token) may approve its own requests,
    // there being no one else; a named requester may not.
    const requester = /secret \(shown only once\): (\S+)/.exec((await cli(["token", "create", "requester", "--role", "admin"])).stdout)![1];
    const promote = await cli(["models", "promote", "cli-churn", "1"], { MLGRAPH_TOKEN: requester });
    expect(promote.code).toBe(0);
    expect(promote.stdout).toMatch(/NONE -> PRODUCTION/);
    const requestId = /request (\S+):/.exec(promote.stdout)![1];
    if (/: PENDING/.test(promote.stdout)) {
      // The requester may not approve their own request: a second admin does.
      const self = await cli(["models", "approve", requestId], { MLGRAPH_TOKEN: requester });
      expect(self.code).toBe(4);
      expect(self.stderr).toMatch(/someone else must approve/);
      const approver = /secret \(shown only once\): (\S+)/.exec((await cli(["token", "create", "approver", "--role", "admin"])).stdout)![1];
      const approved = await cli(["models", "approve", requestId, "--comment", "looks good"], { MLGRAPH_TOKEN: approver });
      expect(approved.stderr).toBe("");
      expect(approved.code).toBe(0);
      expect(approved.stdout).toMatch(/: APPROVED/);
    }
    const v = await json(["models", "versions", "cli-churn"]);
    expect(v[0].stage).toBe("PRODUCTION");
    expect((await cli(["models", "versions", "no-such-model"])).code).toBe(3);
  });

  it("registers a pipeline from YAML, submits it with params and shows its status", async () => {
    const spec = path.join(tmp, "p.yaml");
    fs.writeFileSync(
      spec,
      `pipeline:\n  name: cli-pipe\n  params:\n    epochs: {type: int, default: 1}\n  tasks:\n    - id: prepare\n      command: ["python3", "-c", "print(1)"]\n    - id: train\n      command: ["python3", "-c", "print({{epochs}})"]\n      depends_on: [prepare]\n`,
    );
    const created = await cli(["pipeline", "create", spec]);
    expect(created.code).toBe(0);
    expect(created.stdout).toMatch(/pipeline cli-pipe version 1/);
    expect((await cli(["pipeline", "list"])).stdout).toMatch(/cli-pipe\s+1/);

    const submitted = await json(["pipeline", "submit", "cli-pipe", "--param", "epochs=3"]);
    expect(submitted.params).toEqual({ epochs: 3 });
    const status = await cli(["pipeline", "status", submitted.id]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^TASK\s+STATUS\s+ATTEMPT/m);
    expect(status.stdout).toMatch(/prepare\s+(QUEUED|PENDING)/);
    expect(status.stdout).toMatch(/train\s+PENDING/);

    const badParam = await cli(["pipeline", "submit", "cli-pipe", "--param", "epochs"]);
    expect(badParam.code).toBe(2);
    const wrongType = await cli(["pipeline", "submit", "cli-pipe", "--param", "epochs=many"]);
    expect(wrongType.code).toBe(2);
    // `--version` after the subcommand is submit's (it used to print mlgraph's version and exit 0).
    expect((await json(["pipeline", "submit", "cli-pipe", "--version", "1"])).params).toEqual({ epochs: 1 });
    const noSuchVersion = await cli(["pipeline", "submit", "cli-pipe", "--version", "7"]);
    expect(noSuchVersion.code).toBe(3);
    expect(noSuchVersion.stdout).not.toContain("0.1.0");
    expect((await cli(["--version"])).stdout.trim()).toBe("0.1.0");
    const invalid = path.join(tmp, "bad.yaml");
    fs.writeFileSync(invalid, "pipeline:\n  name: bad\n  tasks:\n    - id: a\n      command: [x]\n      depends_on: [nope]\n");
    const refused = await cli(["pipeline", "create", invalid]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain("nope");
    expect((await cli(["pipeline", "status", "00000000-0000-4000-8000-000000000000"])).code).toBe(3);
    const prepareTask = status.stdout.match(/prepare\s+\S+\s+\S+\s+\S+\s+\S+\s+(\S+)/)![1];
    const logs = await cli(["pipeline", "logs", prepareTask]);
    expect(logs.code).toBe(0);

    // --follow before the task has run: lines stream in once an executor runs it, and the command
    // ends by itself when the task is final.
    const follow = cli(["pipeline", "logs", prepareTask, "--follow"]);
    await new Promise((r) => setTimeout(r, 1000));
    const executor = await startExecutor(server.url, ["--pool", "default", "--concurrency", "1"]);
    try {
      const followed = await follow;
      expect(followed.code).toBe(0);
      expect(followed.stdout.split("\n").filter(Boolean)).toContain("1");
    } finally {
      await executor.stop();
    }
  });

  it("watch --from-step prints each point once across a reconnect (the resubscription's replay printed them all again)", async () => {
    const run = ok(await server.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e, name: "watch-reconnect"}) { id } }`, { e: runs.experimentId })).createRun;
    const logStep = async (s: number) =>
      ok(await server.gql(`mutation($id: ID!, $s: SafeInt!) { logMetrics(runId: $id, points: [{key: "acc", value: 0.5, step: $s}]) { accepted } }`, { id: run.id, s }));
    for (let step = 0; step < 3; step++) await logStep(step);
    const { proxy, url } = await proxyToServer();
    const watch = spawnCli(["runs", "watch", run.id, "--from-step", "0"], url);
    try {
      await until("the replay", () => (watch.out.stdout.match(/acc = /g) ?? []).length >= 3);
      proxy.cut();
      await sleep(500);
      proxy.restore();
      // graphql-ws reconnects (backoff from 250 ms) and resubscribes with fromStep 0: the server
      // replays steps 0-2 again; give that time to arrive before the next point.
      await sleep(4000);
      await logStep(3);
      await until("the live point after the reconnect", () => /step\s+3\s+acc/.test(watch.out.stdout));
      ok(await server.gql(`mutation($id: ID!) { updateRun(input: {runId: $id, status: FINISHED}) { id } }`, { id: run.id }));
      expect(await Promise.race([watch.exited, sleep(20_000).then(() => "timeout")])).toBe(0);
    } finally {
      watch.child.kill();
      await proxy.stop();
    }
    const steps = watch.out.stdout.split("\n").filter(Boolean).map((l) => Number(/step\s+(\d+)/.exec(l)![1]));
    expect(steps).toEqual([0, 1, 2, 3]);
  });

  it("list commands page past the server's page limits and note on stderr when --limit cut the list (they stopped at one page, or failed QUERY_TOO_COMPLEX)", async () => {
    const exp = ok(await server.gql(`mutation { createExperiment(input: {name: "cli-many"}) { id } }`)).createExperiment;
    for (let i = 0; i < 230; i += 10) {
      await Promise.all(Array.from({ length: 10 }, (_, j) => server.gql(`mutation($e: ID!, $n: String!) { createRun(input: {experimentId: $e, name: $n}) { id } }`, { e: exp.id, n: `many-${i + j}` }).then(ok)));
    }
    const list = async (limit: string[]) => {
      const r = await cli(["runs", "list", "--experiment", "cli-many", ...limit, "--json"]);
      expect(r.code).toBe(0);
      const rows = JSON.parse(r.stdout) as { id: string }[];
      expect(new Set(rows.map((x) => x.id)).size).toBe(rows.length);
      return { count: rows.length, stderr: r.stderr };
    };
    expect(await list(["--limit", "300"])).toEqual({ count: 230, stderr: "" });
    expect(await list(["--limit", "230"])).toEqual({ count: 230, stderr: "" });
    const cut = await list(["--limit", "210"]);
    expect(cut.count).toBe(210);
    expect(cut.stderr).toBe("note: showing the first 210 runs; more exist (raise --limit)\n");
    expect((await list([])).count).toBe(50);

    for (const args of [["experiments", "list"], ["models", "list"], ["models", "versions", "cli-churn"], ["pipeline", "list"]]) {
      const r = await cli([...args, "--limit", "2000", "--json"]);
      expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code: 0, stderr: "" });
      expect(Array.isArray(JSON.parse(r.stdout))).toBe(true);
    }
    const oneExperiment = await cli(["experiments", "list", "--limit", "1"]);
    expect(oneExperiment.stderr).toMatch(/^note: showing the first 1 of \d+ experiments; more exist \(raise --limit\)\n$/);
  });

  it("pipeline submit --priority refuses what is not an integer, naming the flag (it submitted at the default priority)", async () => {
    for (const bad of ["high", "1.5", ""]) {
      const r = await cli(["pipeline", "submit", "cli-pipe", "--priority", bad]);
      expect({ bad, code: r.code }).toEqual({ bad, code: 2 });
      expect(r.stderr).toContain(`--priority: expected an integer, got ${JSON.stringify(bad)}`);
    }
    expect((await cli(["pipeline", "submit", "cli-pipe", "--priority", "5"])).code).toBe(0);
  });

  it("pipeline submit resends a submission whose answer was lost with its idempotency key, and starts one run (it failed NETWORK_ERROR, and a resubmission started the pipeline twice)", async () => {
    ok(await server.gql(`mutation($s: JSON!) { createPipeline(input: {spec: $s}) { version } }`, { s: { pipeline: { name: "cli-resend", tasks: [{ id: "a", command: ["true"], pool: "never-claimed" }] } } }));
    let lose = true;
    const proxy = await startFlakyProxy(server.url, (body) => (lose && body.includes("submitPipelineRun") ? ((lose = false), "lose-answer") : false));
    let r: Result;
    try {
      r = await cli(["pipeline", "submit", "cli-resend", "--json"], { MLGRAPH_URL: proxy.url });
    } finally {
      await proxy.close();
    }
    expect(r.code).toBe(0);
    const run = JSON.parse(r.stdout);
    // The server did start a run for the send whose answer was lost: the resend was answered with it.
    expect(proxy.lostAnswers).toHaveLength(1);
    expect(proxy.lostAnswers[0]).toContain(run.id);
    const listed = ok(await server.gql(`{ pipelineRuns(pipelineName: "cli-resend") { edges { node { id } } } }`)).pipelineRuns.edges;
    expect(listed.map((e: any) => e.node.id)).toEqual([run.id]);
  });

  it("artifacts download of one file into an existing folder writes it inside, under its name (EISDIR, and a .partial left behind)", async () => {
    const run = ok(await server.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e, name: "download-into"}) { id } }`, { e: runs.experimentId })).createRun;
    const file = path.join(tmp, "weights.txt");
    fs.writeFileSync(file, "w=1\n");
    expect((await cli(["artifacts", "upload", run.id, file, "--path", "model/weights.txt"])).code).toBe(0);
    const into = path.join(tmp, "into");
    fs.mkdirSync(into);
    const r = await cli(["artifacts", "download", run.id, "model/weights.txt", "--out", into]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(fs.readFileSync(path.join(into, "weights.txt"), "utf8")).toBe("w=1\n");
    expect(fs.existsSync(`${into}.partial`)).toBe(false);
  });

  describe("a pipeline with a long log", () => {
    let taskRunId: string;

    it("pipeline submit --wait rides out a dropped connection while waiting (it exited 1 at the first network error)", async () => {
      const spec = path.join(tmp, "chatty.yaml");
      fs.writeFileSync(spec, `pipeline:\n  name: cli-chatty\n  tasks:\n    - id: chatty\n      command: ["python3", "-c", "for i in range(12345): print(i)"]\n`);
      expect((await cli(["pipeline", "create", spec])).code).toBe(0);
      const { proxy, url } = await proxyToServer();
      const wait = spawnCli(["pipeline", "submit", "cli-chatty", "--wait"], url);
      try {
        await until("the submitted run", () => /QUEUED 0\/1/.test(wait.out.stderr));
        proxy.cut();
        await sleep(3000); // a few polls fail meanwhile
        proxy.restore();
        const executor = await startExecutor(server.url, ["--pool", "default", "--concurrency", "1"]);
        try {
          expect(await Promise.race([wait.exited, sleep(60_000).then(() => "timeout")])).toBe(0);
        } finally {
          await executor.stop();
        }
      } finally {
        wait.child.kill();
        await proxy.stop();
      }
      expect(wait.out.stderr).toMatch(/retrying/);
      taskRunId = /chatty\s+SUCCEEDED\s+\S+\s+\S+\s+\S+\s+(\S+)/.exec(wait.out.stdout)![1];
    });

    it("pipeline logs prints every line past the 10,000 of one read (it stopped there silently)", async () => {
      expect(taskRunId).toBeDefined();
      const r = await cli(["pipeline", "logs", taskRunId]);
      expect(r.code).toBe(0);
      const lines = r.stdout.split("\n").slice(0, -1);
      expect(lines.length).toBe(12345);
      expect(lines.every((l, i) => l === String(i))).toBe(true);
      const tail = await cli(["pipeline", "logs", taskRunId, "--from-line", "12000"]);
      expect(tail.stdout.split("\n").slice(0, -1)).toEqual(Array.from({ length: 345 }, (_, i) => String(12000 + i)));
    });
  });
});
