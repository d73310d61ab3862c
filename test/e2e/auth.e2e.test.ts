import http from "node:http";
import WebSocket from "ws";
import { collect, ok, probeUntil, sleep, startTestServer, type TestServer, waitFor } from "../helpers/test-server";

/** One operation over a graphql-ws client: its result, or the errors the server refused it with. */
function overSocket(client: ReturnType<TestServer["ws"]>, query: string, variables: Record<string, unknown> = {}): Promise<{ data?: any; errors?: any[] }> {
  return new Promise((resolve, reject) => {
    let result: { data?: any; errors?: any[] } = {};
    client.subscribe(
      { query, variables },
      {
        next: (value) => (result = value as typeof result),
        error: (err) => (Array.isArray(err) ? resolve({ errors: err }) : reject(err)),
        complete: () => resolve(result),
      },
    );
  });
}

describe("auth on a server that requires tokens", () => {
  let server: TestServer;
  let admin: string;

  beforeAll(async () => {
    server = await startTestServer({ env: { MLGRAPH_AUTH: "required", MLGRAPH_CREDENTIAL_RECHECK_SECONDS: "1" } });
    const m = /MLGRAPH_TOKEN=(\S+)/.exec(server.output());
    expect(m).not.toBeNull();
    admin = m![1];
  });
  afterAll(async () => {
    await server?.stop();
  });
  /** Runs named probe-N only show that a subscription is open (an event published before is lost). */
  const probeRun = async (experimentId: string, i: number) =>
    ok(await server.gql(`mutation($e: ID!, $n: String!) { createRun(input: {experimentId: $e, name: $n}) { id } }`, { e: experimentId, n: `probe-${i}` }, admin));
  const isProbe = (e: { data?: { runUpdated: { name: string } } }) => /^probe-/.test(e.data?.runUpdated.name ?? "");

  it("prints a bootstrap admin token once and refuses anonymous callers", async () => {
    const anon = await server.gql(`{ viewer { name } }`);
    expect(anon.status).toBe(401);
    expect(anon.errors?.[0].extensions?.code).toBe("UNAUTHENTICATED");
    const bad = await server.gql(`{ viewer { name } }`, {}, "mlg_wrong");
    expect(bad.errors?.[0].extensions?.code).toBe("UNAUTHENTICATED");
    expect(ok(await server.gql(`{ viewer { name role kind } }`, {}, admin)).viewer).toEqual({ name: "bootstrap-admin", role: "admin", kind: "token" });
  });

  it("enforces roles: viewer reads, editor writes, admin manages tokens; revoked tokens stop working", async () => {
    const mk = async (role: string) =>
      ok(await server.gql(`mutation($r: String!) { createApiToken(input: {name: $r, role: $r}) { secret token { id role prefix } } }`, { r: role }, admin)).createApiToken;
    const viewer = await mk("viewer");
    const editor = await mk("editor");
    expect(viewer.secret).toMatch(/^mlg_/);
    expect(viewer.token.prefix).toBe(viewer.secret.slice(0, 10));

    const CREATE = `mutation($n: String!) { createExperiment(input: {name: $n}) { id } }`;
    const denied = await server.gql(CREATE, { n: "by-viewer" }, viewer.secret);
    expect(denied.errors?.[0].extensions?.code).toBe("FORBIDDEN");
    ok(await server.gql(CREATE, { n: "by-editor" }, editor.secret));
    expect(ok(await server.gql(`{ experiment(name: "by-editor") { name } }`, {}, viewer.secret)).experiment).toEqual({ name: "by-editor" });
    const editorMintsToken = await server.gql(`mutation { createApiToken(input: {name: "x", role: "admin"}) { secret } }`, {}, editor.secret);
    expect(editorMintsToken.errors?.[0].extensions?.code).toBe("FORBIDDEN");
    const badRole = await server.gql(`mutation { createApiToken(input: {name: "x", role: "root"}) { secret } }`, {}, admin);
    expect(badRole.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "input.role" });

    const listed = ok(await server.gql(`{ apiTokens { id name } }`, {}, admin)).apiTokens;
    expect(JSON.stringify(listed)).not.toContain(viewer.secret);

    ok(await server.gql(`mutation($id: ID!) { revokeApiToken(id: $id) }`, { id: editor.token.id }, admin));
    const revoked = await server.gql(CREATE, { n: "after-revoke" }, editor.secret);
    expect(revoked.errors?.[0].extensions?.code).toBe("UNAUTHENTICATED");
  });

  it("authenticates graphql-ws at connection_init and ends a subscription when its token is revoked", async () => {
    const created = ok(await server.gql(`mutation { createApiToken(input: {name: "watcher", role: "viewer"}) { secret token { id } } }`, {}, admin)).createApiToken;
    const exp = ok(await server.gql(`mutation { createExperiment(input: {name: "ws-auth"}) { id } }`, {}, admin)).createExperiment;

    const anonymous = collect(server.ws(), `subscription { runUpdated { id } }`, {}, 1, 5000);
    await expect(anonymous.done).rejects.toBeDefined();

    const sub = collect<{ runUpdated: { name: string } }>(server.ws(created.secret), `subscription($e: ID) { runUpdated(experimentId: $e) { name } }`, { e: exp.id }, 5, 15_000, {
      ignore: isProbe,
    });
    await probeUntil("the token's runUpdated", (i) => probeRun(exp.id, i), sub.heardAny);
    ok(await server.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e, name: "one"}) { id } }`, { e: exp.id }, admin));
    await waitFor("the event of run one", () => sub.events.length >= 1);
    expect(sub.events[0].data?.runUpdated.name).toBe("one");

    ok(await server.gql(`mutation($id: ID!) { revokeApiToken(id: $id) }`, { id: created.token.id }, admin));
    ok(await server.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e, name: "two"}) { id } }`, { e: exp.id }, admin));
    const events = await sub.done;
    expect(sub.isCompleted()).toBe(true);
    expect(events.map((e) => e.data?.runUpdated.name)).toEqual(["one"]);
  });

  it("ends a subscription on a quiet topic when its token is revoked, without waiting for an event", async () => {
    const created = ok(await server.gql(`mutation { createApiToken(input: {name: "quiet-watcher", role: "viewer"}) { secret token { id } } }`, {}, admin)).createApiToken;
    const exp = ok(await server.gql(`mutation { createExperiment(input: {name: "ws-quiet"}) { id } }`, {}, admin)).createExperiment;
    const sub = collect<{ runUpdated: { name: string } }>(server.ws(created.secret), `subscription($e: ID) { runUpdated(experimentId: $e) { name } }`, { e: exp.id }, 1, 10_000, {
      ignore: isProbe,
    });
    await probeUntil("the token's runUpdated", (i) => probeRun(exp.id, i), sub.heardAny);
    ok(await server.gql(`mutation($id: ID!) { revokeApiToken(id: $id) }`, { id: created.token.id }, admin));
    // Nothing is published on this topic from now on: only the periodic re-check (1 s here) can end it.
    const events = await sub.done;
    expect(sub.isCompleted()).toBe(true);
    expect(events).toEqual([]);
  });

  it("stops executing queries and mutations on an open websocket once its token is revoked", async () => {
    const editor = ok(await server.gql(`mutation { createApiToken(input: {name: "ws-editor", role: "editor"}) { secret token { id } } }`, {}, admin)).createApiToken;
    const socket = server.ws(editor.secret);
    // A subscription keeps the (lazy) socket open, so every operation below runs on one connection.
    let heldEnded = false;
    const release = socket.subscribe({ query: `subscription { runUpdated { id } }` }, { next: () => undefined, error: () => (heldEnded = true), complete: () => (heldEnded = true) });
    await sleep(300);
    const CREATE = `mutation($n: String!) { createExperiment(input: {name: $n}) { id } }`;
    expect((await overSocket(socket, CREATE, { n: "ws-before-revoke" })).data?.createExperiment.id).toBeDefined();
    ok(await server.gql(`mutation($id: ID!) { revokeApiToken(id: $id) }`, { id: editor.token.id }, admin));
    // The same socket, authenticated when it opened: previously both still ran.
    const mutation = await overSocket(socket, CREATE, { n: "ws-after-revoke" });
    expect(mutation.errors?.[0].extensions?.code).toBe("UNAUTHENTICATED");
    const query = await overSocket(socket, `{ viewer { name } }`);
    expect(query.errors?.[0].extensions?.code).toBe("UNAUTHENTICATED");
    expect(ok(await server.gql(`{ experiment(name: "ws-after-revoke") { id } }`, {}, admin)).experiment).toBeNull();
    expect(heldEnded).toBe(false); // all of it on the first connection
    release();
  });
});

