import type { Client as WsClient } from "graphql-ws";
import { ok, probeUntil, sleep, startTestServer, type TestServer } from "../helpers/test-server";

/** Metrics through the public API: ingest, reads, idempotency, streams, comparison, search. */
let server: TestServer;
let experimentId: string;

beforeAll(async () => {
  server = await startTestServer({ env: { MLGRAPH_DEBUG_QUERY_COUNTS: "1" } });
  experimentId = ok(await server.gql(`mutation { createExperiment(input: {name: "metrics"}) { id } }`)).createExperiment.id;
});
afterAll(async () => {
  await server?.stop();
});

const LOG = `mutation($run: ID!, $points: [MetricPointInput!]!, $key: String) {
  logMetrics(runId: $run, points: $points, idempotencyKey: $key) { accepted deduplicated }
}`;
const LOG_COLUMNS = `mutation($run: ID!, $keys: StringColumn!, $steps: SafeIntColumn!, $values: FloatColumn!, $ts: SafeIntColumn, $key: String) {
  logMetricColumns(runId: $run, keys: $keys, steps: $steps, values: $values, timestamps: $ts, idempotencyKey: $key) { accepted deduplicated }
}`;
const SUMMARY = `query($id: ID!, $key: String!) { run(id: $id) { metric(key: $key) { key summary { min max last lastStep count lastTimestamp } } } }`;

type Point = { key: string; step: number; value: number; timestamp?: string };

async function createRun(name: string, params: Record<string, string> = {}, exp = experimentId): Promise<string> {
  const input = { experimentId: exp, name, params: Object.entries(params).map(([key, value]) => ({ key, value })) };
  return ok(await server.gql(`mutation($i: CreateRunInput!) { createRun(input: $i) { id } }`, { i: input })).createRun.id;
}

async function log(runId: string, points: Point[], idempotencyKey?: string) {
  return ok(await server.gql(LOG, { run: runId, points, key: idempotencyKey })).logMetrics as { accepted: number; deduplicated: boolean };
}

async function summary(runId: string, key: string) {
  return ok(await server.gql(SUMMARY, { id: runId, key })).run.metric?.summary ?? null;
}

