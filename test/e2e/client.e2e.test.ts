/**
 * The typed client against a live server: queries, mutations, errors with codes, subscriptions,
 * and the metric logger across a server restart (nothing lost, nothing duplicated).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import {
  CompareRunsDocument,
  CreateExperimentDocument,
  CreateRunDocument,
  GetRunDocument,
  LogParamsDocument,
  MetricHistoryDocument,
  MetricsLoggedDocument,
  MlgraphError,
  RunUpdatedDocument,
  UpdateRunDocument,
  ViewerDocument,
  createClient,
  downloadArtifact,
  sha256File,
  uploadArtifact,
  type MlgraphClient,
} from "../../client";
import { createTestDatabase, makeDataDir, ok, probeUntil, sleep, startTestServer, type TestServer } from "../helpers/test-server";
import { startFlakyProxy } from "../helpers/flaky-proxy";

describe("typed client", () => {
  let server: TestServer;
  let client: MlgraphClient;
  beforeAll(async () => {
    server = await startTestServer();
    client = createClient({ url: server.url });
  });
  afterAll(async () => {
    await client?.close();
    await server?.stop();
  });

  it("runs typed queries and mutations", async () => {
    const { viewer } = await client.request(ViewerDocument, {});
    expect(viewer.role).toBe("admin");
    const { createExperiment } = await client.request(CreateExperimentDocument, { input: { name: "typed", tags: [{ key: "team", value: "nlp" }] } });
    expect(createExperiment.tags).toEqual([{ key: "team", value: "nlp" }]);
    const { createRun } = await client.request(CreateRunDocument, { input: { experimentId: createExperiment.id, name: "r1", params: [{ key: "lr", value: "0.1" }] } });
    expect(createRun).toMatchObject({ name: "r1", status: "RUNNING", experiment: { id: createExperiment.id } });
    await client.request(LogParamsDocument, { runId: createRun.id, params: [{ key: "epochs", value: "3" }] });
    const { run } = await client.request(GetRunDocument, { id: createRun.id });
    expect(run?.params).toEqual([{ key: "epochs", value: "3" }, { key: "lr", value: "0.1" }]);
  });

  it("uploads a folder (one file large enough for multipart) with progress, and downloads it verified", async () => {
    const { createExperiment } = await client.request(CreateExperimentDocument, { input: { name: "client-artifacts" } });
    const { createRun } = await client.request(CreateRunDocument, { input: { experimentId: createExperiment.id } });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-client-upload-"));
    try {
      fs.mkdirSync(path.join(dir, "model", "weights"), { recursive: true });
      fs.writeFileSync(path.join(dir, "model", "MLmodel"), "flavor: sklearn\n");
      // Above the server's 16 MiB multipart threshold, so it goes up in presigned parts.
      fs.writeFileSync(path.join(dir, "model", "weights", "big.bin"), crypto.randomBytes(17 * 1024 * 1024 + 123));
      const progress: number[] = [];
      const uploaded = await uploadArtifact(client, createRun.id, path.join(dir, "model"), { onProgress: (p) => progress.push(p.doneBytes) });
      expect(uploaded.map((a) => a.path).sort()).toEqual(["model/MLmodel", "model/weights/big.bin"]);
      expect(progress[progress.length - 1]).toBe(17 * 1024 * 1024 + 123 + "flavor: sklearn\n".length);
      for (let i = 1; i < progress.length; i++) expect(progress[i]).toBeGreaterThanOrEqual(progress[i - 1]);

      const out = path.join(dir, "downloaded");
      const written = await downloadArtifact(client, createRun.id, "model", out);
      expect(written).toHaveLength(2);
      const big = written.find((f) => f.endsWith("big.bin"))!;
      expect(await sha256File(big)).toBe(await sha256File(path.join(dir, "model", "weights", "big.bin")));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("raises MlgraphError with the server's code and field, and NETWORK_ERROR when unreachable", async () => {
    const { createExperiment } = await client.request(CreateExperimentDocument, { input: { name: "errors" } });
    const { createRun } = await client.request(CreateRunDocument, { input: { experimentId: createExperiment.id, params: [{ key: "lr", value: "0.1" }] } });
    const conflict = await client.request(LogParamsDocument, { runId: createRun.id, params: [{ key: "lr", value: "0.2" }] }).catch((e: unknown) => e);
    expect(conflict).toBeInstanceOf(MlgraphError);
    expect(conflict).toMatchObject({ code: "CONFLICT", field: "params[0].value", retryable: false });
    const dup = await client.request(CreateExperimentDocument, { input: { name: "errors" } }).catch((e: unknown) => e);
    expect(dup).toMatchObject({ code: "CONFLICT", field: "input.name" });

    const nowhere = createClient({ url: "http://127.0.0.1:9/graphql", timeoutMs: 5000 });
    const unreachable = await nowhere.request(ViewerDocument, {}).catch((e: unknown) => e);
    expect(unreachable).toMatchObject({ code: "NETWORK_ERROR", retryable: true });
    // A wrong path answers an HTML 404: not retryable (it was NETWORK_ERROR, so the metric logger
    // retried it forever and close() never returned).
    const wrongPath = createClient({ url: server.url.replace(/\/graphql$/, "/graphq") });
    await expect(wrongPath.request(ViewerDocument, {})).rejects.toMatchObject({ code: "BAD_REQUEST", status: 404, retryable: false });
    const badToken = createClient({ url: server.url, token: "not-a-token" });
    await expect(badToken.request(ViewerDocument, {})).rejects.toMatchObject({ code: "UNAUTHENTICATED" });
    // A subscription with a refused credential fails with it (it reconnected silently forever).
    const refused = badToken.subscribe(RunUpdatedDocument, {});
    const started = Date.now();
    await expect(refused.next()).rejects.toMatchObject({ code: "UNAUTHENTICATED" });
    expect(Date.now() - started).toBeLessThan(5_000);
    await badToken.close();
  });

  it("resends a retryable failure when asked (retries), and a keyed create whose answer was lost makes one run", async () => {
    const { createExperiment } = await client.request(CreateExperimentDocument, { input: { name: "client-retries" } });
    let creates = 0;
    // The first createRun is applied by the server and its answer cut; the second gets a 503 page.
    const proxy = await startFlakyProxy(server.url, (body) => (body.includes("createRun") ? (++creates === 1 ? "lose-answer" : creates === 2) : false));
    try {
      const flaky = createClient({ url: proxy.url });
      const input = { experimentId: createExperiment.id, name: "once", idempotencyKey: crypto.randomUUID() };
      const lost = await flaky.request(CreateRunDocument, { input }).catch((e: unknown) => e);
      expect(lost).toMatchObject({ code: "NETWORK_ERROR", retryable: true });
      const { createRun } = await flaky.request(CreateRunDocument, { input }, { retries: 3 });
      expect(creates).toBe(3);
      const listed = ok(await server.gql(`query($id: ID!) { experiment(id: $id) { runs { edges { node { id name } } } } }`, { id: createExperiment.id })).experiment.runs.edges;
      expect(listed).toEqual([{ node: { id: createRun.id, name: "once" } }]);
      // A refusal is not resent.
      const before = creates;
      await expect(flaky.request(CreateRunDocument, { input: { ...input, name: "other" } }, { retries: 3 })).rejects.toMatchObject({ code: "CONFLICT", field: "input.idempotencyKey" });
      expect(creates).toBe(before + 1);
    } finally {
      await proxy.close();
    }
  });

  it("streams subscriptions as async iterables, and logged metrics come back in comparisons", async () => {
    const { createExperiment } = await client.request(CreateExperimentDocument, { input: { name: "live" } });
    const experimentId = createExperiment.id;
    const updates = client.subscribe(RunUpdatedDocument, { experimentId });
    const received: string[] = [];
    // Runs named probe-N only show that the subscription is open (an event published before is lost).
    let probesHeard = 0;
    const reading = (async () => {
      for await (const event of updates) {
        if (event.runUpdated.name?.startsWith("probe-")) {
          probesHeard++;
          continue;
        }
        received.push(`${event.runUpdated.name}:${event.runUpdated.status}`);
        if (received.length === 2) break;
      }
    })();
    await probeUntil("the client's runUpdated", (i) => client.request(CreateRunDocument, { input: { experimentId, name: `probe-${i}` } }), () => probesHeard > 0);
    const a = (await client.request(CreateRunDocument, { input: { experimentId, name: "a", params: [{ key: "lr", value: "0.1" }] } })).createRun;
    await client.request(UpdateRunDocument, { input: { runId: a.id, status: "FINISHED" } });
    await reading;
    expect(received).toEqual(["a:RUNNING", "a:FINISHED"]);

    const b = (await client.request(CreateRunDocument, { input: { experimentId, name: "b", params: [{ key: "lr", value: "0.2" }] } })).createRun;
    const points = client.subscribe(MetricsLoggedDocument, { runId: b.id, fromStep: 0 });
    const logger = client.metricLogger(b.id, { batchSize: 4 });
    for (let step = 0; step < 10; step++) logger.log("loss", 1 / (step + 1), step);
    await logger.close();
    const seen: number[] = [];
    for await (const batch of points) {
      seen.push(...batch.metricsLogged.points.map((p) => p.step));
      if (seen.length >= 10) break;
    }
    expect(seen.sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

    const logA = client.metricLogger(a.id);
    logA.logMany({ loss: 0.5 }, 0);
    await logA.close();
    const { compareRuns } = await client.request(CompareRunsDocument, { runIds: [a.id, b.id], baselineRunId: a.id, metricKeys: ["loss"] });
    expect(compareRuns.differingParams).toEqual(["lr"]);
    const bRow = compareRuns.rows.find((r) => r.run.id === b.id)!;
    expect(bRow.metrics[0].summary).toMatchObject({ min: 0.1, max: 1, last: 0.1, count: 10 });
    expect(bRow.metrics[0].diffFromBaseline).toBeCloseTo(0.1 - 0.5);
  });
});

describe("metric logger across a server restart", () => {
  let first: TestServer | undefined;
  let second: TestServer | undefined;
  const dataDir = makeDataDir();
  let database: Awaited<ReturnType<typeof createTestDatabase>> = null;
  afterAll(async () => {
    await first?.stop();
    await second?.stop();
    await database?.drop().catch(() => undefined);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it("loses nothing and duplicates nothing; points logged while the server was down arrive after it is back", async () => {
    database = await createTestDatabase();
    first = await startTestServer({ dataDir, databaseUrl: database?.url, keep: true });
    const port = Number(new URL(first.url).port);
    const client = createClient({ url: first.url, reconnect: { initialDelayMs: 100, maxDelayMs: 500 } });
    const { createExperiment } = await client.request(CreateExperimentDocument, { input: { name: "restart" } });
    const { createRun } = await client.request(CreateRunDocument, { input: { experimentId: createExperiment.id } });
    const runId = createRun.id;
    // Subscribed before the restart: the subscription must reconnect and keep delivering.
    const updates = client.subscribe(RunUpdatedDocument, { runId });
    await sleep(300);

    const logger = client.metricLogger(runId, { batchSize: 50, flushIntervalMs: 20, retryInitialDelayMs: 50, retryMaxDelayMs: 300 });
    let step = 0;
    let training = true;
    // The "training loop": never awaits the logger, keeps logging through the outage.
    const loop = (async () => {
      while (training) {
        for (let i = 0; i < 20; i++, step++) logger.log("loss", 1 / (step + 1), step);
        await sleep(5);
      }
    })();
    await sleep(1000);
    const stepsBeforeStop = step;
    await first.stop();
    await sleep(1000);
    const stepsWhileDown = step - stepsBeforeStop;
    second = await startTestServer({ dataDir, databaseUrl: database?.url, port, keep: true });
    expect(second.url).toBe(first.url);
    await sleep(1000);
    training = false;
    await loop;
    await logger.close();
    const total = step;

    expect(stepsWhileDown).toBeGreaterThan(0);
    expect(logger.stats).toMatchObject({ logged: total, delivered: total, dropped: 0, rejected: 0, pending: 0 });
    expect(logger.stats.retries).toBeGreaterThan(0);

    const { run } = await client.request(MetricHistoryDocument, { runId, key: "loss", maxPoints: 100_000 });
    expect(run?.metric?.summary.count).toBe(total);
    const steps = run!.metric!.history.map((p) => p.step);
    expect(steps).toHaveLength(total);
    expect(new Set(steps).size).toBe(total);
    expect(Math.max(...steps)).toBe(total - 1);

    // The subscription resubscribes after the restart on its own schedule, and an event published
    // before that is lost: a tag set on the running run probes until one comes through.
    let pending = updates.next();
    for (let i = 0; ; i++) {
      ok(await second.gql(`mutation($id: ID!, $v: String!) { setRunTags(runId: $id, tags: [{key: "probe", value: $v}]) { id } }`, { id: runId, v: String(i) }));
      const heard = await Promise.race([pending, sleep(1000).then(() => null)]);
      if (heard) break;
      if (i >= 30) throw new Error("the subscription never delivered an event after the restart");
    }
    await client.request(UpdateRunDocument, { input: { runId, status: "FINISHED" } });
    const deadline = Date.now() + 15_000;
    let next: Awaited<ReturnType<typeof updates.next>> | null;
    do {
      next = await Promise.race([updates.next(), sleep(Math.max(0, deadline - Date.now())).then(() => null)]);
    } while (next?.value?.runUpdated.status === "RUNNING"); // a later probe's event
    expect(next?.value?.runUpdated).toMatchObject({ id: runId, status: "FINISHED" });
    updates.close();
    await client.close();
  }, 300_000);
});
