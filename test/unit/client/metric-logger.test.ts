import { MlgraphError } from "../../../client/errors";
import { MetricLogger, type MetricRequester } from "../../../client/metric-logger";

type Call = { runId: string; idempotencyKey: string; points: { key: string; value: number; step: number; timestamp: string }[] };

/** A fake server: answers by a script of outcomes, then stores; dedupes by idempotency key like the real one. */
function fakeServer(script: ("network" | "unavailable" | "bad-input" | "ok-but-lost" | "internal")[] = []) {
  const calls: Call[] = [];
  const stored = new Map<string, Call["points"]>();
  const requester: MetricRequester = {
    async request(_doc: unknown, variables: unknown) {
      const call = structuredClone(variables) as Call;
      calls.push(call);
      const outcome = script.shift();
      if (outcome === "network") throw new MlgraphError("cannot reach", "NETWORK_ERROR");
      if (outcome === "unavailable") throw new MlgraphError("store down", "UNAVAILABLE");
      if (outcome === "bad-input") throw new MlgraphError("points[0].key: bad", "BAD_USER_INPUT", "points[0].key");
      if (outcome === "internal") throw new MlgraphError("Internal server error", "INTERNAL_SERVER_ERROR");
      const deduplicated = stored.has(call.idempotencyKey);
      if (!deduplicated) stored.set(call.idempotencyKey, call.points);
      if (outcome === "ok-but-lost") throw new MlgraphError("connection reset", "NETWORK_ERROR");
      return { logMetrics: { accepted: deduplicated ? 0 : call.points.length, deduplicated } } as never;
    },
  };
  const all = () => [...stored.values()].flat();
  return { requester, calls, all };
}

const fast = { retryInitialDelayMs: 1, retryMaxDelayMs: 5 };

/** A fake server that refuses every request with NETWORK_ERROR until `setDown(false)`. */
function serverThatIsDown() {
  let down = true;
  const inner = fakeServer();
  const requester: MetricRequester = {
    request: async (doc, vars) => {
      if (down) throw new MlgraphError("down", "NETWORK_ERROR");
      return inner.requester.request(doc, vars);
    },
  };
  return { inner, requester, setDown: (value: boolean) => (down = value) };
}