describe("auth defaults by address", () => {
  it("requires auth on a non-loopback address and prints the bootstrap token only on the first start", async () => {
    const first = await startTestServer({ args: ["--host", "0.0.0.0"], keep: true });
    try {
      expect(first.output()).toMatch(/MLGRAPH_TOKEN=mlg_/);
      expect((await first.gql(`{ viewer { name } }`)).status).toBe(401);
    } finally {
      await first.stop();
    }
    const second = await startTestServer({ args: ["--host", "0.0.0.0"], dataDir: first.dataDir, databaseUrl: first.databaseUrl });
    try {
      expect(second.output()).not.toMatch(/MLGRAPH_TOKEN=/);
    } finally {
      await second.stop();
    }
  });

  it("runs open on loopback with a warning, where every caller is admin", async () => {
    const server = await startTestServer();
    try {
      expect(server.output()).toMatch(/auth is OFF/);
      expect(ok(await server.gql(`{ viewer { role kind } }`)).viewer).toEqual({ role: "admin", kind: "anonymous" });
    } finally {
      await server.stop();
    }
  });

  it("on an open server, answers only requests addressed to this machine, and websockets only from local pages", async () => {
    const server = await startTestServer();
    try {
      const port = new URL(server.url).port;
      /** A POST whose Host header says `host` (what a DNS-rebinding page's requests say). */
      const postWithHost = (host: string) =>
        new Promise<number>((resolve, reject) => {
          const req = http.request({ host: "127.0.0.1", port, path: "/graphql", method: "POST", headers: { host, "content-type": "application/json" } }, (res) => {
            res.resume();
            resolve(res.statusCode!);
          });
          req.on("error", reject);
          req.end(JSON.stringify({ query: "{ viewer { role } }" }));
        });
      expect(await postWithHost(`evil.example:${port}`)).toBe(403);
      expect(await postWithHost(`localhost:${port}`)).toBe(200);
      expect(await postWithHost(`127.0.0.1:${port}`)).toBe(200);

      /** Opens the websocket as a browser page served from `origin` would; resolves with the upgrade's outcome. */
      const openFrom = (origin: string) =>
        new Promise<string>((resolve) => {
          const ws = new WebSocket(server.wsUrl, "graphql-transport-ws", { origin });
          ws.on("open", () => (ws.close(), resolve("open")));
          ws.on("unexpected-response", (_req, res) => resolve(`refused ${res.statusCode}`));
          ws.on("error", () => resolve("error"));
        });
      expect(await openFrom("https://evil.example")).toBe("refused 403");
      expect(await openFrom("null")).toBe("refused 403");
      expect(await openFrom(`http://localhost:${port}`)).toBe("open");
      expect(await openFrom("http://127.0.0.1:8888")).toBe("open"); // e.g. a local notebook
    } finally {
      await server.stop();
    }
  });

  it("refuses bad configuration with one clear line and exit code 2", async () => {
    await expect(startTestServer({ env: { MLGRAPH_AUTH: "sometimes" } })).rejects.toThrow(/configuration error: MLGRAPH_AUTH: expected auto, required or open/);
    await expect(startTestServer({ env: { MLGRAPH_AUTH: "open" }, args: ["--host", "0.0.0.0"] })).rejects.toThrow(/exited with 2[\s\S]*MLGRAPH_AUTH=open is refused/);
    await expect(startTestServer({ env: { OIDC_ISSUER: "https://idp.example", OIDC_AUDIENCE: "mlgraph", OIDC_ROLE_MAP: "null" } })).rejects.toThrow(/exited with 2[\s\S]*OIDC_ROLE_MAP: expected a JSON object/);
    await expect(startTestServer({ env: { MLGRAPH_SIGNING_SECRET: "too-short" } })).rejects.toThrow(/exited with 2[\s\S]*MLGRAPH_SIGNING_SECRET: must be at least 32 bytes/);
  });
});
