import { spawn, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import WebSocket from "ws";
import { Redis } from "ioredis";
import { createClient as createWsClient, type Client as WsClient } from "graphql-ws";
import { SERVER_NODE_FLAGS } from "../../src/server/node-flags.js";

/** The repository root: the nearest folder above with a package.json (also from compiled benches in dist-bench/). */
export const ROOT = (() => {
  let dir = path.resolve(__dirname, "../..");
  while (!fs.existsSync(path.join(dir, "package.json")) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  return dir;
})();
export const MAIN = path.join(ROOT, "dist/src/main.js");

/** Servers under test run with the Node flags `npm start` passes (see src/server/node-flags.ts). */
export { SERVER_NODE_FLAGS };

export interface GqlResponse<T = any> {
  status: number;
  data?: T;
  errors?: { message: string; path?: string[]; extensions?: { code?: string; field?: string; [k: string]: unknown } }[];
}

export interface StartOptions {
  /** Extra environment for the server process. */
  env?: Record<string, string>;
  /** Force the embedded PostgreSQL even when TEST_DATABASE_URL is set. */
  embeddedPostgres?: boolean;
  /** Reuse an existing data dir / database (for restart tests). */
  dataDir?: string;
  databaseUrl?: string;
  /** Pass REDIS_URL (when the environment has one) with a prefix private to this test. */
  redis?: boolean | { prefix: string };
  args?: string[];
  /** Keep data dir and database on stop (a later start reuses them). */
  keep?: boolean;
  /** Listen on this port (default 0: any free port); a restart test reuses the first server's port. */
  port?: number;
}

export interface TestServer {
  url: string;
  wsUrl: string;
  dataDir: string;
  databaseUrl?: string;
  /** The Redis the server's event bus runs on, and the prefix of its channels (when it has one). */
  redis?: { url: string; prefix: string };
  process: ChildProcess;
  output: () => string;
  gql<T = any>(query: string, variables?: Record<string, unknown>, token?: string): Promise<GqlResponse<T>>;
  ws(token?: string): WsClient;
  stop(): Promise<number | null>;
  kill9(): Promise<void>;
}

/** TEST_DATABASE_URL (CI sets it): each server gets a fresh database on that PostgreSQL. */
export async function createTestDatabase(): Promise<{ url: string; drop(): Promise<void> } | null> {
  const base = process.env.TEST_DATABASE_URL;
  if (!base) return null;
  // The creating machine and process are in the name, so a later run on the same machine can tell
  // the databases a killed run left behind (its process gone, nothing connected) and drop them;
  // those of other machines sharing the PostgreSQL are left alone (their pids mean nothing here).
  const name = `mlgraph_test_${HOST_TAG}_${process.pid}_${crypto.randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  try {
    await dropLeftoverTestDatabases(admin);
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const c = new pg.Client({ connectionString: base });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

/** This machine, in test database names (a PID namespace: another container's pids are not ours). */
const HOST_TAG = crypto.createHash("sha256").update(`${os.hostname()}:${pidNamespace()}`).digest("hex").slice(0, 8);

function pidNamespace(): string {
  try {
    return fs.readlinkSync("/proc/self/ns/pid");
  } catch {
    return "";
  }
}

/** Once per test process: drops this machine's test databases whose processes no longer exist. */
let leftoversDropped = false;
async function dropLeftoverTestDatabases(admin: pg.Client): Promise<void> {
  if (leftoversDropped) return;
  leftoversDropped = true;
  const found = await admin.query<{ datname: string }>(
    `SELECT d.datname FROM pg_database d JOIN pg_stat_database s ON s.datid = d.oid WHERE d.datname ~ $1 AND s.numbackends = 0`,
    [`^mlgraph_test_${HOST_TAG}_[0-9]+_[0-9a-f]+$`],
  );
  for (const { datname } of found.rows) {
    const pid = Number(/^mlgraph_test_[0-9a-f]+_(\d+)_/.exec(datname)![1]);
    if (processExists(pid)) continue;
    // Another run's sweep may drop it first.
    await admin.query(`DROP DATABASE IF EXISTS ${datname} WITH (FORCE)`).catch(() => undefined);
  }
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

export function makeDataDir(): string {
  // Under /tmp with 0755 parents: the embedded postgres runs as user `postgres` and must traverse it.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-test-"));
  fs.chmodSync(dir, 0o755);
  return dir;
}

/** Boots the built server (dist/) as a child process on real engines and waits until it listens. */
export async function startTestServer(options: StartOptions = {}): Promise<TestServer> {
  if (!fs.existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npm run build\` first (npm test does)`);
  const dataDir = options.dataDir ?? makeDataDir();
  let db: Awaited<ReturnType<typeof createTestDatabase>> = null;
  let databaseUrl = options.databaseUrl;
  if (!databaseUrl && !options.embeddedPostgres) {
    db = await createTestDatabase();
    databaseUrl = db?.url;
  }
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "",
    HOME: process.env.HOME ?? "/root",
    MLGRAPH_LOG_LEVEL: "warn",
    MLGRAPH_WEBHOOK_ALLOWLIST: "127.0.0.1,localhost,::1",
    ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
    ...(options.env ?? {}),
  };
  if (options.redis && process.env.REDIS_URL) {
    env.REDIS_URL = process.env.REDIS_URL;
    env.MLGRAPH_REDIS_PREFIX = typeof options.redis === "object" ? options.redis.prefix : `mlgraph-test-${crypto.randomBytes(4).toString("hex")}:`;
  }
  const child = spawn(process.execPath, [...SERVER_NODE_FLAGS, ...(process.env.MLGRAPH_TEST_NODE_ARGS ?? "").split(" ").filter(Boolean), MAIN, "serve", "--port", String(options.port ?? 0), "--data-dir", dataDir, ...(options.args ?? [])], {
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in 90 s:\n${output}`)), 90_000);
    const onData = () => {
      const m = /mlgraph listening on (\S+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout!.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening:\n${output}`));
    });
  });
  const wsUrl = url.replace(/^http/, "ws");
  const clients: WsClient[] = [];
  let stopped = false;
  const cleanup = async () => {
    await Promise.all(clients.map((c) => c.dispose()));
    if (!options.keep) {
      await db?.drop().catch(() => undefined);
      if (!options.dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
    }
  };
  const server: TestServer = {
    url,
    wsUrl,
    dataDir,
    databaseUrl,
    redis: env.REDIS_URL ? { url: env.REDIS_URL, prefix: env.MLGRAPH_REDIS_PREFIX ?? "mlgraph:" } : undefined,
    process: child,
    output: () => output,
    async gql(query, variables, token) {
      const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify({ query, variables }),
      });
      const text = await res.text();
      let body: GqlResponse;
      try {
        body = JSON.parse(text);
      } catch {
        throw new Error(`non-JSON answer ${res.status}: ${text.slice(0, 500)}`);
      }
      return { ...body, status: res.status };
    },
    ws(token) {
      const client = createWsClient({
        url: wsUrl,
        webSocketImpl: WebSocket,
        connectionParams: token ? { Authorization: `Bearer ${token}` } : {},
        retryAttempts: 0,
        lazy: true,
      });
      clients.push(client);
      return client;
    },
    async stop() {
      if (stopped) return child.exitCode;
      stopped = true;
      await Promise.all(clients.map((c) => c.dispose()));
      const exited = new Promise<number | null>((resolve) => {
        if (child.exitCode !== null) resolve(child.exitCode);
        else child.once("exit", (code) => resolve(code));
      });
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
      const code = await exited;
      clearTimeout(timer);
      await cleanup();
      return code;
    },
    async kill9() {
      stopped = true;
      const exited = new Promise<void>((resolve) => (child.exitCode !== null ? resolve() : child.once("exit", () => resolve())));
      child.kill("SIGKILL");
      await exited;
    },
  };
  return server;
}