describe("MetricLogger", () => {
  it("refuses a point the server would refuse on its own, so the rest of its batch is delivered", async () => {
    // Previously only non-finite values were checked: one fractional step or bad key made the
    // server refuse the whole request (up to 10,000 points), and a NaN timestamp crashed the pump.
    const server = fakeServer();
    const errors: string[] = [];
    const logger = new MetricLogger(server.requester, "run-1", { batchSize: 100, flushIntervalMs: 60_000, ...fast, onError: (e) => errors.push((e as MlgraphError).field ?? "") });
    logger.log("loss", 1, 0.5);
    logger.log("val:acc", 1, 1);
    logger.log("loss", 1, -1);
    logger.log("loss", 1, 2, Number.NaN);
    logger.log("loss", 1, 3, Date.UTC(2400, 0, 1));
    for (let i = 0; i < 99; i++) logger.log("loss", i, 10 + i);
    await expect(logger.flush()).rejects.toMatchObject({ code: "BAD_USER_INPUT", field: "step" });
    expect(errors).toEqual(["step", "key", "step", "timestamp", "timestamp"]);
    expect(server.all()).toHaveLength(99);
    expect(logger.stats).toMatchObject({ delivered: 99, rejected: 5, pending: 0 });
    await logger.close();
  });

  it("resends a keyed batch answered INTERNAL_SERVER_ERROR a few times before giving it up", async () => {
    const server = fakeServer(["internal", "internal"]);
    const logger = new MetricLogger(server.requester, "run-1", { batchSize: 10, flushIntervalMs: 60_000, ...fast });
    for (let i = 0; i < 10; i++) logger.log("loss", i, i);
    await logger.close();
    expect(server.all()).toHaveLength(10);
    expect(new Set(server.calls.map((c) => c.idempotencyKey)).size).toBe(1);
    const failing = fakeServer(["internal", "internal", "internal", "internal"]);
    const gives = new MetricLogger(failing.requester, "run-1", { batchSize: 10, flushIntervalMs: 60_000, ...fast });
    for (let i = 0; i < 10; i++) gives.log("loss", i, i);
    await expect(gives.flush()).rejects.toMatchObject({ code: "INTERNAL_SERVER_ERROR" });
    expect(failing.calls).toHaveLength(3);
    await gives.close();
  });

  it("sends full batches by size, the rest on flush, in order", async () => {
    const server = fakeServer();
    const logger = new MetricLogger(server.requester, "run-1", { batchSize: 10, flushIntervalMs: 60_000, ...fast });
    for (let i = 0; i < 25; i++) logger.log("loss", i, i);
    await new Promise((r) => setImmediate(r));
    expect(server.calls.length).toBeGreaterThanOrEqual(1);
    await logger.close();
    expect(server.calls.map((c) => c.points.length)).toEqual([10, 10, 5]);
    expect(server.all().map((p) => p.step)).toEqual(Array.from({ length: 25 }, (_, i) => i));
    expect(server.calls.every((c) => c.runId === "run-1")).toBe(true);
    expect(logger.stats).toMatchObject({ logged: 25, delivered: 25, pending: 0, dropped: 0 });
    expect(() => logger.log("loss", 1)).toThrow(/closed/);
  });

  it("sends a partial batch after the flush interval without any flush() call", async () => {
    const server = fakeServer();
    const logger = new MetricLogger(server.requester, "run-1", { batchSize: 1000, flushIntervalMs: 20, ...fast });
    logger.log("acc", 0.5, 1);
    for (const deadline = Date.now() + 5_000; Date.now() < deadline && server.calls.length === 0; ) await new Promise((r) => setTimeout(r, 10));
    expect(server.calls).toHaveLength(1);
    expect(server.calls[0].points[0]).toMatchObject({ key: "acc", value: 0.5, step: 1 });
    await logger.close();
  });

  it("retries network errors and UNAVAILABLE with the SAME idempotency key, storing each batch once", async () => {
    const server = fakeServer(["network", "unavailable", "ok-but-lost", "network"]);
    const errors: boolean[] = [];
    const logger = new MetricLogger(server.requester, "run-1", { batchSize: 5, flushIntervalMs: 60_000, ...fast, onError: (_e, info) => errors.push(info.willRetry) });
    for (let i = 0; i < 10; i++) logger.log("loss", i, i);
    await logger.flush();
    const keys = server.calls.map((c) => c.idempotencyKey);
    // First batch: network, unavailable, stored-but-answer-lost, network, then deduplicated ok.
    expect(new Set(keys.slice(0, 5)).size).toBe(1);
    expect(keys[5]).not.toBe(keys[0]);
    expect(server.all().map((p) => p.step)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(logger.stats).toMatchObject({ delivered: 10, retries: 4, deduplicatedBatches: 1 });
    expect(errors).toEqual([true, true, true, true]);
    await logger.close();
  });

  it("drops a batch the server refuses as invalid, reports it from flush(), and goes on", async () => {
    const server = fakeServer(["bad-input"]);
    const logger = new MetricLogger(server.requester, "run-1", { batchSize: 2, flushIntervalMs: 60_000, ...fast });
    logger.log("a", 1);
    logger.log("b", 2);
    await expect(logger.flush()).rejects.toMatchObject({ code: "BAD_USER_INPUT", field: "points[0].key" });
    logger.log("c", 3);
    await logger.flush();
    expect(server.all().map((p) => p.key)).toEqual(["c"]);
    expect(logger.stats).toMatchObject({ rejected: 2, delivered: 1 });
    await logger.close();
  });

  it("refuses non-finite values at log() without throwing", async () => {
    const server = fakeServer();
    const logger = new MetricLogger(server.requester, "run-1", fast);
    logger.log("loss", Number.NaN);
    logger.log("loss", Number.POSITIVE_INFINITY);
    logger.log("loss", 1);
    await logger.close();
    expect(server.all().map((p) => p.value)).toEqual([1]);
    expect(logger.stats.rejected).toBe(2);
  });

  it("keeps at most maxBufferedPoints during an outage, dropping the oldest, and delivers the rest after", async () => {
    const { inner, requester, setDown } = serverThatIsDown();
    const logger = new MetricLogger(requester, "run-1", { batchSize: 10, maxBufferedPoints: 50, flushIntervalMs: 60_000, ...fast });
    for (let i = 0; i < 200; i++) logger.log("loss", i, i);
    expect(logger.stats.dropped).toBeGreaterThan(0);
    setDown(false);
    await logger.close();
    const steps = inner.all().map((p) => p.step);
    // The in-flight batch (steps 0-9) survives, then the newest points; nothing is duplicated.
    expect(new Set(steps).size).toBe(steps.length);
    expect(steps.slice(-50)).toEqual(Array.from({ length: 50 }, (_, i) => 150 + i));
    expect(logger.stats.dropped + logger.stats.delivered).toBe(200);
  });

  it("flush() waits for the older batch in flight even when newer chunks were dropped meanwhile", async () => {
    // flush() used to count settled points: dropping 20 newer points during an outage made up for
    // the 10 older ones still in flight, and flush() resolved before they were delivered.
    const { inner, requester, setDown } = serverThatIsDown();
    const logger = new MetricLogger(requester, "run-1", { batchSize: 10, maxBufferedPoints: 10, flushIntervalMs: 60_000, ...fast });
    for (let i = 0; i < 40; i++) logger.log("loss", i, i); // 0-9 in flight; 10-29 dropped
    let flushed = false;
    const flushing = logger.flush().then(() => (flushed = true));
    for (let i = 40; i < 60; i++) logger.log("loss", i, i); // drops 30-49: as many as were pending at flush()
    try {
      expect(logger.stats.dropped).toBe(40);
      await new Promise((r) => setTimeout(r, 50));
      expect(flushed).toBe(false);
    } finally {
      setDown(false); // also when an expectation fails: the retry loop must end for jest to exit
    }
    await flushing;
    expect(inner.all().map((p) => p.step).slice(0, 10)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    await logger.close();
    expect(logger.stats).toMatchObject({ delivered: 20, dropped: 40, pending: 0 });
  });
});
