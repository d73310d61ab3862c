/**
 * Ingest: concurrent clients send batches of 1,000 points through GraphQL over HTTP into the
 * embedded store, for BENCH_SECONDS (default 30) per phase. Baselines measured in the same run:
 * the same batches inserted directly through the store's client (the ceiling), and MLflow's way,
 * one PostgreSQL row per point (needs TEST_DATABASE_URL or DATABASE_URL), in a bare table and in
 * MLflow's own tables.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { spawn } from "node:child_process";
import { missingNodeFlags, SERVER_NODE_FLAGS } from "../src/server/node-flags.js";
import { openMetricStore } from "../src/stores/metric-store/index.js";
import { MAIN } from "../test/helpers/test-server.js";
import { benchSeconds, createRuns, settleFilesystem, jsonPoster, LOG_COLUMNS, LOG_POINTS, machine, rate, startTestServer } from "./bench-util.js";

const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 32);
const BATCH = 1_000;
const SECONDS = benchSeconds(30);

/** Runs `worker` in CLIENTS loops for SECONDS; returns points per second. */
async function sustained(worker: (client: number, iteration: number) => Promise<number>): Promise<number> {
  const until = Date.now() + SECONDS * 1000;
  let points = 0;
  const started = Date.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, c) => {
      for (let i = 0; Date.now() < until; i++) {
        // Not `points += await …`: that reads `points` before the await and loses other clients' adds.
        const stored = await worker(c, i);
        points += stored;
      }
    }),
  );
  return points / ((Date.now() - started) / 1000);
}

function batch(i: number) {
  const keys = Array.from({ length: BATCH }, (_, j) => `m${j % 10}`);
  const steps = Array.from({ length: BATCH }, (_, j) => i * 100 + Math.floor(j / 10));
  const values = steps.map((s, j) => Math.sin(s + j));
  const ts = steps.map((s) => 1_700_000_000_000 + s);
  return { keys, steps, values, ts };
}

/**
 * One row per point as MLflow's SQL store keeps them (mlflow/store/tracking/dbmodels/models.py):
 * `metrics` with its six-column primary key and run index, and `latest_metrics` (one row per run
 * and key) locked and updated in the same transaction, as `_update_latest_metrics_if_necessary`
 * does. Steps advance per batch, because MLflow's primary key refuses a repeated point. MLflow's
 * run lookup before each batch and its Python server are left out: this is its storage alone.
 */
async function rowPerPointInMlflowSchema(pool: pg.Pool): Promise<number> {
  await pool.query("DROP TABLE IF EXISTS bench_mlflow_metrics, bench_mlflow_latest_metrics");
  await pool.query(`CREATE TABLE bench_mlflow_metrics (
    key varchar(250) NOT NULL, value double precision NOT NULL, timestamp bigint NOT NULL, step bigint NOT NULL DEFAULT 0,
    is_nan boolean NOT NULL DEFAULT false, run_uuid varchar(32) NOT NULL,
    PRIMARY KEY (key, timestamp, step, run_uuid, value, is_nan))`);
  await pool.query("CREATE INDEX ON bench_mlflow_metrics (run_uuid)");
  await pool.query(`CREATE TABLE bench_mlflow_latest_metrics (
    key varchar(250) NOT NULL, value double precision NOT NULL, timestamp bigint, step bigint NOT NULL,
    is_nan boolean NOT NULL, run_uuid varchar(32) NOT NULL, PRIMARY KEY (key, run_uuid))`);
  await pool.query("CREATE INDEX ON bench_mlflow_latest_metrics (run_uuid)");
  const pointsPerSecond = await sustained(async (c, i) => {
    const { keys, steps, values, ts } = batch(i);
    const run = `mlflow${c}`;
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      for (let j = 0; j < BATCH; j++) {
        await client.query("INSERT INTO bench_mlflow_metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES ($1, $2, $3, $4, false, $5)", [
          keys[j], values[j], ts[j], steps[j], run,
        ]);
      }
      await client.query("SELECT key FROM bench_mlflow_latest_metrics WHERE run_uuid = $1 AND key = ANY($2) FOR UPDATE", [run, [...new Set(keys)]]);
      const last = new Map<string, number>();
      keys.forEach((key, j) => last.set(key, j)); // steps only grow within a batch here
      const lastIdx = [...last.values()];
      await client.query(
        `INSERT INTO bench_mlflow_latest_metrics (key, value, timestamp, step, is_nan, run_uuid)
         SELECT k, v, t, s, false, $5 FROM unnest($1::text[], $2::float8[], $3::bigint[], $4::bigint[]) AS u(k, v, t, s)
         ON CONFLICT (key, run_uuid) DO UPDATE SET value = EXCLUDED.value, timestamp = EXCLUDED.timestamp, step = EXCLUDED.step
         WHERE (EXCLUDED.step, EXCLUDED.timestamp) > (bench_mlflow_latest_metrics.step, bench_mlflow_latest_metrics.timestamp)`,
        [lastIdx.map((j) => keys[j]), lastIdx.map((j) => values[j]), lastIdx.map((j) => ts[j]), lastIdx.map((j) => steps[j]), run],
      );
      await client.query("COMMIT");
    } finally {
      client.release();
    }
    return BATCH;
  });
  await pool.query("DROP TABLE bench_mlflow_metrics, bench_mlflow_latest_metrics");
  return pointsPerSecond;
}