describe("logMetrics and reads", () => {
  it("stores points and reads keys, summaries and history", async () => {
    const run = await createRun("reads");
    const t0 = Date.parse("2025-03-01T00:00:00Z");
    const points: Point[] = [];
    for (let step = 0; step < 20; step++) {
      points.push({ key: "loss", step, value: 1 / (step + 1), timestamp: new Date(t0 + step * 1000).toISOString() });
      points.push({ key: "acc", step, value: step / 20, timestamp: new Date(t0 + step * 1000).toISOString() });
    }
    points.push({ key: "lr", step: 0, value: 0.01 }); // timestamp defaults to now
    expect(await log(run, points)).toEqual({ accepted: 41, deduplicated: false });

    const data = ok(
      await server.gql(
        `query($id: ID!) { run(id: $id) {
          metricKeys
          loss: metric(key: "loss") { key summary { min max last lastStep count lastTimestamp } history(maxPoints: 5) { step value timestamp } }
          missing: metric(key: "nope") { key }
          metrics(keys: ["acc", "nope", "loss"]) { key summary { last } }
          all: metrics { key }
          window: metric(key: "acc") { history(minStep: 5, maxStep: 7) { step value } }
        } }`,
        { id: run },
      ),
    ).run;
    expect(data.metricKeys).toEqual(["acc", "loss", "lr"]);
    expect(data.loss.summary).toEqual({ min: 0.05, max: 1, last: 0.05, lastStep: 19, count: 20, lastTimestamp: new Date(t0 + 19_000).toISOString() });
    expect(data.loss.history).toHaveLength(5);
    expect(data.loss.history[0]).toEqual({ step: 0, value: 1, timestamp: new Date(t0).toISOString() });
    expect(data.loss.history[4].step).toBe(19);
    expect(data.missing).toBeNull();
    expect(data.metrics.map((m: any) => m.key)).toEqual(["acc", "loss"]);
    expect(data.metrics[0].summary.last).toBeCloseTo(19 / 20);
    expect(data.all.map((m: any) => m.key)).toEqual(["acc", "loss", "lr"]);
    expect(data.window.history).toEqual([5, 6, 7].map((s) => ({ step: s, value: s / 20 })));
  });

  it("accepts the columnar form", async () => {
    const run = await createRun("columns");
    const res = ok(await server.gql(LOG_COLUMNS, { run, keys: ["a", "a", "b"], steps: [0, 1, 0], values: [3, 2, 7], ts: [1_700_000_000_000, 1_700_000_001_000, 1_700_000_000_000] }));
    expect(res.logMetricColumns).toEqual({ accepted: 3, deduplicated: false });
    // The columns may also be written inline (as in GraphiQL).
    const inline = ok(await server.gql(`mutation($run: ID!) { logMetricColumns(runId: $run, keys: ["c"], steps: [4], values: [0.5]) { accepted } }`, { run }));
    expect(inline.logMetricColumns.accepted).toBe(1);
    expect(await summary(run, "a")).toMatchObject({ min: 2, max: 3, last: 2, lastStep: 1, count: 2, lastTimestamp: "2023-11-14T22:13:21.000Z" });
  });

  it("refuses bad points naming index and field, and stores nothing from the call", async () => {
    const run = await createRun("invalid");
    const good = { key: "x", step: 0, value: 1 };
    const cases: [string, Record<string, unknown>, string, string][] = [
      ["bad key", { points: [good, { key: "bad key!", step: 1, value: 1 }] }, "BAD_USER_INPUT", "points[1].key"],
      ["negative step", { points: [good, good, { key: "x", step: -1, value: 1 }] }, "BAD_USER_INPUT", "points[2].step"],
      ["too many", { points: Array.from({ length: 10_001 }, (_, i) => ({ key: "x", step: i, value: 1 })) }, "BAD_USER_INPUT", "points"],
      ["unknown run", { run: "00000000-0000-4000-8000-000000000000", points: [good] }, "NOT_FOUND", "runId"],
      ["malformed run id", { run: "nope", points: [good] }, "BAD_USER_INPUT", "runId"],
      ["empty idempotency key", { points: [good], key: "" }, "BAD_USER_INPUT", "idempotencyKey"],
    ];
    for (const [name, vars, code, field] of cases) {
      const res = await server.gql(LOG, { run, ...vars });
      expect({ name, ext: res.errors?.[0].extensions }).toMatchObject({ name, ext: { code, field } });
      expect(res.errors?.[0].message).toContain(field);
    }
    // A non-finite value cannot travel in JSON variables, but a literal can: 1e999 is Infinity.
    const inf = await server.gql(`mutation($run: ID!) { logMetrics(runId: $run, points: [{key: "x", step: 0, value: 1}, {key: "x", step: 1, value: 1e999}]) { accepted } }`, { run });
    expect(inf.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "points[1].value" });
    const cols = await server.gql(LOG_COLUMNS, { run, keys: ["x", "x"], steps: [0], values: [1, 2] });
    expect(cols.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "steps" });
    const badTs = await server.gql(LOG_COLUMNS, { run, keys: ["x", "x"], steps: [0, 1], values: [1, 2], ts: [0, -5] });
    expect(badTs.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "timestamps[1]" });
    // Column scalars check element types in one pass: the error names the variable and the index.
    for (const [vars, variable, index] of [
      [{ keys: ["x", 7], steps: [0, 1], values: [1, 2] }, "$keys", 1],
      [{ keys: ["x", "x"], steps: [0, 1.5], values: [1, 2] }, "$steps", 1],
      [{ keys: ["x", "x"], steps: [0, 1], values: ["1", 2] }, "$values", 0],
      [{ keys: ["x", "x"], steps: [0, 1], values: [1, null] }, "$values", 1],
      [{ keys: ["x", "x"], steps: [0, 1], values: 3 }, "$values", -1],
    ] as const) {
      const res = await server.gql(LOG_COLUMNS, { run, ...vars });
      expect(res.errors?.[0].extensions?.code).toBe("BAD_USER_INPUT");
      expect(res.errors?.[0].message).toContain(variable);
      expect(res.errors?.[0].message).toContain(index < 0 ? "expected a list" : `element ${index} `);
    }
    const nonFinite = await server.gql(`mutation($run: ID!) { logMetricColumns(runId: $run, keys: ["x", "x"], steps: [0, 1], values: [1, 1e999]) { accepted } }`, { run });
    expect(nonFinite.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "values[1]" });
    expect(ok(await server.gql(`query($id: ID!) { run(id: $id) { metricKeys } }`, { id: run })).run.metricKeys).toEqual([]);

    const history = await server.gql(`query($id: ID!) { run(id: $id) { metric(key: "x") { key } metrics { history(maxPoints: 0) { step } } } }`, { id: run });
    expect(history.errors).toBeUndefined(); // no metrics: history is never asked
    await log(run, [good]);
    const zero = await server.gql(`query($id: ID!) { run(id: $id) { metric(key: "x") { history(maxPoints: 0) { step } } } }`, { id: run });
    expect(zero.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "maxPoints" });
    const range = await server.gql(`query($id: ID!) { run(id: $id) { metric(key: "x") { history(minStep: 5, maxStep: 2) { step } } } }`, { id: run });
    expect(range.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "maxStep" });
  });

  it("stores points logged under an upper-case run id as the run's own", async () => {
    const run = await createRun("upper-case-id");
    expect(await log(run.toUpperCase(), [{ key: "x", step: 0, value: 1 }])).toEqual({ accepted: 1, deduplicated: false });
    expect((await summary(run, "x")).count).toBe(1);
  });

  it("refuses points for a deleted run", async () => {
    const run = await createRun("deleted");
    ok(await server.gql(`mutation($id: ID!) { deleteRun(id: $id) { id } }`, { id: run }));
    const res = await server.gql(LOG, { run, points: [{ key: "x", step: 0, value: 1 }] });
    expect(res.errors?.[0].extensions).toMatchObject({ code: "NOT_FOUND", field: "runId" });
  });
});

