import { createHash } from "node:crypto";
import http from "node:http";
import { ok, sleep, startTestServer, type TestServer, waitFor } from "../helpers/test-server";
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
      ok(await server.gql(`mutation($id: ID!) { deleteWebhook(id: $id) }`, { id: hook.id }));
    } finally {
      await receiver.close();
    }
  });

  it("a webhook scoped to a model gets run events and that model's events, and follows the model's rename", async () => {
    const receiver = await startWebhookReceiver(SECRET, () => 200);
    try {
      ok(await server.gql(`mutation { createRegisteredModel(input: {name: "scoped-before"}) { name } }`));
      ok(await server.gql(`mutation { createRegisteredModel(input: {name: "scoped-other"}) { name } }`));
      const hook = ok(
        await server.gql(`mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { id modelName } }`, {
          input: { url: receiver.url, events: ["RUN_FINISHED", "MODEL_VERSION_CREATED"], secret: SECRET, modelName: "scoped-before" },
        }),
      ).createWebhook;
      const exp = ok(await server.gql(`mutation { createExperiment(input: {name: "wh-scoped"}) { id } }`)).createExperiment;
      const run = ok(await server.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e}) { id } }`, { e: exp.id })).createRun;
      // A run event concerns no model: it reaches model-scoped webhooks too (it reached none).
      ok(await server.gql(`mutation($r: ID!) { updateRun(input: {runId: $r, status: FINISHED}) { status } }`, { r: run.id }));
      await receiver.waitFor((r) => r.some((x) => x.event === "RUN_FINISHED" && x.body.data.runId === run.id));

      ok(await server.gql(`mutation { updateRegisteredModel(input: {name: "scoped-before", newName: "scoped-after"}) { name } }`));
      expect(ok(await server.gql(`query { webhooks { id modelName } }`)).webhooks.find((w: { id: string }) => w.id === hook.id).modelName).toBe("scoped-after");
      const bytes = Buffer.from("weights");
      const up = ok(
        await server.gql(`mutation($i: ArtifactUploadInput!) { createArtifactUpload(input: $i) { id url } }`, {
          i: { runId: run.id, path: "model.bin", size: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex") },
        }),
      ).createArtifactUpload;
      expect((await fetch(up.url, { method: "PUT", body: bytes } as RequestInit)).status).toBeLessThan(300);
      ok(await server.gql(`mutation($id: ID!) { completeArtifactUpload(uploadId: $id) { path } }`, { id: up.id }));
      for (const name of ["scoped-other", "scoped-after"]) {
        ok(await server.gql(`mutation($r: ID!, $n: String!) { createModelVersion(input: {modelName: $n, runId: $r, artifactPath: "model.bin"}) { version } }`, { r: run.id, n: name }));
      }
      await receiver.waitFor((r) => r.some((x) => x.event === "MODEL_VERSION_CREATED"));
      await sleep(500);
      const versions = receiver.received.filter((x) => x.event === "MODEL_VERSION_CREATED").map((x) => x.body.data.modelName);
      expect(versions).toEqual(["scoped-after"]);
      ok(await server.gql(`mutation($id: ID!) { deleteWebhook(id: $id) }`, { id: hook.id }));
    } finally {
      await receiver.close();
    }
  });

  it("gives up after the attempt limit and marks the delivery FAILED", async () => {
    const receiver = await startWebhookReceiver(SECRET, () => 503);
    try {
      const hook = ok(await server.gql(CREATE_WEBHOOK, { input: { url: receiver.url, events: ["RUN_FINISHED"], secret: SECRET } })).createWebhook;
      // Only this webhook's events reach this receiver: the earlier tests deleted theirs (their
      // receivers' closed ports could be handed to this one).
      const exp = ok(await server.gql(`mutation { createExperiment(input: {name: "wh-fail"}) { id } }`)).createExperiment;
      const run = ok(await server.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e}) { id } }`, { e: exp.id })).createRun;
      ok(await server.gql(`mutation($r: ID!) { updateRun(input: {runId: $r, status: FAILED}) { status } }`, { r: run.id }));
      await receiver.waitFor((r) => r.length >= 4);
      // The receiver has answered the 4th time; the dispatcher records the outcome just after.
      const delivery = await waitFor("the delivery to be marked FAILED", async () => {
        const d = ok(await server.gql(DELIVERIES)).webhooks.find((w: any) => w.id === hook.id).deliveries.edges[0]?.node;
        return d?.status !== "PENDING" && d;
      });
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

  it("testWebhook pings an inactive webhook too, so an endpoint can be checked before it is activated", async () => {
    const receiver = await startWebhookReceiver(SECRET);
    try {
      const hook = ok(await server.gql(CREATE_WEBHOOK, { input: { url: receiver.url, events: ["ALIAS_SET"], secret: SECRET } })).createWebhook;
      ok(await server.gql(`mutation($id: ID!) { setWebhookActive(id: $id, active: false) { active } }`, { id: hook.id }));
      const delivery = ok(await server.gql(`mutation($id: ID!) { testWebhook(id: $id) { id event status } }`, { id: hook.id })).testWebhook;
      expect(delivery).toMatchObject({ event: "PING", status: "DELIVERED" });
      expect(receiver.received.map((r) => r.event)).toEqual(["PING"]);
    } finally {
      await receiver.close();
    }
  });

  it("names the webhook in X-Mlgraph-Webhook, as its id's description says, so one endpoint can serve several (each with its secret)", async () => {
    const heard: { webhook: string | undefined; delivery: string | undefined }[] = [];
    const endpoint = http.createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        heard.push({ webhook: req.headers["x-mlgraph-webhook"] as string | undefined, delivery: req.headers["x-mlgraph-delivery"] as string | undefined });
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => endpoint.listen(0, "127.0.0.1", () => resolve()));
    try {
      const url = `http://127.0.0.1:${(endpoint.address() as import("node:net").AddressInfo).port}/hooks`;
      const hooks: { id: string }[] = [];
      for (const secret of [SECRET, `${SECRET}-other`]) hooks.push(ok(await server.gql(CREATE_WEBHOOK, { input: { url, events: ["RUN_FINISHED"], secret } })).createWebhook);
      const deliveries: { id: string; status: string }[] = [];
      for (const hook of hooks) deliveries.push(ok(await server.gql(`mutation($id: ID!) { testWebhook(id: $id) { id status } }`, { id: hook.id })).testWebhook);
      expect(deliveries.map((d) => d.status)).toEqual(["DELIVERED", "DELIVERED"]);
      expect(heard).toEqual(hooks.map((hook, i) => ({ webhook: hook.id, delivery: deliveries[i].id })));
    } finally {
      for (const hook of ok(await server.gql(`{ webhooks { id url } }`)).webhooks) {
        if (/\/hooks$/.test(hook.url)) ok(await server.gql(`mutation($id: ID!) { deleteWebhook(id: $id) }`, { id: hook.id }));
      }
      await new Promise<void>((resolve) => endpoint.close(() => resolve()));
    }
  });

  it("pages through a webhook's deliveries, newest first, without repeats while new ones are queued", async () => {
    const receiver = await startWebhookReceiver(SECRET);
    try {
      const hook = ok(await server.gql(CREATE_WEBHOOK, { input: { url: receiver.url, events: ["RUN_FINISHED"], secret: SECRET } })).createWebhook;
      const ping = async () => ok(await server.gql(`mutation($id: ID!) { testWebhook(id: $id) { id } }`, { id: hook.id })).testWebhook.id as string;
      const sent: string[] = [];
      for (let i = 0; i < 5; i++) sent.unshift(await ping());
      const PAGE = `query($after: String) { webhooks { id deliveries(first: 2, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } } } }`;
      const seen: string[] = [];
      let after: string | null = null;
      for (;;) {
        const page: any = ok(await server.gql(PAGE, { after })).webhooks.find((w: any) => w.id === hook.id).deliveries;
        seen.push(...page.edges.map((e: any) => e.node.id));
        await ping(); // a new delivery between every two pages
        if (!page.pageInfo.hasNextPage) break;
        after = page.pageInfo.endCursor;
      }
      // Previously each new delivery pushed the rest down by one, and every page repeated one.
      expect(seen).toEqual(sent);
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
    // A misspelt model would scope the webhook to events that never come.
    const unknownModel = await server.gql(CREATE_WEBHOOK, { input: { url: "http://127.0.0.1/x", events: ["ALIAS_SET"], secret: SECRET, modelName: "no-such-model" } });
    expect(unknownModel.errors?.[0].extensions).toMatchObject({ code: "NOT_FOUND", field: "input.modelName" });
  });
});

