import { ok, sleep, startTestServer, type TestServer } from "../helpers/test-server";
import { startWebhookReceiver } from "../helpers/webhook-receiver";

const SECRET = "whsec-test-0123456789abcdef";
const CREATE_WEBHOOK = `mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { id url events active } }`;
const DELIVERIES = `query { webhooks { id deliveries { edges { node { id event status attemptCount lastError payload attempts { attempt responseStatus error } } } } } }`;

describe("webhook deliveries", () => {
  let server: TestServer;
  beforeAll(async () => {
    // Fast backoff so the retry test takes fractions of a second.
    server = await startTestServer({ env: { MLGRAPH_WEBHOOK_BACKOFF_MS: "200", MLGRAPH_WEBHOOK_MAX_ATTEMPTS: "4" } });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("retries with backoff: a receiver answering 500 twice gets the delivery on the 3rd attempt, once", async () => {
    const receiver = await startWebhookReceiver(SECRET, (n) => (n <= 2 ? 500 : 200));
    try {
      const hook = ok(await server.gql(CREATE_WEBHOOK, { input: { url: receiver.url, events: ["RUN_FINISHED"], secret: SECRET } })).createWebhook;
      const exp = ok(await server.gql(`mutation { createExperiment(input: {name: "wh-retry"}) { id } }`)).createExperiment;
      const run = ok(await server.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e}) { id } }`, { e: exp.id })).createRun;
      ok(await server.gql(`mutation($r: ID!) { updateRun(input: {runId: $r, status: FINISHED}) { status } }`, { r: run.id }));

      await receiver.waitFor((r) => r.some((x) => x.status === 200));
      await sleep(1500); // longer than the next backoffs: a duplicate would have arrived by now
      expect(receiver.received.map((r) => r.status)).toEqual([500, 500, 200]);
      expect(new Set(receiver.received.map((r) => r.deliveryId)).size).toBe(1);
      expect(receiver.received.every((r) => r.verified && r.event === "RUN_FINISHED")).toBe(true);
      expect(receiver.received[2].body.data).toMatchObject({ runId: run.id, status: "FINISHED" });

      const listed = ok(await server.gql(DELIVERIES)).webhooks.find((w: any) => w.id === hook.id).deliveries.edges.map((e: any) => e.node);
      expect(listed).toHaveLength(1);
      expect(listed[0]).toMatchObject({ event: "RUN_FINISHED", status: "DELIVERED", attemptCount: 3 });
      expect(listed[0].attempts.map((a: any) => a.responseStatus)).toEqual([500, 500, 200]);
      expect(listed[0].attempts[0].error).toBe("HTTP 500");
    } finally {
      await receiver.close();
    }
  });

  it("gives up after the attempt limit and marks the delivery FAILED", async () => {
    const receiver = await startWebhookReceiver(SECRET, () => 503);
    try {
      const hook = ok(await server.gql(CREATE_WEBHOOK, { input: { url: receiver.url, events: ["RUN_FINISHED"], secret: SECRET } })).createWebhook;
      // Only this webhook's events are of interest; the first one from the earlier test is paused.
      const exp = ok(await server.gql(`mutation { createExperiment(input: {name: "wh-fail"}) { id } }`)).createExperiment;
      const run = ok(await server.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e}) { id } }`, { e: exp.id })).createRun;
      ok(await server.gql(`mutation($r: ID!) { updateRun(input: {runId: $r, status: FAILED}) { status } }`, { r: run.id }));
      await receiver.waitFor((r) => r.length >= 4);
      let delivery: any;
      for (let i = 0; i < 50; i++) {
        delivery = ok(await server.gql(DELIVERIES)).webhooks.find((w: any) => w.id === hook.id).deliveries.edges[0]?.node;
        if (delivery?.status === "FAILED") break;
        await sleep(100);
      }
      expect(delivery).toMatchObject({ status: "FAILED", attemptCount: 4, lastError: "HTTP 503" });
      await sleep(1000);
      expect(receiver.received).toHaveLength(4);
    } finally {
      await receiver.close();
    }
  });

  it("testWebhook sends a signed PING at once and returns the delivery", async () => {
    const receiver = await startWebhookReceiver(SECRET);
    try {
      const hook = ok(await server.gql(CREATE_WEBHOOK, { input: { url: receiver.url, events: ["ALIAS_SET"], secret: SECRET } })).createWebhook;
      const delivery = ok(await server.gql(`mutation($id: ID!) { testWebhook(id: $id) { id event status attemptCount attempts { responseStatus } } }`, { id: hook.id })).testWebhook;
      expect(delivery).toMatchObject({ event: "PING", status: "DELIVERED", attemptCount: 1, attempts: [{ responseStatus: 200 }] });
      expect(receiver.received).toHaveLength(1);
      expect(receiver.received[0]).toMatchObject({ verified: true, event: "PING", deliveryId: delivery.id });
    } finally {
      await receiver.close();
    }
  });

  it("validates webhook input, naming the field", async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ url: "ftp://127.0.0.1/x", events: ["RUN_FINISHED"], secret: SECRET }, "input.url"],
      [{ url: "not a url", events: ["RUN_FINISHED"], secret: SECRET }, "input.url"],
      [{ url: "http://127.0.0.1/x", events: [], secret: SECRET }, "input.events"],
      [{ url: "http://127.0.0.1/x", events: ["PING"], secret: SECRET }, "input.events[0]"],
      [{ url: "http://127.0.0.1/x", events: ["RUN_FINISHED"], secret: "short" }, "input.secret"],
    ];
    for (const [input, field] of cases) {
      const res = await server.gql(CREATE_WEBHOOK, { input });
      expect(res.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field });
    }
  });
});

describe("webhook SSRF guard (no allowlist)", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ env: { MLGRAPH_WEBHOOK_ALLOWLIST: "" } });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("refuses loopback, private, link-local and localhost-resolving destinations", async () => {
    for (const url of ["http://127.0.0.1:8080/x", "http://localhost/x", "http://10.1.2.3/x", "http://192.168.1.1/x", "http://169.254.169.254/latest/meta-data", "http://[::1]/x", "http://[fd00::1]/x", "http://0.0.0.0/x"]) {
      const res = await server.gql(CREATE_WEBHOOK, { input: { url, events: ["RUN_FINISHED"], secret: SECRET } });
      expect(res.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "input.url" });
    }
    expect(ok(await server.gql(`{ webhooks { id } }`)).webhooks).toEqual([]);
  });
});