/**
 * Collects events of a subscription until `count` arrived or the timeout passes. Events `ignore`
 * picks (e.g. the probes of {@link probeUntil}) go to `ignored` instead and do not count.
 */
export function collect<T>(
  client: WsClient,
  query: string,
  variables: Record<string, unknown>,
  count: number,
  timeoutMs = 15_000,
  options: { ignore?: (event: { data?: T; errors?: unknown[] }) => boolean } = {},
) {
  const events: { data?: T; errors?: unknown[] }[] = [];
  const ignored: { data?: T; errors?: unknown[] }[] = [];
  let completed = false;
  let unsubscribe: () => void = () => undefined;
  const done = new Promise<typeof events>((resolve, reject) => {
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`only ${events.length}/${count} events within ${timeoutMs} ms: ${JSON.stringify(events).slice(0, 1000)}`));
    }, timeoutMs);
    unsubscribe = client.subscribe<T>(
      { query, variables },
      {
        next: (value) => {
          // Events already in flight when the count was reached are not part of the answer.
          if (events.length >= count) return;
          if (options.ignore?.(value as { data?: T; errors?: unknown[] })) {
            ignored.push(value as { data?: T; errors?: unknown[] });
            return;
          }
          events.push(value as { data?: T; errors?: unknown[] });
          if (events.length >= count) {
            clearTimeout(timer);
            unsubscribe();
            resolve(events);
          }
        },
        error: (err) => {
          clearTimeout(timer);
          reject(err instanceof Error ? err : new Error(JSON.stringify(err)));
        },
        complete: () => {
          completed = true;
          clearTimeout(timer);
          resolve(events);
        },
      },
    );
  });
  return { done, events, ignored, heardAny: () => events.length + ignored.length > 0, isCompleted: () => completed, unsubscribe: () => unsubscribe() };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` every 100 ms until it returns something truthy (returned), or fails after `timeoutMs`. */
export async function waitFor<T>(what: string, fn: () => Promise<T | null | undefined | false> | T | null | undefined | false, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

/**
 * Waits until a subscription is open on the server. A subscription opens asynchronously (socket,
 * connection_init, subscribe), and an event published before the server holds it is never
 * delivered, however long the test slept first: on a loaded machine a fixed sleep is a race. This
 * repeats `probe` (something that makes the server publish an event the subscription receives;
 * `attempt` counts from 0) every `everyMs` until `heard()` holds, or fails after `timeoutMs`.
 */
export async function probeUntil(
  what: string,
  probe: (attempt: number) => Promise<unknown>,
  heard: () => boolean | Promise<boolean>,
  { timeoutMs = 30_000, everyMs = 1_000 }: { timeoutMs?: number; everyMs?: number } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; ; attempt++) {
    await probe(attempt);
    const next = Date.now() + everyMs;
    while (Date.now() < next) {
      if (await heard()) return;
      await sleep(25);
    }
    if (await heard()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what} never heard one of ${attempt + 1} probes`);
  }
}