describe("idempotent retries", () => {
  it("stores a batch once when retried with the same key, sequentially and concurrently", async () => {
    const run = await createRun("idem");
    const batch = Array.from({ length: 100 }, (_, i) => ({ key: "loss", step: i, value: i }));
    expect(await log(run, batch, "batch-1")).toEqual({ accepted: 100, deduplicated: false });
    expect(await log(run, batch, "batch-1")).toEqual({ accepted: 0, deduplicated: true });
    expect((await summary(run, "loss")).count).toBe(100);

    const second = batch.map((p) => ({ ...p, step: p.step + 100 }));
    const answers = await Promise.all(Array.from({ length: 8 }, () => log(run, second, "batch-2")));
    expect(answers.filter((a) => !a.deduplicated)).toEqual([{ accepted: 100, deduplicated: false }]);
    expect((await summary(run, "loss")).count).toBe(200);

    // The key is per run: another run may use the same key.
    const other = await createRun("idem-other");
    expect(await log(other, batch, "batch-1")).toEqual({ accepted: 100, deduplicated: false });
  });
});

/** Subscribes and gathers every point received until `until` says stop. */
function stream(client: WsClient, variables: Record<string, unknown>) {
  const points: { key: string; step: number; value: number; timestamp: string }[] = [];
  let batches = 0;
  let failure: unknown;
  const unsubscribe = client.subscribe<{ metricsLogged: { runId: string; points: typeof points } }>(
    { query: `subscription($run: ID!, $keys: [String!], $from: SafeInt) { metricsLogged(runId: $run, keys: $keys, fromStep: $from) { runId points { key step value timestamp } } }`, variables },
    {
      next: (v) => {
        if (v.errors) failure = v.errors;
        batches++;
        points.push(...(v.data?.metricsLogged.points ?? []));
      },
      error: (e) => (failure = e),
      complete: () => undefined,
    },
  );
  const until = async (predicate: () => boolean, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      if (failure) throw new Error(`subscription failed: ${JSON.stringify(failure)}`);
      if (Date.now() > deadline) throw new Error(`timed out with ${points.length} points`);
      await sleep(20);
    }
  };
  return { points, until, unsubscribe, batches: () => batches };
}