describe("webhook dispatcher: paused webhooks and the attempt deadline", () => {
  let server: TestServer;
  const SET_ACTIVE = `mutation($id: ID!, $active: Boolean!) { setWebhookActive(id: $id, active: $active) { active } }`;
  const deliveriesOf = async (hookId: string) =>
    ok(await server.gql(DELIVERIES)).webhooks.find((w: any) => w.id === hookId).deliveries.edges.map((e: any) => e.node);
  const finishARun = async (name: string) => {
    const exp = ok(await server.gql(`mutation($n: String!) { createExperiment(input: {name: $n}) { id } }`, { n: name })).createExperiment;
    const run = ok(await server.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e}) { id } }`, { e: exp.id })).createRun;
    ok(await server.gql(`mutation($r: ID!) { updateRun(input: {runId: $r, status: FINISHED}) { status } }`, { r: run.id }));
  };
  beforeAll(async () => {
    server = await startTestServer({ env: { MLGRAPH_WEBHOOK_BACKOFF_MS: "1500", MLGRAPH_WEBHOOK_MAX_ATTEMPTS: "5", MLGRAPH_WEBHOOK_TIMEOUT_MS: "1000" } });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("holds a paused webhook's pending retries (no attempt spent) and sends them as soon as it is resumed", async () => {
    const receiver = await startWebhookReceiver(SECRET, (n) => (n === 1 ? 500 : 200));
    try {
      const hook = ok(await server.gql(CREATE_WEBHOOK, { input: { url: receiver.url, events: ["RUN_FINISHED"], secret: SECRET } })).createWebhook;
      await finishARun("wh-paused");
      await receiver.waitFor((r) => r.length === 1);
      ok(await server.gql(SET_ACTIVE, { id: hook.id, active: false }));
      await sleep(2500); // past the 1.5 s backoff: a paused webhook must not get its retry
      expect(receiver.received).toHaveLength(1);
      expect(await deliveriesOf(hook.id)).toMatchObject([{ status: "PENDING", attemptCount: 1 }]);

      const resumedAt = Date.now();
      ok(await server.gql(SET_ACTIVE, { id: hook.id, active: true }));
      await receiver.waitFor((r) => r.length === 2, 5000);
      expect(Date.now() - resumedAt).toBeLessThan(2000); // woken by the resume, not by the 5 s poll
      expect(receiver.received.map((r) => r.status)).toEqual([500, 200]);
      // The receiver has answered; the dispatcher records the outcome just after.
      const listed = await waitFor("the outcome to be recorded", async () => {
        const l = await deliveriesOf(hook.id);
        return l[0]?.status !== "PENDING" && l;
      });
      expect(listed).toMatchObject([{ status: "DELIVERED", attemptCount: 2 }]);
      ok(await server.gql(`mutation($id: ID!) { deleteWebhook(id: $id) }`, { id: hook.id }));
    } finally {
      await receiver.close();
    }
  });

  it("delivers a webhook's events in the order they happened: a retried one is not overtaken", async () => {
    // The receiver fails its first request: before, the next event went out meanwhile and the
    // retry of the first arrived last, so a receiver applying events in order ended on stale state.
    const receiver = await startWebhookReceiver(SECRET, (n) => (n === 1 ? 500 : 200));
    try {
      const hook = ok(await server.gql(CREATE_WEBHOOK, { input: { url: receiver.url, events: ["RUN_FINISHED"], secret: SECRET } })).createWebhook;
      const exp = ok(await server.gql(`mutation { createExperiment(input: {name: "wh-order"}) { id } }`)).createExperiment;
      const runs: string[] = [];
      for (let i = 0; i < 3; i++) {
        const run = ok(await server.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e}) { id } }`, { e: exp.id })).createRun;
        ok(await server.gql(`mutation($r: ID!) { updateRun(input: {runId: $r, status: FINISHED}) { status } }`, { r: run.id }));
        runs.push(run.id);
      }
      await receiver.waitFor((r) => r.filter((x) => x.status === 200).length === 3, 10_000);
      expect(receiver.received.map((r) => [r.body.data.runId, r.status])).toEqual([
        [runs[0], 500],
        [runs[0], 200],
        [runs[1], 200],
        [runs[2], 200],
      ]);
      ok(await server.gql(`mutation($id: ID!) { deleteWebhook(id: $id) }`, { id: hook.id }));
    } finally {
      await receiver.close();
    }
  });

  it("queues the events that happen while a webhook is paused and sends them, in order, when it is resumed", async () => {
    const receiver = await startWebhookReceiver(SECRET, () => 200);
    try {
      const hook = ok(await server.gql(CREATE_WEBHOOK, { input: { url: receiver.url, events: ["RUN_FINISHED"], secret: SECRET } })).createWebhook;
      ok(await server.gql(SET_ACTIVE, { id: hook.id, active: false }));
      await finishARun("wh-paused-a");
      await finishARun("wh-paused-b");
      await sleep(700);
      expect(receiver.received).toHaveLength(0);
      expect(await deliveriesOf(hook.id)).toMatchObject([{ status: "PENDING", attemptCount: 0 }, { status: "PENDING", attemptCount: 0 }]);
      ok(await server.gql(SET_ACTIVE, { id: hook.id, active: true }));
      await receiver.waitFor((r) => r.length === 2, 5000);
      const [first, second] = receiver.received.map((r) => r.body.createdAt);
      expect(first! <= second!).toBe(true);
      ok(await server.gql(`mutation($id: ID!) { deleteWebhook(id: $id) }`, { id: hook.id }));
    } finally {
      await receiver.close();
    }
  });

  it("ends an attempt at its deadline even when the receiver keeps trickling bytes (the socket never idles)", async () => {
    const sockets = new Set<import("node:net").Socket>();
    const trickler = http.createServer((req, res) => {
      req.resume();
      res.writeHead(200, { "content-type": "text/plain" });
      const timer = setInterval(() => res.write("."), 200); // never idle for the 1 s socket timeout
      res.on("close", () => clearInterval(timer));
    });
    trickler.on("connection", (s) => (sockets.add(s), s.on("close", () => sockets.delete(s))));
    await new Promise<void>((resolve) => trickler.listen(0, "127.0.0.1", () => resolve()));
    try {
      const url = `http://127.0.0.1:${(trickler.address() as import("node:net").AddressInfo).port}/hook`;
      const hook = ok(await server.gql(CREATE_WEBHOOK, { input: { url, events: ["RUN_FINISHED"], secret: SECRET } })).createWebhook;
      await finishARun("wh-trickle");
      // The attempt ends at its 1-s deadline and is recorded; the retry waits 1.5 s more.
      const delivery = await waitFor("the first attempt to be recorded", async () => {
        const d = (await deliveriesOf(hook.id))[0];
        return d?.attempts?.length > 0 && d;
      });
      expect(delivery).toMatchObject({ status: "PENDING", attemptCount: 1 });
      expect(delivery.attempts[0].error).toBe("no answer within 1000 ms");
      ok(await server.gql(`mutation($id: ID!) { deleteWebhook(id: $id) }`, { id: hook.id }));
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => trickler.close(() => resolve()));
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
    for (const url of ["http://127.0.0.1:8080/x", "http://localhost/x", "http://10.1.2.3/x", "http://192.168.1.1/x", "http://169.254.169.254/latest/meta-data", "http://[::1]/x", "http://[fd00::1]/x", "http://0.0.0.0/x", "http://[::ffff:127.0.0.1]/x", "http://[::ffff:169.254.169.254]/x"]) {
      const res = await server.gql(CREATE_WEBHOOK, { input: { url, events: ["RUN_FINISHED"], secret: SECRET } });
      expect(res.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "input.url" });
    }
    expect(ok(await server.gql(`{ webhooks { id } }`)).webhooks).toEqual([]);
  });
});
