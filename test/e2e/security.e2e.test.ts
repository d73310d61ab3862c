import crypto from "node:crypto";
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { execFileSync } from "node:child_process";
import {
  buildSchema,
  getNamedType,
  isEnumType,
  isInputObjectType,
  isListType,
  isNonNullType,
  isObjectType,
  isScalarType,
  type GraphQLField,
  type GraphQLInputType,
  type GraphQLSchema,
} from "graphql";
import { MAIN, ok, sleep, startTestServer, type TestServer } from "../helpers/test-server";

const b64url = (v: Buffer | string) => Buffer.from(v).toString("base64url");

function signJwt(header: Record<string, unknown>, payload: Record<string, unknown>, key: crypto.KeyObject | null): string {
  const data = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  if (!key) return `${data}.`;
  return `${data}.${b64url(crypto.sign("sha256", Buffer.from(data), key))}`;
}

describe("OIDC bearer JWTs", () => {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const other = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  let jwks: http.Server;
  let issuer: string;
  let server: TestServer;
  let adminToken: string;

  beforeAll(async () => {
    jwks = http.createServer((req, res) => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ keys: [{ ...publicKey.export({ format: "jwk" }), kid: "k1", alg: "RS256", use: "sig" }] }));
    });
    await new Promise<void>((r) => jwks.listen(0, "127.0.0.1", () => r()));
    issuer = `http://127.0.0.1:${(jwks.address() as import("node:net").AddressInfo).port}`;
    server = await startTestServer({
      env: {
        MLGRAPH_AUTH: "required",
        OIDC_ISSUER: issuer,
        OIDC_AUDIENCE: "mlgraph",
        OIDC_JWKS_URL: `${issuer}/jwks`,
        OIDC_ROLE_CLAIM: "groups",
        OIDC_ROLE_MAP: JSON.stringify({ "ml-admins": "admin", "ml-engineers": "editor" }),
      },
    });
    adminToken = /MLGRAPH_TOKEN=(\S+)/.exec(server.output())![1];
  });
  afterAll(async () => {
    await server?.stop();
    jwks?.close();
  });

  const now = () => Math.floor(Date.now() / 1000);
  const claims = (extra: Record<string, unknown> = {}) => ({ iss: issuer, aud: "mlgraph", sub: "user-1", email: "ana@example.com", iat: now(), exp: now() + 600, groups: ["ml-engineers"], ...extra });
  const HEADER = { alg: "RS256", typ: "JWT", kid: "k1" };

  it("accepts a valid token and maps its group claim to a role", async () => {
    const viewer = ok(await server.gql(`{ viewer { name role kind } }`, {}, signJwt(HEADER, claims(), privateKey))).viewer;
    expect(viewer).toEqual({ name: "ana@example.com", role: "editor", kind: "oidc" });
    const admin = ok(await server.gql(`{ viewer { role } }`, {}, signJwt(HEADER, claims({ groups: ["ml-admins", "x"] }), privateKey))).viewer;
    expect(admin.role).toBe("admin");
    const unmapped = ok(await server.gql(`{ viewer { role } }`, {}, signJwt(HEADER, claims({ groups: [] }), privateKey))).viewer;
    expect(unmapped.role).toBe("viewer");
    // With a role map, a group merely named like a role is not one (previously: admin, editor).
    for (const groups of [["admin"], ["editor", "random"], ["constructor"]]) {
      expect(ok(await server.gql(`{ viewer { role } }`, {}, signJwt(HEADER, claims({ groups }), privateKey))).viewer.role).toBe("viewer");
    }
    // API tokens keep working beside OIDC.
    expect(ok(await server.gql(`{ viewer { kind } }`, {}, adminToken)).viewer.kind).toBe("token");
  });

  it.each([
    ["expired", () => signJwt(HEADER, claims({ exp: now() - 120 }), privateKey)],
    ["not yet valid", () => signJwt(HEADER, claims({ nbf: now() + 600 }), privateKey)],
    ["wrong audience", () => signJwt(HEADER, claims({ aud: "someone-else" }), privateKey)],
    ["wrong issuer", () => signJwt(HEADER, claims({ iss: "https://evil.example" }), privateKey)],
    ["unknown key", () => signJwt({ ...HEADER, kid: "k2" }, claims(), other.privateKey)],
    ["known kid, wrong key", () => signJwt(HEADER, claims(), other.privateKey)],
    ["alg none", () => signJwt({ alg: "none", typ: "JWT" }, claims({ groups: ["ml-admins"] }), null)],
    [
      "tampered payload",
      () => {
        const [h, , s] = signJwt(HEADER, claims(), privateKey).split(".");
        return `${h}.${b64url(JSON.stringify(claims({ groups: ["ml-admins"] })))}.${s}`;
      },
    ],
    ["HS256 with the public key as secret", () => {
      const data = `${b64url(JSON.stringify({ alg: "HS256", typ: "JWT", kid: "k1" }))}.${b64url(JSON.stringify(claims({ groups: ["ml-admins"] })))}`;
      return `${data}.${b64url(crypto.createHmac("sha256", publicKey.export({ format: "pem", type: "spki" })).update(data).digest())}`;
    }],
  ])("refuses a token that is %s with UNAUTHENTICATED", async (_label, make) => {
    const res = await server.gql(`{ viewer { role } }`, {}, make());
    expect(res.status).toBe(401);
    expect(res.errors?.[0].extensions?.code).toBe("UNAUTHENTICATED");
    expect(res.data ?? null).toBeNull();
  });
});

