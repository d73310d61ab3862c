import crypto from "node:crypto";
import { createTestDatabase, ok, sleep, startTestServer, type TestServer } from "../helpers/test-server";

/**
 * Two server processes on one PostgreSQL database and one Redis: a `metricsLogged` subscriber on
 * B receives points logged through A. Only the live stream is asserted: each process here runs
 * its own embedded ClickHouse (chdb allows one process per data directory), so points stored
 * through A are not readable through B; a multi-replica deployment sets CLICKHOUSE_URL.
 */
const HAVE_SERVICES = Boolean(process.env.REDIS_URL && process.env.TEST_DATABASE_URL);
if (!HAVE_SERVICES) {
  console.warn("metrics-redis: SKIPPED: needs REDIS_URL and TEST_DATABASE_URL (two processes sharing PostgreSQL and Redis)");
  if (process.env.MLGRAPH_REQUIRE_ALL_SERVICES) throw new Error("metrics-redis: REDIS_URL and TEST_DATABASE_URL are required in CI");
}

(HAVE_SERVICES ? describe : describe.skip)("metricsLogged across processes over Redis", () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let a: TestServer;
  let b: TestServer;

  beforeAll(async () => {
    db = await createTestDatabase();
    const prefix = `mlgraph-test-${crypto.randomBytes(4).toString("hex")}:`;
    // A first: it runs the migrations; B then finds the schema in place.
    a = await startTestServer({ databaseUrl: db!.url, redis: { prefix } });
    b = await startTestServer({ databaseUrl: db!.url, redis: { prefix } });
  });
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await db?.drop();
  });

  it("delivers points logged through A to a subscriber on B, once each", async () => {
    const exp = ok(await a.gql(`mutation { createExperiment(input: {name: "redis-metrics"}) { id } }`)).createExperiment.id;
    const run = ok(await a.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e}) { id } }`, { e: exp })).createRun.id;

    const received: { key: string; step: number; value: number }[] = [];
    let failure: unknown;
    const unsubscribe = b.ws().subscribe<{ metricsLogged: { runId: string; points: typeof received } }>(
      { query: `subscription($run: ID!) { metricsLogged(runId: $run) { runId points { key step value } } }`, variables: { run } },
      {
        next: (v) => {
          if (v.errors) failure = v.errors;
          expect(v.data?.metricsLogged.runId).toBe(run);
          received.push(...(v.data?.metricsLogged.points ?? []));
        },
        error: (e) => (failure = e),
        complete: () => undefined,
      },
    );
    // The subscription opens asynchronously: probe through A until B hears one.
    let step = 0;
    while (received.length === 0) {
      if (failure) throw new Error(JSON.stringify(failure));
      if (step > 200) throw new Error("B never received a point logged through A");
      ok(await a.gql(`mutation($run: ID!, $s: SafeInt) { logMetrics(runId: $run, points: [{key: "probe", step: $s, value: 1}]) { accepted } }`, { run, s: step++ }));
      await sleep(50);
    }
    const LOG = `mutation($run: ID!, $points: [MetricPointInput!]!) { logMetrics(runId: $run, points: $points) { accepted } }`;
    for (let i = 0; i < 10; i++) {
      ok(await a.gql(LOG, { run, points: Array.from({ length: 100 }, (_, j) => ({ key: "loss", step: i * 100 + j, value: i })) }));
    }
    const deadline = Date.now() + 15_000;
    while (received.filter((p) => p.key === "loss").length < 1000 && Date.now() < deadline) await sleep(20);
    await sleep(200);
    unsubscribe();
    const loss = received.filter((p) => p.key === "loss").map((p) => p.step);
    expect(loss).toEqual(Array.from({ length: 1000 }, (_, i) => i));
  });
});
