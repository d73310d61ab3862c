/**
 * Where the time of a downsampled history read goes: the same 1,000,000-point series read through
 * GraphQL as (a) the run alone (PostgreSQL), (b) the metric's summary (one ClickHouse query),
 * (c) the history (1,000 points), and (d) a trivial `{ __typename }` request, p50 each.
 * Diagnostic companion of metrics-history.ts (no target of its own).
 */
import { createRuns, logLossSeries, machine, ms, ok, percentile, startTestServer, timed } from "./bench-util.js";

const POINTS = Number(process.env.BENCH_POINTS ?? 1_000_000);
const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 20);

async function p50(fn: () => Promise<unknown>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < ITERATIONS + 3; i++) {
    const t = await timed(fn);
    if (i >= 3) times.push(t); // the first reads warm caches
  }
  return percentile(times, 50);
}

async function main() {
  console.log(`machine: ${machine()}`);
  const server = await startTestServer({ env: { MLGRAPH_LOG_LEVEL: "error" } });
  try {
    const [run] = await createRuns(server, 1, "bench-history-breakdown");
    await logLossSeries(server, run, POINTS, (s) => Math.sin(s / 1000));
    const queries: [string, string][] = [
      ["trivial request", `{ __typename }`],
      ["run only (PostgreSQL)", `query($id: ID!) { run(id: $id) { id } }`],
      ["summary", `query($id: ID!) { run(id: $id) { metric(key: "loss") { summary { last count } } } }`],
      ["history 1,000", `query($id: ID!) { run(id: $id) { metric(key: "loss") { history(maxPoints: 1000) { step value timestamp } } } }`],
      ["history 1,000, steps only", `query($id: ID!) { run(id: $id) { metric(key: "loss") { history(maxPoints: 1000) { step } } } }`],
      ["history 10, steps only", `query($id: ID!) { run(id: $id) { metric(key: "loss") { history(maxPoints: 10) { step } } } }`],
      ["history 1,000, step range", `query($id: ID!) { run(id: $id) { metric(key: "loss") { history(maxPoints: 1000, minStep: 0, maxStep: 999999) { step value timestamp } } } }`],
    ];
    for (const [label, query] of queries) console.log(`${label.padEnd(28)} p50 ${ms(await p50(async () => ok(await server.gql(query, { id: run }))))}`);
  } finally {
    await server.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
