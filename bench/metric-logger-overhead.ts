/**
 * The metric logger's cost to a training loop: nanoseconds per `log()` call in a tight loop
 * (target < 2 µs: the loop never waits on the network), printed beside the baseline of the same
 * run, an unbuffered client that sends one logMetrics request per point and awaits it. Also the
 * time the logger then needs to deliver everything (flush on close) against a live server.
 * Build: `npx tsc -p tsconfig.json && npx tsc -p bench`; run: `node dist-bench/bench/metric-logger-overhead.js`.
 * BENCH_POINTS (default 1,000,000) and BENCH_BASELINE_POINTS (default 2,000) size the phases.
 */
import { createClient, LogMetricsDocument } from "../client/index.js";
import { createRuns, machine, rate, startTestServer } from "./bench-util.js";

const POINTS = Number(process.env.BENCH_POINTS ?? 1_000_000);
const BASELINE_POINTS = Number(process.env.BENCH_BASELINE_POINTS ?? 2_000);

async function main(): Promise<void> {
  const server = await startTestServer();
  try {
    const [buffered, unbuffered] = await createRuns(server, 2, "bench-logger");
    const client = createClient({ url: server.url });

    // Warm-up, so JIT compilation is not part of the figure.
    const warm = client.metricLogger(buffered, { batchSize: 5_000 });
    for (let i = 0; i < 50_000; i++) warm.log("warmup", i, i);
    await warm.close();

    const logger = client.metricLogger(buffered, { batchSize: 5_000 });
    const keys = ["loss", "accuracy", "lr", "grad_norm"];
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < POINTS; i++) logger.log(keys[i & 3], i * 1e-6, i >> 2);
    const loopNs = Number(process.hrtime.bigint() - t0);
    const t1 = process.hrtime.bigint();
    await logger.close();
    const drainMs = Number(process.hrtime.bigint() - t1) / 1e6;
    if (logger.stats.delivered !== POINTS) throw new Error(`delivered ${logger.stats.delivered} of ${POINTS}`);

    const t2 = process.hrtime.bigint();
    for (let i = 0; i < BASELINE_POINTS; i++) {
      await client.request(LogMetricsDocument, { runId: unbuffered, points: [{ key: "loss", value: i * 1e-6, step: i }] });
    }
    const baselineNs = Number(process.hrtime.bigint() - t2);
    await client.close();

    const perLog = loopNs / POINTS;
    const perRequest = baselineNs / BASELINE_POINTS;
    console.log(`machine: ${machine()}`);
    console.log(`buffered logger   : ${(perLog / 1000).toFixed(3)} µs per log() over ${POINTS.toLocaleString("en-US")} calls (${rate(POINTS / (loopNs / 1e9))} in the loop)`);
    console.log(`  then delivered  : all ${POINTS.toLocaleString("en-US")} points ${drainMs.toFixed(0)} ms after the loop ended (close())`);
    console.log(`baseline unbuffered, one request per point: ${(perRequest / 1000).toFixed(1)} µs per point over ${BASELINE_POINTS.toLocaleString("en-US")} points`);
    console.log(`ratio: the training loop pays ${(perRequest / perLog).toFixed(0)}x less per point with the logger (target < 2 µs per log(): ${perLog < 2000 ? "met" : "NOT met"})`);
  } finally {
    await server.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
