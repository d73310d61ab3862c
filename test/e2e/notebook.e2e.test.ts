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

  it("fails loudly (non-zero exit, the error code) when the server is not there", async () => {
    const code = await new Promise<number>((resolve) => {
      execFile("python3", [path.join(ROOT, "examples/notebook.py")], { env: { PATH: process.env.PATH ?? "", MLGRAPH_URL: "http://127.0.0.1:9/graphql" }, timeout: 60_000 }, (err) =>
        resolve(err ? Number((err as { code?: number }).code ?? 1) : 0),
      );
    });
    expect(code).not.toBe(0);
  });
});
