/**
 * Live: 1,000 graphql-ws subscribers (one connection each, 10 per run over 100 runs) while
 * 10,000 points/s are logged (every 10 ms one logMetrics call of 100 points, round-robin over the
 * runs). Latency = subscriber's receipt minus the moment the logMetrics answer reached the writer
 * (negative when the event beat the answer; the batch is announced just before the answer is
 * sent). Baseline of the same run: the logMetrics round trip itself.
 * BENCH_AUTH=1 runs the server with MLGRAPH_AUTH=required: every subscriber connects with its own
 * viewer token (re-checked on every event) and the writer logs with an editor token.
 */
import WebSocket from "ws";
import { createClient } from "graphql-ws";
import { benchSeconds, createRuns, LOG_POINTS, machine, ms, ok, percentile, rate, sleep, startTestServer } from "./bench-util.js";

const RUNS = 100;
const PER_RUN = Number(process.env.BENCH_SUBSCRIBERS_PER_RUN ?? 10);
const POINTS_PER_CALL = 100;
const CALL_EVERY_MS = 10;
const SECONDS = benchSeconds(20);

async function main() {
  console.log(`machine: ${machine()}; ${process.env.BENCH_AUTH === "1" ? "auth required, a token per subscriber; " : ""}${RUNS * PER_RUN} subscribers, ${rate((POINTS_PER_CALL * 1000) / CALL_EVERY_MS)} points logged, ${SECONDS} s`);
  const auth = process.env.BENCH_AUTH === "1";
  const server = await startTestServer({ env: { MLGRAPH_LOG_LEVEL: "error", ...(auth ? { MLGRAPH_AUTH: "required" } : {}) } });
  const clients: ReturnType<typeof createClient>[] = [];
  try {
    // With auth, every request carries a token: the admin's from the server's first start, then minted ones.
    const admin = auth ? /MLGRAPH_TOKEN=(\S+)/.exec(server.output())![1] : undefined;
    const mint = async (role: string) =>
      auth ? (ok(await server.gql(`mutation($r: String!) { createApiToken(input: {name: $r, role: $r}) { secret } }`, { r: role }, admin)).createApiToken.secret as string) : undefined;
    const writer = await mint("editor");
    const gql = (query: string, variables: Record<string, unknown>) => server.gql(query, variables, writer);
    const runs = await createRuns({ ...server, gql }, RUNS, "bench-live");
    const answeredAt = new Map<string, number>();
    const receipts: { id: string; at: number }[] = [];
    let opened = 0;
    for (const run of runs) {
      for (let s = 0; s < PER_RUN; s++) {
        const token = await mint("viewer");
        const client = createClient({
          url: server.wsUrl,
          webSocketImpl: WebSocket,
          retryAttempts: 0,
          connectionParams: token ? { authorization: `Bearer ${token}` } : undefined,
          on: { connected: () => opened++ },
        });
        clients.push(client);
        client.subscribe<{ metricsLogged: { runId: string; points: { step: number }[] } }>(
          { query: `subscription($run: ID!) { metricsLogged(runId: $run) { runId points { key step value timestamp } } }`, variables: { run } },
          {
            next: (v) => receipts.push({ id: `${run}:${v.data!.metricsLogged.points[0].step}`, at: performance.now() }),
            error: (e) => console.error("subscription error", e),
            complete: () => undefined,
          },
        );
      }
    }
    while (opened < clients.length) await sleep(50);
    await sleep(1000); // let every subscription reach the event bus
    console.log(`${opened} subscribers connected`);

    const roundTrips: number[] = [];
    const inflight: Promise<void>[] = [];
    const until = Date.now() + SECONDS * 1000;
    let call = 0;
    const started = performance.now();
    while (Date.now() < until) {
      const n = call++;
      const run = runs[n % RUNS];
      const firstStep = n * POINTS_PER_CALL;
      const points = Array.from({ length: POINTS_PER_CALL }, (_, j) => ({ key: `m${j % 5}`, step: firstStep + j, value: j }));
      inflight.push(
        (async () => {
          const sent = performance.now();
          ok(await gql(LOG_POINTS, { run, points }));
          const now = performance.now();
          roundTrips.push(now - sent);
          answeredAt.set(`${run}:${firstStep}`, now);
        })(),
      );
      const next = started + call * CALL_EVERY_MS;
      await sleep(Math.max(0, next - performance.now()));
    }
    await Promise.all(inflight);
    await sleep(2000);
    const latencies = receipts.filter((r) => answeredAt.has(r.id)).map((r) => r.at - answeredAt.get(r.id)!);
    const expected = call * PER_RUN;
    console.log(`logged ${rate((call * POINTS_PER_CALL) / SECONDS)} points in ${call} calls; deliveries ${latencies.length}/${expected}`);
    console.log(`answer -> subscriber receipt: p50 ${ms(percentile(latencies, 50))}, p99 ${ms(percentile(latencies, 99))}, max ${ms(Math.max(...latencies))} (target p99 < 50 ms)`);
    console.log(`baseline logMetrics round trip: p50 ${ms(percentile(roundTrips, 50))}, p99 ${ms(percentile(roundTrips, 99))}`);
  } finally {
    await Promise.all(clients.map((c) => c.dispose()));
    await server.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
