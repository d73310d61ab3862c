/**
 * Comparison: compareRuns over 1,000 runs x 10 metrics x 1,000 steps (10M points), p50 over
 * BENCH_ITERATIONS (default 20). Baseline of the same run: N+1, one GraphQL request (one
 * ClickHouse query) per run and metric, measured over BENCH_NPLUS1_RUNS runs (default 100) and
 * scaled to 1,000 (it is linear in the number of requests).
 */
import { createRuns, LOG_COLUMNS, machine, ms, ok, percentile, startTestServer, timed } from "./bench-util.js";

const RUNS = Number(process.env.BENCH_RUNS ?? 1000);
const KEYS = Array.from({ length: 10 }, (_, i) => `metric_${i}`);
const STEPS = Number(process.env.BENCH_STEPS ?? 1000);
const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 20);
const NPLUS1_RUNS = Math.min(RUNS, Number(process.env.BENCH_NPLUS1_RUNS ?? 100));

async function main() {
  console.log(`machine: ${machine()}; ${RUNS} runs x ${KEYS.length} metrics x ${STEPS} steps`);
  const server = await startTestServer({ env: { MLGRAPH_LOG_LEVEL: "error" } });
  try {
    const runs = await createRuns(server, RUNS, "bench-compare");
    const t0 = Date.now();
    // One call per run: 10 keys x 1,000 steps = 10,000 points, four runs at a time.
    const keys = KEYS.flatMap((k) => new Array<string>(STEPS).fill(k));
    const steps = KEYS.flatMap(() => Array.from({ length: STEPS }, (_, s) => s));
    for (let r = 0; r < runs.length; r += 4) {
      await Promise.all(
        runs.slice(r, r + 4).map(async (run, j) => {
          ok(await server.gql(LOG_COLUMNS, { run, keys, steps, values: steps.map((s) => (r + j) / (s + 1)) }));
        }),
      );
    }
    console.log(`logged ${(RUNS * KEYS.length * STEPS).toLocaleString("en-US")} points in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    const QUERY = `query($ids: [ID!]!, $keys: [String!], $base: ID) { compareRuns(runIds: $ids, metricKeys: $keys, baselineRunId: $base) {
      metricKeys differingParams rows { run { id name } metrics { key summary { min max last } diffFromBaseline } } } }`;
    const times: number[] = [];
    for (let i = 0; i < ITERATIONS + 2; i++) {
      const t = await timed(async () => {
        const cmp = ok(await server.gql(QUERY, { ids: runs, keys: KEYS, base: runs[0] })).compareRuns;
        if (cmp.rows.length !== RUNS || cmp.rows[RUNS - 1].metrics.length !== KEYS.length) throw new Error("incomplete comparison");
      });
      if (i >= 2) times.push(t);
    }
    const p50 = percentile(times, 50);
    console.log(`compareRuns ${RUNS} runs x ${KEYS.length} metrics, as rows: p50 ${ms(p50)}, p90 ${ms(percentile(times, 90))} (target p50 < 100 ms)`);

    // The same comparison as matrices (one JSON value per figure instead of an object per cell).
    const COLUMNS = `query($ids: [ID!]!, $keys: [String!], $base: ID) { compareRuns(runIds: $ids, metricKeys: $keys, baselineRunId: $base) {
      metricKeys differingParams columns { runIds min max last diffFromBaseline } } }`;
    const columnTimes: number[] = [];
    for (let i = 0; i < ITERATIONS + 2; i++) {
      const t = await timed(async () => {
        const cmp = ok(await server.gql(COLUMNS, { ids: runs, keys: KEYS, base: runs[0] })).compareRuns;
        if (cmp.columns.last.length !== RUNS || cmp.columns.last[RUNS - 1].length !== KEYS.length) throw new Error("incomplete comparison");
      });
      if (i >= 2) columnTimes.push(t);
    }
    console.log(`compareRuns ${RUNS} runs x ${KEYS.length} metrics, as columns: p50 ${ms(percentile(columnTimes, 50))}, p90 ${ms(percentile(columnTimes, 90))} (target p50 < 100 ms)`);

    const ONE = `query($id: ID!, $key: String!) { run(id: $id) { metric(key: $key) { summary { min max last } } } }`;
    const nPlusOne = await timed(async () => {
      for (const run of runs.slice(0, NPLUS1_RUNS)) for (const key of KEYS) ok(await server.gql(ONE, { id: run, key }));
    });
    const scaled = (nPlusOne * RUNS) / NPLUS1_RUNS;
    console.log(`baseline N+1: ${NPLUS1_RUNS * KEYS.length} requests in ${ms(nPlusOne)} -> ${ms(scaled)} for ${RUNS} runs`);
    console.log(`ratio N+1/compareRuns: rows ${(scaled / p50).toFixed(0)}x, columns ${(scaled / percentile(columnTimes, 50)).toFixed(0)}x`);
  } finally {
    await server.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