describe("metricsLogged", () => {
  it("replays from fromStep, then streams live, with no gap and no duplicate at the seam", async () => {
    const run = await createRun("seam");
    const BATCHES = 60;
    const PER_BATCH = 50;
    let written = 0;
    const writer = (async () => {
      for (let b = 0; b < BATCHES; b++) {
        const points = Array.from({ length: PER_BATCH }, (_, j) => ({ key: j % 2 ? "a" : "b", step: b * PER_BATCH + j, value: b }));
        await log(run, points);
        written = b + 1;
        await sleep(5);
      }
    })();
    // Subscribe while the writer is busy, so batches commit during the replay and right after it.
    while (written < 15) await sleep(5);
    const sub = stream(server.ws(), { run, from: 100 });
    await writer;
    const expected = BATCHES * PER_BATCH - 100;
    await sub.until(() => sub.points.length >= expected);
    await sleep(300); // duplicates, if any, would arrive now
    sub.unsubscribe();
    const steps = sub.points.map((p) => p.step);
    expect(steps.length).toBe(expected);
    expect(new Set(steps).size).toBe(expected);
    expect(Math.min(...steps)).toBe(100);
    expect(Math.max(...steps)).toBe(BATCHES * PER_BATCH - 1);
  });

  it("announces a batch again when its retry is answered deduplicated: to subscribers that never had it, once, and to no one twice", async () => {
    // The first announcement can be lost (the server dies between storing and announcing); the
    // retry is then answered `deduplicated`. Subscribers who did get the batch drop the repeat.
    const run = await createRun("repeat");
    // Points of the key "probe" only show that a live subscription is open (a batch announced
    // before it is lost); the assertions are about the key "loss".
    let probes = 0;
    const probe = () => log(run, [{ key: "probe", step: 1000 + probes++, value: 0 }]);
    const heardProbe = (sub: ReturnType<typeof stream>) => () => sub.points.some((p) => p.key === "probe");
    const loss = (sub: ReturnType<typeof stream>) => sub.points.filter((p) => p.key === "loss");
    const before = stream(server.ws(), { run });
    await probeUntil("the first live subscription", probe, heardProbe(before));
    const batch = [0, 1, 2].map((step) => ({ key: "loss", step, value: step / 10 }));
    expect(await log(run, batch, "batch-1")).toEqual({ accepted: 3, deduplicated: false });
    await before.until(() => loss(before).length >= 3);
    const after = stream(server.ws(), { run }); // live only: never saw batch-1
    const replaying = stream(server.ws(), { run, from: 0 }); // read batch-1 in its replay
    await replaying.until(() => loss(replaying).length >= 3);
    await probeUntil("the second live subscription", probe, heardProbe(after));
    expect(await log(run, batch, "batch-1")).toEqual({ accepted: 0, deduplicated: true });
    await log(run, [{ key: "loss", step: 3, value: 0.3 }], "batch-2"); // a marker after the repeat
    for (const sub of [before, after, replaying]) await sub.until(() => sub.points.some((p) => p.step === 3));
    await sleep(300);
    for (const sub of [before, after, replaying]) sub.unsubscribe();
    expect(loss(before).map((p) => p.step)).toEqual([0, 1, 2, 3]);
    expect(loss(after).map((p) => p.step)).toEqual([0, 1, 2, 3]);
    expect(loss(replaying).map((p) => p.step)).toEqual([0, 1, 2, 3]);
    // The repeat carries the points as stored (the retry's own defaulted timestamps are later).
    expect(loss(after).slice(0, 3)).toEqual(loss(before).slice(0, 3));
  });

  it("replays a step holding more points than a page in bounded pages, each point once", async () => {
    // 25,000 points of one key at step 0 (logged without steps). The replay used to read the
    // whole step as one page (and one websocket message); now it pages by point.
    const run = await createRun("crowded-step");
    for (let b = 0; b < 5; b++) {
      await log(run, Array.from({ length: 5000 }, (_, j) => ({ key: "gpu_util", step: 0, value: b * 5000 + j })));
    }
    const sub = stream(server.ws(), { run, from: 0 });
    await sub.until(() => sub.points.length >= 25_000);
    await sleep(300);
    sub.unsubscribe();
    expect(sub.points).toHaveLength(25_000);
    expect(new Set(sub.points.map((p) => p.value)).size).toBe(25_000);
    expect(sub.batches()).toBe(3); // pages of at most 10,000
  });

  it("streams only live points (no fromStep) of the chosen keys", async () => {
    const run = await createRun("live-keys");
    await log(run, [{ key: "old", step: 0, value: 1 }]);
    const sub = stream(server.ws(), { run, keys: ["wanted"] });
    // Until the subscription is open nothing can be received: probe until the first point arrives.
    for (let i = 0; sub.points.length === 0; i++) {
      await log(run, [{ key: "wanted", step: 1000 + i, value: -1 }, { key: "other", step: 1000 + i, value: 0 }]);
      await sleep(100);
      if (i > 100) throw new Error("subscription never opened");
    }
    const before = sub.points.length;
    await log(run, [{ key: "wanted", step: 5, value: 42, timestamp: "2025-01-01T00:00:00.000Z" }, { key: "other", step: 5, value: 0 }]);
    await sub.until(() => sub.points.length > before);
    sub.unsubscribe();
    expect(sub.points.every((p) => p.key === "wanted")).toBe(true);
    expect(sub.points[sub.points.length - 1]).toEqual({ key: "wanted", step: 5, value: 42, timestamp: "2025-01-01T00:00:00.000Z" });
  });

  it("refuses an unknown run", async () => {
    const sub = stream(server.ws(), { run: "00000000-0000-4000-8000-000000000000" });
    await expect(sub.until(() => false, 5000)).rejects.toThrow(/NOT_FOUND|not found/);
  });
});

