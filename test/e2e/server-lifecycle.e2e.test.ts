import fs from "node:fs";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { makeDataDir, ok, startTestServer, MAIN, type TestServer } from "../helpers/test-server";

function postmasterPid(dataDir: string): number | null {
  const file = path.join(dataDir, "pg", "postmaster.pid");
  if (!fs.existsSync(file)) return null;
  return Number(fs.readFileSync(file, "utf8").split("\n")[0]);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("embedded defaults (no DATABASE_URL): the zero-setup path", () => {
  const dataDir = makeDataDir();
  afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));

  it("initialises PostgreSQL on first start, keeps data across restarts, shuts down cleanly on SIGTERM", async () => {
    let server: TestServer = await startTestServer({ embeddedPostgres: true, dataDir, keep: true });
    expect(fs.existsSync(path.join(dataDir, "pg", "PG_VERSION"))).toBe(true);
    ok(await server.gql(`mutation { createExperiment(input: {name: "persisted"}) { id } }`));
    const pid = postmasterPid(dataDir);
    expect(pid).toBeGreaterThan(0);
    expect(await server.stop()).toBe(0);
    expect(alive(pid!)).toBe(false);

    server = await startTestServer({ embeddedPostgres: true, dataDir, keep: true });
    const found = ok(await server.gql(`query { experiment(name: "persisted") { name } }`)).experiment;
    expect(found).toEqual({ name: "persisted" });
    expect(server.output()).not.toMatch(/initialising embedded PostgreSQL/);

    // kill -9 leaves the postmaster orphaned; the next start must stop it and come up.
    await server.kill9();
    server = await startTestServer({ embeddedPostgres: true, dataDir, keep: true });
    expect(ok(await server.gql(`query { experiment(name: "persisted") { name } }`)).experiment).toEqual({ name: "persisted" });
    expect(await server.stop()).toBe(0);
  });
});

describe("HTTP surface", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("serves /healthz and /readyz (which checks the database)", async () => {
    const base = server.url.replace(/\/graphql$/, "");
    expect(await (await fetch(`${base}/healthz`)).json()).toEqual({ status: "ok" });
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: "ready", checks: expect.objectContaining({ database: "ok" }) });
  });

  it("serves GraphiQL to browsers at GET /graphql, self-contained (no external host loaded)", async () => {
    const res = await fetch(server.url, { headers: { accept: "text/html" } });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/text\/html/);
    const html = await res.text();
    expect(html).toMatch(/graphiql/i);
    // Every resource the page loads (src/href attributes, CSS url(), imports) is inline or same-origin.
    const loaded = [...html.matchAll(/(?:src|href)\s*=\s*["']([^"']+)["']|url\(\s*["']?(https?:[^"')]+)|import\(\s*["'](https?:[^"']+)/gi)]
      .map((m) => m[1] ?? m[2] ?? m[3])
      .filter((u) => /^(https?:)?\/\//i.test(u));
    expect(loaded).toEqual([]);
    expect(html).toContain("/graphql");
  });

  it("answers API clients on POST /graphql with JSON", async () => {
    const res = await server.gql(`{ __typename }`);
    expect(res.data).toEqual({ __typename: "Query" });
  });
});

describe("schema file", () => {
  it("schema/schema.graphql is what the code builds (run `npm run schema` after changing the API)", () => {
    const built = execFileSync(process.execPath, [MAIN, "schema"], { encoding: "utf8" });
    const committed = fs.readFileSync(path.resolve(__dirname, "../../schema/schema.graphql"), "utf8");
    expect(committed).toBe(built);
  });
});