/**
 * Waits until `server` has subscribed its Redis channel for `topic`, i.e. a subscription to that
 * topic is open server-side (for topics no background worker listens to, such as a pipeline run's).
 * Without Redis there is nothing to observe: it then waits `fallbackMs` and hopes.
 */
export async function untilSubscribedOnRedis(server: TestServer, topic: string, { timeoutMs = 15_000, fallbackMs = 500 } = {}): Promise<void> {
  if (!server.redis) {
    await sleep(fallbackMs);
    return;
  }
  const redis = new Redis(server.redis.url, { maxRetriesPerRequest: 1 });
  try {
    const channel = server.redis.prefix + topic;
    await waitFor(`the server to subscribe ${channel} on Redis`, async () => {
      const answer = (await redis.call("PUBSUB", "NUMSUB", channel)) as [string, number];
      return Number(answer[1]) > 0;
    }, timeoutMs);
  } finally {
    redis.disconnect();
  }
}

/** Throws with the server's errors when a GraphQL answer has any; returns data. */
export function ok<T>(res: GqlResponse<T>): T {
  if (res.errors?.length || !res.data) throw new Error(`GraphQL errors: ${JSON.stringify(res.errors)}`);
  return res.data;
}

/** Uploads `bytes` as the run's artifact at `path` (create, PUT, complete), failing the test on any error. */
export async function uploadArtifact(server: TestServer, runId: string, artifactPath: string, bytes: Buffer, token?: string): Promise<void> {
  const sha256 = crypto.createHash("sha256").update(bytes).digest("hex");
  const up = ok(
    await server.gql(`mutation($i: ArtifactUploadInput!) { createArtifactUpload(input: $i) { id url } }`, { i: { runId, path: artifactPath, size: bytes.length, sha256 } }, token),
  ).createArtifactUpload;
  const put = await fetch(up.url, { method: "PUT", body: bytes } as RequestInit);
  if (put.status >= 300) throw new Error(`artifact PUT answered ${put.status}`);
  ok(await server.gql(`mutation($id: ID!) { completeArtifactUpload(uploadId: $id) { path } }`, { id: up.id }, token));
}