describe("large series", () => {
  it("reads a 1,000,000-point series back downsampled to 1,000 points", async () => {
    const run = await createRun("million");
    const BATCH = 10_000;
    const keys = new Array<string>(BATCH).fill("loss");
    const send = async (b: number) => {
      const steps = Array.from({ length: BATCH }, (_, i) => b * BATCH + i);
      const values = steps.map((s) => Math.sin(s / 5000) + (s === 777_777 ? 50 : 0));
      const res = ok(await server.gql(LOG_COLUMNS, { run, keys, steps, values, ts: steps.map((s) => 1_700_000_000_000 + s) }));
      expect(res.logMetricColumns.accepted).toBe(BATCH);
    };
    // 100 batches, four clients at a time (they share group commits).
    for (let b = 0; b < 100; b += 4) await Promise.all([b, b + 1, b + 2, b + 3].map(send));

    const res = ok(
      await server.gql(`query($id: ID!) { run(id: $id) { metric(key: "loss") { summary { count lastStep max } history(maxPoints: 1000) { step value } } } }`, { id: run }),
    );
    const m = res.run.metric;
    expect(m.summary).toEqual({ count: 1_000_000, lastStep: 999_999, max: 50 + Math.sin(777_777 / 5000) });
    const history: { step: number; value: number }[] = m.history;
    expect(history.length).toBeGreaterThan(900);
    expect(history.length).toBeLessThanOrEqual(1000);
    expect(history[0].step).toBe(0);
    expect(history[history.length - 1].step).toBe(999_999);
    for (let i = 1; i < history.length; i++) expect(history[i].step).toBeGreaterThan(history[i - 1].step);
    // LTTB keeps the spike a plain stride would likely miss.
    expect(history.some((p) => p.step === 777_777)).toBe(true);

    // Read again without the summary: the series is known to exist and to be long, so the only
    // ClickHouse query is the one for its points, and they are the same points.
    const again = await server.gql(`query($id: ID!) { run(id: $id) { metric(key: "loss") { history(maxPoints: 1000) { step value } } } }`, { id: run });
    expect(ok(again).run.metric.history).toEqual(history);
    expect((again as any).extensions?.queryCounts).toMatchObject({ clickhouse: 1 });
    // A wide step range is read from the rollup without counting its raw points first: one query.
    const ranged = await server.gql(`query($id: ID!) { run(id: $id) { metric(key: "loss") { history(maxPoints: 1000, minStep: 1000, maxStep: 998999) { step value } } } }`, { id: run });
    const rangedPoints: { step: number; value: number }[] = ok(ranged).run.metric.history;
    expect(rangedPoints.length).toBeGreaterThan(900);
    expect(rangedPoints.length).toBeLessThanOrEqual(1000);
    expect(rangedPoints[0].step).toBe(1000);
    expect(rangedPoints[rangedPoints.length - 1].step).toBe(998_999);
    expect(rangedPoints.some((p) => p.step === 777_777)).toBe(true);
    expect((ranged as any).extensions?.queryCounts).toMatchObject({ clickhouse: 1 });
    // A key never logged is still null (and costs its existence query).
    const missing = ok(await server.gql(`query($id: ID!) { run(id: $id) { metric(key: "nope") { key } } }`, { id: run }));
    expect(missing.run.metric).toBeNull();
  }, 180_000);
});