describe("OIDC issuer unavailable", () => {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  // A stand-in issuer whose discovery document and key set the test switches on and off.
  const up = { discovery: false, jwks: false };
  const hits = { discovery: 0, jwks: 0 };
  let idp: http.Server;
  let issuer: string;
  let server: TestServer;
  /** Long enough for the four requests of answers() to fall inside one cooldown, even on a loaded machine. */
  const RETRY_SECONDS = 4;

  beforeAll(async () => {
    idp = http.createServer((req, res) => {
      const which = req.url === "/.well-known/openid-configuration" ? "discovery" : req.url === "/jwks" ? "jwks" : null;
      if (!which) return void res.writeHead(404).end();
      hits[which]++;
      if (!up[which]) return void res.writeHead(503).end("down");
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify(which === "discovery" ? { issuer, jwks_uri: `${issuer}/jwks` } : { keys: [{ ...publicKey.export({ format: "jwk" }), kid: "k1", alg: "RS256", use: "sig" }] }));
    });
    await new Promise<void>((r) => idp.listen(0, "127.0.0.1", () => r()));
    issuer = `http://127.0.0.1:${(idp.address() as import("node:net").AddressInfo).port}`;
    // A failed fetch is remembered RETRY_SECONDS (10 by default), so the test waits that long twice.
    server = await startTestServer({ env: { MLGRAPH_AUTH: "required", OIDC_ISSUER: issuer, OIDC_AUDIENCE: "mlgraph", OIDC_FETCH_RETRY_SECONDS: String(RETRY_SECONDS) } });
  });
  afterAll(async () => {
    await server?.stop();
    idp?.close();
  });

  const jwt = () => {
    const now = Math.floor(Date.now() / 1000);
    return signJwt({ alg: "RS256", typ: "JWT", kid: "k1" }, { iss: issuer, aud: "mlgraph", sub: "user-1", iat: now, exp: now + 600, roles: ["editor"] }, privateKey);
  };
  /** What the server answers a few callers, one of them anonymous with a token-shaped string. */
  async function answers(): Promise<unknown[]> {
    const out = [];
    for (const token of [jwt(), "a.b.c", jwt(), "x.y.z"]) {
      const res = await server.gql(`{ viewer { role } }`, {}, token);
      out.push([res.status, res.errors?.[0].extensions?.code]);
    }
    return out;
  }
  const unavailable = Array(4).fill([503, "UNAVAILABLE"]);

  it("answers UNAVAILABLE (not 401) while the issuer is down, fetches from it at most once per cooldown, and recovers", async () => {
    // Discovery fails: no verdict on the token, and one fetch serves every request for a while
    // (before, each request fetched again, and the answer was 401).
    expect(await answers()).toEqual(unavailable);
    expect(hits).toEqual({ discovery: 1, jwks: 0 });
    // After the cooldown discovery is tried again and works; now the key set is down. Strings
    // that are no JWT are refused without it; signed tokens cannot be checked.
    up.discovery = true;
    await sleep(RETRY_SECONDS * 1000 + 500);
    expect(await answers()).toEqual([
      [503, "UNAVAILABLE"],
      [401, "UNAUTHENTICATED"],
      [503, "UNAVAILABLE"],
      [401, "UNAUTHENTICATED"],
    ]);
    expect(hits).toEqual({ discovery: 2, jwks: 1 });
    // The key set back: after the cooldown, tokens verify again (and bad ones are refused).
    up.jwks = true;
    await sleep(RETRY_SECONDS * 1000 + 500);
    expect(ok(await server.gql(`{ viewer { role kind } }`, {}, jwt())).viewer).toEqual({ role: "editor", kind: "oidc" });
    const forged = await server.gql(`{ viewer { role } }`, {}, "a.b.c");
    expect([forged.status, forged.errors?.[0].extensions?.code]).toEqual([401, "UNAUTHENTICATED"]);
    expect(hits).toEqual({ discovery: 2, jwks: 2 });
  });
});

