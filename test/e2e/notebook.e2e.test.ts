/** CI runs examples/notebook.py (standard-library Python client) against a live server. */
import { execFile, execFileSync } from "node:child_process";
import path from "node:path";
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

  it("fails loudly (non-zero exit, the error code) when the server is not there", async () => {
    const code = await new Promise<number>((resolve) => {
      execFile("python3", [path.join(ROOT, "examples/notebook.py")], { env: { PATH: process.env.PATH ?? "", MLGRAPH_URL: "http://127.0.0.1:9/graphql" }, timeout: 60_000 }, (err) =>
        resolve(err ? Number((err as { code?: number }).code ?? 1) : 0),
      );
    });
    expect(code).not.toBe(0);
  });
});