describe("ClickHouse queries per GraphQL request", () => {
  const KEYS = Array.from({ length: 10 }, (_, i) => `m${i}`);
  let exp: string;
  beforeAll(async () => {
    exp = ok(await server.gql(`mutation { createExperiment(input: {name: "fanout"}) { id } }`)).createExperiment.id;
    await Promise.all(
      Array.from({ length: 50 }, async (_, r) => {
        const run = await createRun(`fan-${r}`, {}, exp);
        await log(run, KEYS.flatMap((key, k) => [0, 1].map((step) => ({ key, step, value: r * 100 + k + step }))));
      }),
    );
  });

  it("answers 50 runs x 10 metric summaries with one ClickHouse query", async () => {
    const res = await server.gql(
      `query($e: [ID!], $keys: [String!]) { runs(experimentIds: $e, first: 50) { edges { node { name metrics(keys: $keys) { key summary { last count } } } } } }`,
      { e: [exp], keys: KEYS },
    );
    const runs = ok(res).runs.edges.map((e: any) => e.node);
    expect(runs).toHaveLength(50);
    for (const run of runs) {
      const r = Number(run.name.slice(4));
      expect(run.metrics.map((m: any) => m.key)).toEqual(KEYS);
      run.metrics.forEach((m: any, k: number) => expect(m.summary).toEqual({ last: r * 100 + k + 1, count: 2 }));
    }
    expect((res as any).extensions?.queryCounts).toMatchObject({ clickhouse: 1 });
  });

  it("batches histories too: one query for keys, one for summaries, one for histories", async () => {
    const res = await server.gql(
      `query($e: [ID!]) { runs(experimentIds: $e, first: 50) { edges { node { metricKeys metrics { summary { min } history(maxPoints: 10) { step value } } } } } }`,
      { e: [exp] },
    );
    const runs = ok(res).runs.edges.map((e: any) => e.node);
    expect(runs.every((r: any) => r.metrics.length === 10 && r.metrics.every((m: any) => m.history.length === 2))).toBe(true);
    expect((res as any).extensions?.queryCounts).toMatchObject({ clickhouse: 3 });
  });
});

