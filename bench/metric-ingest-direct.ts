/**
 * Direct ingest into the embedded metric store: the store's group-committed columnar INSERT
 * against a baseline of one JSONEachRow INSERT per call through the same client.
 * Run: npx tsc -p tsconfig.json --outDir /tmp/mlbench && node /tmp/mlbench/bench/metric-ingest-direct.js
 * (needs NODE_PATH=node_modules when compiled outside the repo).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { openMetricStore } from "../src/stores/metric-store/index.js";

const CALLS = 200;
const POINTS_PER_CALL = 1_000;

async function main(): Promise<void> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-bench-"));
  const store = await openMetricStore({ dataDir });
  const client = (store as unknown as { handle: { client: import("@clickhouse/client").ClickHouseClient } }).handle.client;
  const batch = (_run: number) =>
    Array.from({ length: POINTS_PER_CALL }, (_, i) => ({ key: `loss/${i % 10}`, step: i, value: Math.random(), timestamp: Date.now() }));

  const t0 = process.hrtime.bigint();
  for (let r = 0; r < CALLS; r++) {
    await client.insert({
      table: "metrics",
      format: "JSONEachRow",
      values: batch(r).map((p) => ({ run_id: `base-${r}`, key: p.key, step: p.step, ts: p.timestamp, value: p.value, batch_id: "" })),
    });
  }
  const baselineMs = Number(process.hrtime.bigint() - t0) / 1e6;

  const t1 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: CALLS }, (_, r) => store.logPoints(`store-${r}`, batch(r))));
  const storeMs = Number(process.hrtime.bigint() - t1) / 1e6;

  const rows = CALLS * POINTS_PER_CALL;
  console.log(`baseline: JSONEachRow, one INSERT per call: ${Math.round((rows / baselineMs) * 1000)} rows/s`);
  console.log(`store: concurrent logPoints, group commit:  ${Math.round((rows / storeMs) * 1000)} rows/s`);
  console.log(`ratio store/baseline: ${(baselineMs / storeMs).toFixed(2)}x (${CALLS} calls x ${POINTS_PER_CALL} points)`);
  await store.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