/** Builds a call of a root field with placeholder arguments of the right types. */
function dummyValue(type: GraphQLInputType): unknown {
  if (isNonNullType(type)) return dummyValue(type.ofType);
  if (isListType(type)) return [dummyValue(type.ofType)];
  if (isEnumType(type)) return type.getValues()[0].value;
  if (isInputObjectType(type)) {
    const out: Record<string, unknown> = {};
    for (const f of Object.values(type.getFields())) if (isNonNullType(f.type)) out[f.name] = dummyValue(f.type);
    return out;
  }
  const scalar = getNamedType(type).name;
  return (
    { ID: "00000000-0000-4000-8000-000000000000", String: "x", Int: 1, Float: 1, Boolean: true, DateTime: new Date(Date.now() + 86_400_000).toISOString(), SafeInt: 1, JSON: {}, StringColumn: ["x"], SafeIntColumn: [1], FloatColumn: [1] } as Record<string, unknown>
  )[scalar] ?? "x";
}

function callOf(kind: "query" | "mutation" | "subscription", field: GraphQLField<unknown, unknown>) {
  const variables: Record<string, unknown> = {};
  const defs: string[] = [];
  const args: string[] = [];
  for (const arg of field.args) {
    if (!isNonNullType(arg.type)) continue;
    variables[arg.name] = dummyValue(arg.type);
    defs.push(`$${arg.name}: ${arg.type.toString()}`);
    args.push(`${arg.name}: $${arg.name}`);
  }
  const named = getNamedType(field.type);
  const selection = isObjectType(named) || !isScalarType(named) && !isEnumType(named) ? " { __typename }" : "";
  const query = `${kind}${defs.length ? `(${defs.join(", ")})` : ""} { ${field.name}${args.length ? `(${args.join(", ")})` : ""}${selection} }`;
  return { query, variables };
}