describe("compareRuns", () => {
  it("compares runs: per-metric min/max/last, diff to the baseline, differing params", async () => {
    const exp = ok(await server.gql(`mutation { createExperiment(input: {name: "compare"}) { id } }`)).createExperiment.id;
    const a = await createRun("cmp-a", { lr: "0.1", opt: "adam", seed: "1" }, exp);
    const b = await createRun("cmp-b", { lr: "0.01", opt: "adam", seed: "1" }, exp);
    const c = await createRun("cmp-c", { lr: "0.1", opt: "adam" }, exp);
    await log(a, [{ key: "loss", step: 0, value: 1 }, { key: "loss", step: 1, value: 0.5 }, { key: "acc", step: 1, value: 0.7 }]);
    await log(b, [{ key: "loss", step: 0, value: 0.9 }, { key: "loss", step: 5, value: 0.25 }, { key: "loss", step: 3, value: 0.1 }]);
    await log(c, [{ key: "acc", step: 0, value: 0.9 }]);
    const QUERY = `query($ids: [ID!]!, $keys: [String!], $base: ID) { compareRuns(runIds: $ids, metricKeys: $keys, baselineRunId: $base) {
      runs { name } metricKeys differingParams
      rows { run { name params { key value } } metrics { key summary { min max last lastStep count } diffFromBaseline } } } }`;
    const res = await server.gql(QUERY, { ids: [b, a, c], base: a });
    const cmp = ok(res).compareRuns;
    expect(cmp.runs.map((r: any) => r.name)).toEqual(["cmp-b", "cmp-a", "cmp-c"]);
    expect(cmp.metricKeys).toEqual(["acc", "loss"]);
    expect(cmp.differingParams).toEqual(["lr", "seed"]);
    const row = (name: string) => cmp.rows.find((r: any) => r.run.name === name);
    expect(row("cmp-b").metrics).toEqual([
      { key: "acc", summary: null, diffFromBaseline: null },
      { key: "loss", summary: { min: 0.1, max: 0.9, last: 0.25, lastStep: 5, count: 3 }, diffFromBaseline: 0.25 - 0.5 },
    ]);
    expect(row("cmp-a").metrics[1]).toMatchObject({ key: "loss", diffFromBaseline: 0 });
    expect(row("cmp-c").metrics[0]).toMatchObject({ key: "acc", summary: { last: 0.9 }, diffFromBaseline: expect.closeTo(0.2, 10) });
    expect(row("cmp-a").run.params).toEqual([{ key: "lr", value: "0.1" }, { key: "opt", value: "adam" }, { key: "seed", value: "1" }]);

    // The columnar form carries the same figures as matrices (row per run, column per key).
    const columns = ok(
      await server.gql(`query($ids: [ID!]!, $base: ID) { compareRuns(runIds: $ids, baselineRunId: $base) { columns { runIds metricKeys min max last diffFromBaseline } } }`, { ids: [b, a, c], base: a }),
    ).compareRuns.columns;
    expect(columns.runIds).toEqual([b, a, c]);
    expect(columns.metricKeys).toEqual(["acc", "loss"]);
    expect(columns.min).toEqual([[null, 0.1], [0.7, 0.5], [0.9, null]]);
    expect(columns.max).toEqual([[null, 0.9], [0.7, 1], [0.9, null]]);
    expect(columns.last).toEqual([[null, 0.25], [0.7, 0.5], [0.9, null]]);
    expect(columns.diffFromBaseline).toEqual(cmp.rows.map((r: any) => r.metrics.map((m: any) => m.diffFromBaseline)));
    // Rows asked through a fragment still get full summaries (the columns-only shortcut is not taken).
    const viaFragment = ok(
      await server.gql(`query($ids: [ID!]!) { compareRuns(runIds: $ids) { ...Cmp } } fragment Cmp on RunComparison { rows { metrics { key summary { count lastStep } } } }`, { ids: [b] }),
    ).compareRuns;
    expect(viaFragment.rows[0].metrics).toEqual([{ key: "loss", summary: { count: 3, lastStep: 5 } }]);

    const onlyLoss = ok(await server.gql(QUERY, { ids: [a, b], keys: ["loss"] })).compareRuns;
    expect(onlyLoss.metricKeys).toEqual(["loss"]);
    expect(onlyLoss.rows[0].metrics[0].diffFromBaseline).toBeNull();
    expect((await server.gql(QUERY, { ids: [a, b], base: c })).errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "baselineRunId" });
    expect((await server.gql(QUERY, { ids: [a, "00000000-0000-4000-8000-000000000000"] })).errors?.[0].extensions).toMatchObject({ code: "NOT_FOUND", field: "runIds[1]" });
    expect((await server.gql(QUERY, { ids: [a, a] })).errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "runIds[1]" });

    // More keys than one comparison shows: refused when they were not named, not cut at 100.
    const wide = await createRun("cmp-wide", {}, exp);
    await log(wide, Array.from({ length: 101 }, (_, i) => ({ key: `m${String(i).padStart(3, "0")}`, step: 0, value: i })));
    const tooMany = await server.gql(QUERY, { ids: [a, wide] });
    expect(tooMany.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "metricKeys" });
    expect(tooMany.errors?.[0].message).toMatch(/103 metric keys/) // cmp-a logged loss and acc;
    expect(ok(await server.gql(QUERY, { ids: [a, wide], keys: ["m100", "loss"] })).compareRuns.metricKeys).toEqual(["m100", "loss"]);
  });
});

