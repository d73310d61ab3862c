/**
 * History: a 1,000,000-point series read back as 1,000 points through GraphQL (LTTB in
 * ClickHouse), p50 over BENCH_ITERATIONS (default 30). Baseline of the same run: reading the whole
 * series into the client through GraphQL in 100,000-point pages (what a client without server-side
 * downsampling must do), p50 over 3 reads.
 */
import { createRuns, logLossSeries, machine, ms, ok, percentile, startTestServer, timed } from "./bench-util.js";

const POINTS = 1_000_000;
const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 30);

async function main() {
  console.log(`machine: ${machine()}`);
  const server = await startTestServer({ env: { MLGRAPH_LOG_LEVEL: "error" } });
  try {
    const [run] = await createRuns(server, 1, "bench-history");
    const t0 = Date.now();
    await logLossSeries(server, run, POINTS, (s) => Math.sin(s / 1000) + Math.random() * 0.1);
    console.log(`logged ${POINTS.toLocaleString("en-US")} points in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    const QUERY = `query($id: ID!, $n: Int, $lo: SafeInt, $hi: SafeInt) { run(id: $id) { metric(key: "loss") { history(maxPoints: $n, minStep: $lo, maxStep: $hi) { step value timestamp } } } }`;
    const times: number[] = [];
    let length = 0;
    for (let i = 0; i < ITERATIONS + 3; i++) {
      const t = await timed(async () => (length = ok(await server.gql(QUERY, { id: run, n: 1000 })).run.metric.history.length));
      if (i >= 3) times.push(t); // first reads warm caches
    }
    const p50 = percentile(times, 50);
    console.log(`history 1M -> ${length} points through GraphQL: p50 ${ms(p50)}, p90 ${ms(percentile(times, 90))} (target p50 < 50 ms)`);

    const full: number[] = [];
    for (let i = 0; i < 3; i++) {
      full.push(
        await timed(async () => {
          let got = 0;
          for (let lo = 0; lo < POINTS; lo += 100_000) got += ok(await server.gql(QUERY, { id: run, n: 100_000, lo, hi: lo + 99_999 })).run.metric.history.length;
          if (got !== POINTS) throw new Error(`read ${got} points`);
        }),
      );
    }
    const base = percentile(full, 50);
    console.log(`baseline: whole series through GraphQL (10 pages of 100,000): p50 ${ms(base)}`);
    console.log(`ratio baseline/downsampled: ${(base / p50).toFixed(1)}x`);
  } finally {
    await server.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