describe("authorization on every operation", () => {
  let server: TestServer;
  let schema: GraphQLSchema;
  let viewerToken: string;
  const roles: Record<string, string[] | null> = JSON.parse(execFileSync(process.execPath, [MAIN, "schema", "--roles"], { encoding: "utf8" }));

  beforeAll(async () => {
    schema = buildSchema(fs.readFileSync(path.resolve(__dirname, "../../schema/schema.graphql"), "utf8"));
    server = await startTestServer({ env: { MLGRAPH_AUTH: "required" } });
    const admin = /MLGRAPH_TOKEN=(\S+)/.exec(server.output())![1];
    viewerToken = ok(await server.gql(`mutation { createApiToken(input: {name: "v", role: "viewer"}) { secret } }`, {}, admin)).createApiToken.secret;
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("declares a role requirement on every query, mutation and subscription", () => {
    const fields = [
      ...Object.keys(schema.getQueryType()!.getFields()).map((f) => `Query.${f}`),
      ...Object.keys(schema.getMutationType()!.getFields()).map((f) => `Mutation.${f}`),
      ...Object.keys(schema.getSubscriptionType()?.getFields() ?? {}).map((f) => `Subscription.${f}`),
    ];
    expect(fields.length).toBeGreaterThan(20);
    const missing = fields.filter((f) => !roles[f]?.length);
    expect(missing).toEqual([]);
  });

  it("refuses every query and mutation without a token, and every write as a viewer", async () => {
    const failures: string[] = [];
    for (const [kind, type] of [["query", schema.getQueryType()!], ["mutation", schema.getMutationType()!]] as const) {
      for (const field of Object.values(type.getFields())) {
        const { query, variables } = callOf(kind, field);
        const anonymous = await server.gql(query, variables);
        if (anonymous.errors?.[0]?.extensions?.code !== "UNAUTHENTICATED") failures.push(`${field.name} anonymous: ${JSON.stringify(anonymous.errors ?? anonymous.data)}`);
        const required = roles[`${type.name}.${field.name}`] ?? [];
        if (!required.includes("viewer")) {
          const asViewer = await server.gql(query, variables, viewerToken);
          if (asViewer.errors?.[0]?.extensions?.code !== "FORBIDDEN") failures.push(`${field.name} as viewer: ${JSON.stringify(asViewer.errors ?? asViewer.data)}`);
        }
      }
    }
    expect(failures).toEqual([]);
  });
});

describe("request limits", () => {
  let server: TestServer;
  let token: string;
  beforeAll(async () => {
    // With REDIS_URL (CI) the token buckets live in Redis, shared by replicas; without it, in process.
    server = await startTestServer({
      env: { MLGRAPH_AUTH: "required", MLGRAPH_MAX_BODY_BYTES: "20000", MLGRAPH_RATE_LIMIT_PER_SECOND: "2", MLGRAPH_RATE_LIMIT_BURST: "40" },
      redis: true,
    });
    token = /MLGRAPH_TOKEN=(\S+)/.exec(server.output())![1];
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("refuses too deep, too many aliases, too many root fields and too complex", async () => {
    let deep = "name";
    for (let i = 0; i < 8; i++) deep = `runs(first: 1) { edges { node { experiment { ${deep} } } } }`;
    const depth = await server.gql(`query($id: ID) { experiment(id: $id) { ${deep} } }`, {}, token);
    expect(depth.errors?.[0]).toMatchObject({ extensions: { code: "QUERY_TOO_COMPLEX" }, message: expect.stringMatching(/depth \d+ exceeds the limit of 15/) });

    const aliases = Array.from({ length: 20 }, (_, i) => `a${i}: viewer { x${i}: name y${i}: role z${i}: kind }`).join(" ");
    const manyAliases = await server.gql(`{ ${aliases} }`, {}, token);
    expect(manyAliases.errors?.[0].message).toMatch(/aliases exceed the limit of 50/);

    const roots = Array.from({ length: 31 }, (_, i) => `v${i}: viewer { name }`).join(" ");
    const manyRoots = await server.gql(`{ ${roots} }`, {}, token);
    expect(manyRoots.errors?.[0].message).toMatch(/31 root fields exceed the limit of 30/);

    const complex = await server.gql(`{ runs(first: 1000) { edges { node { experiment { runs(first: 1000) { edges { node { params { key } tags { key } } } } } } } } }`, {}, token);
    expect(complex.errors?.[0].message).toMatch(/complexity \d+ exceeds the limit/);
    // A normal query passes.
    expect(ok(await server.gql(`{ runs(first: 100) { edges { node { name params { key } } } } }`, {}, token)).runs.edges).toEqual([]);
  });

  it("refuses bodies over the size limit", async () => {
    const res = await fetch(server.url, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: `{ viewer { name } }`, variables: { pad: "x".repeat(30_000) } }),
    });
    expect(res.status).toBe(413);
    // As a GraphQL error a client can read (it was express's HTML page).
    expect(await res.json()).toEqual({ errors: [{ message: "request body: larger than the server's limit of 20000 bytes", extensions: { code: "BAD_REQUEST", field: "body" } }] });
  });

  it("answers a body that is not JSON (a NaN written by a client) with a GraphQL error, not an HTML page", async () => {
    const res = await fetch(server.url, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: `{"query": "mutation { x }", "variables": {"value": NaN}}`,
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ errors: [{ message: "request body: not valid JSON", extensions: { code: "BAD_REQUEST", field: "body" } }] });
  });

  it("rate-limits per token with RATE_LIMITED and Retry-After, and counts refusals in /metrics", async () => {
    let limited: Response | null = null;
    for (let i = 0; i < 80 && !limited; i++) {
      const res = await fetch(server.url, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: JSON.stringify({ query: "{ viewer { name } }" }) });
      if (res.status === 429) limited = res;
    }
    expect(limited).not.toBeNull();
    expect(Number(limited!.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    const body = (await limited!.json()) as { errors: { extensions: { code: string } }[] };
    expect(body.errors[0].extensions.code).toBe("RATE_LIMITED");

    const base = server.url.replace(/\/graphql$/, "");
    expect((await fetch(`${base}/metrics`)).status).toBe(401);
    const metrics = await (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${token}` } })).text();
    expect(metrics).toMatch(/mlgraph_rate_limit_refusals_total [1-9]/);
    expect(metrics).toMatch(/mlgraph_graphql_request_duration_seconds_count\{operation="anonymous",type="query",outcome="ok"\} [1-9]/);
  });
});