describe("run search on metrics", () => {
  it("filters and orders on last values together with params", async () => {
    const exp = ok(await server.gql(`mutation { createExperiment(input: {name: "metric-search"}) { id } }`)).createExperiment.id;
    // val_loss's LAST value (highest step) counts, not its minimum.
    const runs: [string, string, [number, number][]][] = [
      ["s1", "0.01", [[0, 0.1], [1, 0.2]]],
      ["s2", "0.01", [[0, 0.9], [1, 0.4]]],
      ["s3", "0.1", [[0, 0.5], [2, 0.1], [1, 0.05]]],
      ["s4", "0.01", []],
    ];
    for (const [name, lr, series] of runs) {
      const id = await createRun(name, { lr }, exp);
      if (series.length) await log(id, series.map(([step, value]) => ({ key: "val_loss", step, value })));
    }
    const SEARCH = `query($e: [ID!], $f: String, $o: [String!]) { runs(experimentIds: $e, filter: $f, orderBy: $o) { edges { node { name } } } }`;
    const names = async (f: string | null, o?: string[]) => ok(await server.gql(SEARCH, { e: [exp], f, o })).runs.edges.map((e: any) => e.node.name);
    expect(await names("metrics.val_loss < 0.3", ["metrics.val_loss ASC"])).toEqual(["s3", "s1"]);
    expect(await names("metrics.val_loss < 0.3 and params.lr = '0.01'")).toEqual(["s1"]);
    expect(await names("metrics.val_loss >= 0.3 or params.lr = '0.1'", ["attributes.name ASC"])).toEqual(["s2", "s3"]);
    expect(await names(null, ["metrics.val_loss DESC"])).toEqual(["s2", "s1", "s3", "s4"]);
    // One run a page, by key (the last value, then the run without it): the same order.
    const PAGE = `query($e: [ID!], $o: [String!], $after: String) { runs(experimentIds: $e, orderBy: $o, first: 1, after: $after) { edges { node { name } } pageInfo { hasNextPage endCursor } } }`;
    for (const o of [["metrics.val_loss DESC"], ["metrics.val_loss ASC", "params.lr DESC"]]) {
      const walked: string[] = [];
      for (let after: string | null = null, more = true; more; ) {
        const page: any = ok(await server.gql(PAGE, { e: [exp], o, after })).runs;
        walked.push(...page.edges.map((e: any) => e.node.name));
        [more, after] = [page.pageInfo.hasNextPage, page.pageInfo.endCursor];
      }
      expect(walked).toEqual(await names(null, o));
    }
    // Without experimentIds ordering considers every run with the metric.
    const all = ok(await server.gql(SEARCH, { f: "metrics.val_loss <= 0.4 and params.lr = '0.01'", o: ["metrics.val_loss DESC"] })).runs.edges.map((e: any) => e.node.name);
    expect(all).toEqual(["s2", "s1"]);
  });
});

describe("readiness", () => {
  it("reports ClickHouse in /readyz", async () => {
    const res = await fetch(server.url.replace(/\/graphql$/, "/readyz"));
    expect(res.status).toBe(200);
    expect((await res.json()).checks).toMatchObject({ database: "ok", clickhouse: "ok" });
  });
});