async function main() {
  if (!fs.existsSync(MAIN)) throw new Error(`${MAIN} is missing: run npm run build first`);
  console.log(`machine: ${machine()}; ${CLIENTS} clients, ${BATCH} points per call, ${SECONDS} s per phase; server and this process on ${SERVER_NODE_FLAGS.join(" ")}`);
  const b = batch(0);
  await settleFilesystem();
  // The ceiling first, in this process, before the server (and its own engine) exists.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-bench-"));
  const store = await openMetricStore({ dataDir: dir });
  const direct = await sustained(async (c) => (await store.logColumns(`direct-${c}`, { keys: b.keys, steps: b.steps, values: b.values, timestamps: b.ts })).stored);
  await store.close();
  console.log(`baseline: direct store inserts (ceiling): ${rate(direct)} points`);
  let server: Awaited<ReturnType<typeof startTestServer>> | undefined;
  try {
    server = await startTestServer({ env: { MLGRAPH_LOG_LEVEL: "error" } });
    const runs = await createRuns(server, CLIENTS, "bench-ingest");
    // Bodies are serialized once so the client (on the same 2 cores) costs as little as possible.
    const pointBodies = runs.map((run) =>
      JSON.stringify({ query: LOG_POINTS, variables: { run, points: b.keys.map((key, j) => ({ key, step: b.steps[j], value: b.values[j], timestamp: new Date(b.ts[j]).toISOString() })) } }),
    );
    const columnBodies = runs.map((run) => JSON.stringify({ query: LOG_COLUMNS, variables: { run, ...b } }));
    const send = jsonPoster(server.url, CLIENTS);
    const post = async (body: string) => {
      const json = (await send(body)) as { errors?: unknown; data?: Record<string, { accepted: number }> };
      if (json.errors) throw new Error(JSON.stringify(json.errors));
      return Object.values(json.data!)[0].accepted;
    };
    // BENCH_ONLY=columns skips the point-object phase (e.g. to profile the columnar one).
    const graphqlRows = process.env.BENCH_ONLY === "columns" ? NaN : await sustained((c) => post(pointBodies[c]));
    console.log(`GraphQL logMetrics (point objects):      ${rate(graphqlRows)} points`);
    const graphqlColumns = await sustained((c) => post(columnBodies[c]));
    console.log(`GraphQL logMetricColumns (columnar):     ${rate(graphqlColumns)} points`);


    const url = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL;
    let rowPerPoint = NaN;
    let mlflowSchema = NaN;
    if (url) {
      const pool = new pg.Pool({ connectionString: url, max: CLIENTS });
      await pool.query("CREATE TEMP TABLE IF NOT EXISTS bench_noop (x int)"); // warm a connection
      await pool.query("CREATE TABLE IF NOT EXISTS bench_metric_rows (run_id text, key text, step bigint, ts timestamptz, value double precision)");
      rowPerPoint = await sustained(async (c) => {
        const client = await pool.connect();
        try {
          await client.query("BEGIN");
          for (let j = 0; j < BATCH; j++) {
            await client.query("INSERT INTO bench_metric_rows (run_id, key, step, ts, value) VALUES ($1, $2, $3, to_timestamp($4 / 1000.0), $5)", [
              `pg-${c}`, b.keys[j], b.steps[j], b.ts[j], b.values[j],
            ]);
          }
          await client.query("COMMIT");
        } finally {
          client.release();
        }
        return BATCH;
      });
      await pool.query("DROP TABLE bench_metric_rows");
      console.log(`baseline: one PostgreSQL row per point:   ${rate(rowPerPoint)} points`);
      mlflowSchema = await rowPerPointInMlflowSchema(pool);
      await pool.end();
      console.log(`baseline: the same in MLflow's tables:    ${rate(mlflowSchema)} points (primary key, run index, latest_metrics)`);
    } else {
      console.log("baseline: one PostgreSQL row per point: SKIPPED (set TEST_DATABASE_URL)");
    }
    const best = Number.isNaN(graphqlRows) ? graphqlColumns : Math.max(graphqlRows, graphqlColumns);
    console.log(`ratio columnar/point objects: ${(graphqlColumns / graphqlRows).toFixed(2)}x`);
    console.log(`ratio GraphQL (best form)/direct: ${((best / direct) * 100).toFixed(0)} %`);
    if (url) console.log(`ratio GraphQL (best form)/row-per-point: ${(best / rowPerPoint).toFixed(1)}x (in MLflow's tables: ${(best / mlflowSchema).toFixed(1)}x)`);
  } finally {
    await server?.stop().catch((err: unknown) => console.error("server stop:", err));
    // Removed only at the end: deleting its tens of thousands of part files before the GraphQL
    // phases made every file the server's engine created next slower (on a filesystem without a
    // journal, ext4 skips recently deleted inodes one by one when it allocates a new one).
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The direct baseline runs in this process: without the server's heap flags it runs again with
 * them, so that the ratio compares like with like. Signals reach the child; its end is this
 * process's end.
 */
function rerunWithServerFlags(): void {
  if (process.env.MLGRAPH_BENCH_RERUN) throw new Error(`started with ${SERVER_NODE_FLAGS.join(" ")}, yet Node does not report them in execArgv`);
  const child = spawn(process.execPath, [...SERVER_NODE_FLAGS, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: "inherit",
    env: { ...process.env, MLGRAPH_BENCH_RERUN: "1" },
  });
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, () => child.kill(signal));
  child.on("error", (err) => {
    console.error(err);
    process.exit(1);
  });
  child.on("exit", (code, signal) => {
    if (!signal) process.exit(code ?? 1);
    process.removeAllListeners(signal); // die of the same signal, not of the forwarder
    process.kill(process.pid, signal);
  });
}

if (missingNodeFlags(process.execArgv, process.env.NODE_OPTIONS ?? "").length > 0) {
  rerunWithServerFlags();
} else {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
