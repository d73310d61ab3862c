/**
 * Task queue benchmarks against the built server (dist/), over GraphQL HTTP as executors use it:
 *  1. claim-and-complete throughput, 16 executors, no-op tasks: long-poll vs plain 1 s polling;
 *  2. queued-to-claimed latency with 16 idle executors: long-poll vs plain 1 s polling;
 *  3. a 10,000-task fan-out/fan-in DAG of no-op tasks, submitted and completed.
 * Run: npm run build && npx tsc -p bench/tsconfig.json && BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres node dist-bench/bench/pipeline-queue.js
 * (without BENCH_DATABASE_URL the server uses its embedded PostgreSQL).
 */
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { SERVER_NODE_FLAGS } from "../src/server/node-flags.js";

const ROOT = path.resolve(__dirname, "../..");
const EXECUTORS = 16;

async function startServer(): Promise<{ url: string; databaseUrl?: string; stop(): Promise<void> }> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-bench-"));
  fs.chmodSync(dataDir, 0o755);
  let databaseUrl: string | undefined;
  let dbName: string | undefined;
  if (process.env.BENCH_DATABASE_URL) {
    dbName = `mlgraph_bench_${crypto.randomBytes(4).toString("hex")}`;
    const admin = new pg.Client({ connectionString: process.env.BENCH_DATABASE_URL });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${dbName}`);
    await admin.end();
    const u = new URL(process.env.BENCH_DATABASE_URL);
    u.pathname = `/${dbName}`;
    databaseUrl = u.toString();
  }
  const nodeArgs = (process.env.BENCH_NODE_ARGS ?? "").split(" ").filter(Boolean); // e.g. --cpu-prof to profile the server
  const child = spawn(process.execPath, [...SERVER_NODE_FLAGS, ...nodeArgs, path.join(ROOT, "dist/src/main.js"), "serve", "--port", "0", "--data-dir", dataDir], {
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/root", MLGRAPH_LOG_LEVEL: "warn", MLGRAPH_SCHEDULER_INTERVAL_MS: "200", ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}) },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /mlgraph listening on (\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once("exit", (code) => reject(new Error(`server exited ${code}`)));
  });
  return {
    url,
    databaseUrl,
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
      if (dbName) {
        const admin = new pg.Client({ connectionString: process.env.BENCH_DATABASE_URL });
        await admin.connect();
        await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
        await admin.end();
      }
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

let URL_ = "";
async function gql<T = any>(query: string, variables: Record<string, unknown> = {}): Promise<T> {
  const res = await fetch(URL_, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ query, variables }) });
  const body = (await res.json()) as { data?: T; errors?: { message: string }[] };
  if (body.errors?.length) throw new Error(body.errors[0]!.message);
  return body.data!;
}

const CLAIM = `mutation($id: ID!, $wait: Int) { claimTask(executorId: $id, waitSeconds: $wait) { taskRun { id } leaseToken } }`;
const COMPLETE = `mutation($id: ID!, $lease: String!) { completeTask(input: {taskRunId: $id, leaseToken: $lease, outcome: SUCCEEDED}) { id } }`;
/** With a claim id per call, as the agent sends (BENCH_CLAIM_IDS=0: without, as older agents did). */
const CLAIM_IDS = process.env.BENCH_CLAIM_IDS !== "0";
const CLAIM_MANY = CLAIM_IDS
  ? `mutation($id: ID!, $max: Int!, $wait: Int, $claimId: ID) { claimTasks(executorId: $id, maxTasks: $max, waitSeconds: $wait, claimId: $claimId) { taskRun { id } leaseToken } }`
  : `mutation($id: ID!, $max: Int!, $wait: Int) { claimTasks(executorId: $id, maxTasks: $max, waitSeconds: $wait) { taskRun { id } leaseToken } }`;
const COMPLETE_MANY = `mutation($inputs: [CompleteTaskInput!]!) { completeTasks(inputs: $inputs) { id } }`;
/** Slots per executor in the batched protocol (the agent's --concurrency). */
const SLOTS = Number(process.env.BENCH_SLOTS ?? 32);

async function registerExecutors(pool: string): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < EXECUTORS; i++) ids.push((await gql(`mutation($pool: String!) { registerExecutor(input: {pool: $pool, cpu: 64, memoryMb: 262144}) { id } }`, { pool })).registerExecutor.id);
  return ids;
}

type Mode = "long-poll" | "poll-1s";

/**
 * Executor loops until `done()`: claim (long-poll, or poll once a second when nothing came),
 * complete, repeat. With `slots` 1 an executor claims and completes one task per request
 * (claimTask/completeTask); with more it does what the agent does with --concurrency: claims its
 * free slots in one claimTasks and reports the no-op tasks, which all end at once, in one
 * completeTasks.
 */
function runExecutors(ids: string[], mode: Mode, slots: number, done: () => boolean): Promise<number> {
  let completed = 0;
  const wait = mode === "long-poll" ? 2 : 0;
  return Promise.all(
    ids.map(async (id) => {
      while (!done()) {
        const claimed: { taskRun: { id: string }; leaseToken: string }[] =
          slots === 1 ? [(await gql(CLAIM, { id, wait })).claimTask].filter(Boolean) : (await gql(CLAIM_MANY, { id, max: slots, wait, ...(CLAIM_IDS && { claimId: crypto.randomUUID() }) })).claimTasks;
        if (claimed.length === 0) {
          if (mode === "poll-1s") await new Promise((r) => setTimeout(r, 1000));
          continue;
        }
        if (slots === 1) await gql(COMPLETE, { id: claimed[0]!.taskRun.id, lease: claimed[0]!.leaseToken });
        else await gql(COMPLETE_MANY, { inputs: claimed.map((a) => ({ taskRunId: a.taskRun.id, leaseToken: a.leaseToken, outcome: "SUCCEEDED" })) });
        completed += claimed.length;
      }
    }),
  ).then(() => completed);
}

async function createPipeline(name: string, pool: string, tasks: { id: string; depends_on?: string[] }[]) {
  await gql(`mutation($spec: JSON) { createPipeline(input: {spec: $spec}) { id } }`, {
    spec: { pipeline: { name, tasks: tasks.map((t) => ({ id: t.id, command: ["true"], pool, depends_on: t.depends_on ?? [] })) } },
  });
}

async function waitForRuns(ids: string[]): Promise<void> {
  for (const id of ids) {
    for (;;) {
      const s = (await gql(`query($id: ID!) { pipelineRun(id: $id) { status } }`, { id })).pipelineRun.status;
      if (s === "SUCCEEDED") break;
      if (s === "FAILED" || s === "CANCELLED") throw new Error(`run ${id} ${s}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Throughput: `runs` pipeline runs of `width` independent no-op tasks, queued while executors work. */
async function throughput(mode: Mode, slots: number, runs: number, width: number): Promise<number> {
  const pool = `tp-${mode}-${slots}`;
  const name = `tp-${mode}-${slots}`;
  await createPipeline(name, pool, Array.from({ length: width }, (_, i) => ({ id: `t${i}` })));
  const ids = await registerExecutors(pool);
  let finished = false;
  const total = runs * width;
  const t0 = performance.now();
  const loops = runExecutors(ids, mode, slots, () => finished);
  const runIds: string[] = [];
  for (let r = 0; r < runs; r++) runIds.push((await gql(`mutation($n: String!) { submitPipelineRun(input: {pipelineName: $n}) { id } }`, { n: name })).submitPipelineRun.id);
  await waitForRuns(runIds);
  const seconds = (performance.now() - t0) / 1000;
  finished = true;
  await loops;
  return total / seconds;
}

/** Dispatch latency: one single-task run at a time, `samples` times; queued_at → claimed_at from the database. */
async function latency(mode: Mode, samples: number, databaseUrl: string | undefined): Promise<{ p50: number; p99: number; max: number }> {
  const pool = `lat-${mode}`;
  const name = `lat-${mode}`;
  await createPipeline(name, pool, [{ id: "only" }]);
  const ids = await registerExecutors(pool);
  let finished = false;
  const loops = runExecutors(ids, mode, SLOTS, () => finished); // idle executors long-poll as the agent does: claimTasks for all their slots
  await new Promise((r) => setTimeout(r, 500)); // executors are idle and waiting
  const runIds: string[] = [];
  for (let i = 0; i < samples; i++) {
    const id = (await gql(`mutation($n: String!) { submitPipelineRun(input: {pipelineName: $n}) { id } }`, { n: name })).submitPipelineRun.id;
    runIds.push(id);
    await waitForRuns([id]);
    await new Promise((r) => setTimeout(r, Math.random() * 20));
  }
  finished = true;
  await loops;
  const client = new pg.Client({ connectionString: databaseUrl });
  if (!databaseUrl) throw new Error("latency needs BENCH_DATABASE_URL to read timestamps");
  await client.connect();
  const rows: { ms: number }[] = (
    await client.query(
      `SELECT extract(epoch FROM (a.claimed_at - t.queued_at)) * 1000 AS ms FROM task_runs t JOIN task_attempts a ON a.task_run_id = t.id WHERE t.pipeline_run_id = ANY($1)`,
      [runIds],
    )
  ).rows;
  await client.end();
  const ms = rows.map((r) => Number(r.ms)).sort((a, b) => a - b);
  const q = (p: number) => ms[Math.min(ms.length - 1, Math.floor(p * ms.length))]!;
  return { p50: q(0.5), p99: q(0.99), max: ms[ms.length - 1]! };
}

async function fanOutFanIn(width: number): Promise<{ submitMs: number; totalMs: number }> {
  const pool = "dag";
  const tasks = [{ id: "root" }, ...Array.from({ length: width }, (_, i) => ({ id: `m${i}`, depends_on: ["root"] })), { id: "sink", depends_on: Array.from({ length: width }, (_, i) => `m${i}`) }];
  await createPipeline("dag", pool, tasks);
  const ids = await registerExecutors(pool);
  let finished = false;
  const loops = runExecutors(ids, "long-poll", SLOTS, () => finished);
  const t0 = performance.now();
  const runId = (await gql(`mutation { submitPipelineRun(input: {pipelineName: "dag"}) { id } }`)).submitPipelineRun.id;
  const submitMs = performance.now() - t0;
  await waitForRuns([runId]);
  const totalMs = performance.now() - t0;
  finished = true;
  await loops;
  return { submitMs, totalMs };
}

async function main() {
  const server = await startServer();
  URL_ = server.url;
  try {
    const runs = Number(process.env.BENCH_RUNS ?? 20);
    const width = Number(process.env.BENCH_WIDTH ?? 500);
    console.log(`machine: ${os.cpus().length} cores, ${EXECUTORS} executors (HTTP clients in one process), PostgreSQL ${server.databaseUrl ? "external" : "embedded"}`);
    const only = process.env.BENCH_ONLY; // "throughput", "latency" or "dag"
    if (!only || only === "throughput") {
    const tasks = runs * width;
    const lp = await throughput("long-poll", SLOTS, runs, width);
    const base = await throughput("poll-1s", SLOTS, runs, width);
    console.log(`claim+complete throughput, ${SLOTS} slots per executor (claimTasks/completeTasks, ${tasks} no-op tasks): long-poll ${lp.toFixed(0)}/s, 1 s polling ${base.toFixed(0)}/s, ratio ${(lp / base).toFixed(2)}x`);
    const fewer = Math.max(1, Math.round(runs / 5)); // one task per request is slower: fewer tasks keep the phase short
    const one = await throughput("long-poll", 1, fewer, width);
    const oneBase = await throughput("poll-1s", 1, fewer, width);
    console.log(`claim+complete throughput, 1 task per request (claimTask/completeTask, ${fewer * width} no-op tasks): long-poll ${one.toFixed(0)}/s, 1 s polling ${oneBase.toFixed(0)}/s, ratio ${(one / oneBase).toFixed(2)}x`);
    }
    if (!only || only === "latency") {
    const samples = Number(process.env.BENCH_SAMPLES ?? 100);
    const l = await latency("long-poll", samples, server.databaseUrl);
    const lb = await latency("poll-1s", Math.min(samples, 30), server.databaseUrl);
    console.log(
      `queued→claimed latency: long-poll p50 ${l.p50.toFixed(1)} ms p99 ${l.p99.toFixed(1)} ms max ${l.max.toFixed(1)} ms; 1 s polling p50 ${lb.p50.toFixed(1)} ms p99 ${lb.p99.toFixed(1)} ms; p99 ratio ${(lb.p99 / l.p99).toFixed(1)}x`,
    );
    }
    if (!only || only === "dag") {
    const width10k = Number(process.env.BENCH_DAG_WIDTH ?? 9998);
    const dag = await fanOutFanIn(width10k);
    console.log(`fan-out/fan-in DAG of ${width10k + 2} no-op tasks: submitted in ${dag.submitMs.toFixed(0)} ms, completed in ${(dag.totalMs / 1000).toFixed(1)} s (${((width10k + 2) / (dag.totalMs / 1000)).toFixed(0)} tasks/s)`);
    }
  } finally {
    await server.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
