import crypto from "node:crypto";
import net from "node:net";
import pino from "pino";
import { RedisEventBus } from "../../../src/stores/event-bus/redis-event-bus.js";

/** Two buses on one Redis stand for two replicas. */
const REDIS_URL = process.env.REDIS_URL;
if (!REDIS_URL) {
  console.warn("redis-event-bus: SKIPPED: needs REDIS_URL");
  if (process.env.MLGRAPH_REQUIRE_ALL_SERVICES) throw new Error("redis-event-bus: REDIS_URL is required in CI");
}

/**
 * A TCP proxy to Redis; `wire` decides how bytes cross it for each connection (client, upstream).
 * Returns the URL to connect through and the open sockets (both sides of every connection).
 */
async function proxyTo(redisUrl: string, wire: (client: net.Socket, upstream: net.Socket) => void) {
  const target = new URL(redisUrl);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 6379), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => undefined);
      s.on("close", () => (client.destroy(), upstream.destroy()));
    }
    wire(client, upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = new URL(redisUrl);
  url.hostname = "127.0.0.1";
  url.port = String((server.address() as net.AddressInfo).port);
  return {
    url: url.toString(),
    sockets,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/**
 * Holds what the client sends for `delayMs`: the subscriber's replica sits behind a slow link, so
 * its SUBSCRIBE reaches Redis well after it was sent.
 */
function slowLinkTo(redisUrl: string, delayMs: number) {
  return proxyTo(redisUrl, (client, upstream) => {
    client.on("data", (chunk) => setTimeout(() => upstream.write(chunk), delayMs));
    upstream.on("data", (chunk) => client.write(chunk));
  });
}

/**
 * Connections that can go half-open: `blackHole()` makes every open connection swallow what is
 * sent, both ways, without closing (a peer or NAT that vanished); connections made afterwards work.
 */
async function blackHoleLinkTo(redisUrl: string) {
  const dead = new WeakSet<net.Socket>();
  const link = await proxyTo(redisUrl, (client, upstream) => {
    client.on("data", (chunk) => dead.has(client) || upstream.write(chunk));
    upstream.on("data", (chunk) => dead.has(client) || client.write(chunk));
  });
  return { ...link, blackHole: () => link.sockets.forEach((s) => dead.add(s)) };
}

/** Publishes `after-N` every `everyMs` through `bus` until `heard` holds one (10 s at most); whether it did. */
async function publishUntilHeard(bus: RedisEventBus, topic: string, heard: () => boolean, everyMs = 100): Promise<boolean> {
  const deadline = Date.now() + 10_000;
  for (let n = 0; !heard() && Date.now() < deadline; n++) {
    await bus.publish(topic, { n: `after-${n}` });
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return heard();
}

(REDIS_URL ? describe : describe.skip)("RedisEventBus", () => {
  const prefix = `mlgraph-test-${crypto.randomBytes(4).toString("hex")}:`;
  const log = pino({ level: "silent" });
  let publisher: RedisEventBus;
  let subscriber: RedisEventBus;
  let link: Awaited<ReturnType<typeof slowLinkTo>>;

  beforeAll(async () => {
    link = await slowLinkTo(REDIS_URL!, 100);
    publisher = new RedisEventBus(REDIS_URL!, prefix, log);
    subscriber = new RedisEventBus(link.url, prefix, log);
    await Promise.all([publisher.ready(), subscriber.ready()]);
  });
  afterAll(async () => {
    await publisher?.close();
    await subscriber?.close();
    link?.close();
  });

  it("once subscribe() resolves, a message published by another replica is delivered, even over a slow link (the replay/live seam relies on it)", async () => {
    const topics = Array.from({ length: 200 }, (_, i) => `run:${i}:metrics`);
    const received = new Set<string>();
    const unsubscribes = await Promise.all(
      topics.map(async (topic) => {
        const unsubscribe = await subscriber.subscribe(topic, () => received.add(topic));
        // Published the instant the subscription is reported open, from the other connection.
        await publisher.publish(topic, { topic });
        return unsubscribe;
      }),
    );
    const deadline = Date.now() + 10_000;
    while (received.size < topics.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(topics.filter((t) => !received.has(t))).toEqual([]);
    await Promise.all(unsubscribes.map((u) => u()));
  });

  it("a second subscriber of a channel whose SUBSCRIBE is still in flight waits for it too", async () => {
    const topic = "run:shared:metrics";
    const heard: string[] = [];
    const [first, second] = await Promise.all([
      subscriber.subscribe(topic, () => heard.push("first")),
      subscriber.subscribe(topic, () => heard.push("second")),
    ]);
    await publisher.publish(topic, {});
    const deadline = Date.now() + 10_000;
    while (heard.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(heard.sort()).toEqual(["first", "second"]);
    await first();
    // The channel stays subscribed while one subscriber is left.
    await publisher.publish(topic, {});
    const later = Date.now() + 10_000;
    while (heard.length < 3 && Date.now() < later) await new Promise((r) => setTimeout(r, 20));
    expect(heard).toEqual(["first", "second", "second"]);
    await second();
  });

  it("holds a bounded backlog of publishes on a connection gone half-open, then reopens it", async () => {
    const link = await blackHoleLinkTo(REDIS_URL!);
    const stuck = new RedisEventBus(link.url, prefix, log, { maxPendingBytes: 256 * 1024, stalledAfterMs: 500, subscriberPingMs: 60_000 });
    try {
      await stuck.ready();
      const topic = "run:half-open:metrics";
      const heard: string[] = [];
      const unsubscribe = await subscriber.subscribe(topic, (p) => heard.push((p as { n: string }).n));
      link.blackHole();
      const padding = "x".repeat(1_000);
      for (let i = 0; i < 2_000; i++) await stuck.publish(topic, { n: `lost-${i}`, padding });
      // Previously all ~2 MB waited for answers that never come (and grew without end).
      expect(stuck.pendingPublishBytes).toBeGreaterThan(0);
      expect(stuck.pendingPublishBytes).toBeLessThanOrEqual(256 * 1024);
      // Still silent past stalledAfterMs: the next publish reopens the connection, and what is
      // published then reaches the other replica again.
      await new Promise((r) => setTimeout(r, 700));
      expect(await publishUntilHeard(stuck, topic, () => heard.some((h) => h.startsWith("after-")))).toBe(true);
      await unsubscribe();
    } finally {
      await stuck.close();
      link.close();
    }
  });

  it("reopens a publisher gone half-open after a trickle of publishes, long before its backlog is full", async () => {
    const link = await blackHoleLinkTo(REDIS_URL!);
    const quiet = new RedisEventBus(link.url, prefix, log, { maxPendingBytes: 64 * 1024 * 1024, stalledAfterMs: 500, subscriberPingMs: 60_000 });
    try {
      await quiet.ready();
      const topic = "run:trickle:metrics";
      const heard: string[] = [];
      const unsubscribe = await subscriber.subscribe(topic, (p) => heard.push((p as { n: string }).n));
      link.blackHole();
      await quiet.publish(topic, { n: "lost" });
      // Previously only a full backlog (64 MB here) led to a reconnect: a trickle never did.
      expect(await publishUntilHeard(quiet, topic, () => heard.some((h) => h.startsWith("after-")), 200)).toBe(true);
      await unsubscribe();
    } finally {
      await quiet.close();
      link.close();
    }
  });

  it("reopens a subscriber connection gone half-open, and hears the other replicas again", async () => {
    const link = await blackHoleLinkTo(REDIS_URL!);
    const warnings: string[] = [];
    const capture = pino({ level: "warn" }, { write: (line: string) => warnings.push(JSON.parse(line).msg) });
    const deaf = new RedisEventBus(link.url, prefix, capture, { maxPendingBytes: 1024 * 1024, stalledAfterMs: 10_000, subscriberPingMs: 300 });
    try {
      await deaf.ready();
      const topic = "run:deaf:metrics";
      const heard: string[] = [];
      const unsubscribe = await deaf.subscribe(topic, (p) => heard.push((p as { n: string }).n));
      // A healthy subscriber answers its pings (in subscriber mode too) and is left alone.
      await new Promise((r) => setTimeout(r, 1_000));
      expect(warnings).toEqual([]);
      link.blackHole();
      // Previously it never heard anything again: the connection still read "ready".
      expect(await publishUntilHeard(publisher, topic, () => heard.length > 0)).toBe(true);
      expect(warnings).toContain("redis subscriber connection looks dead; reconnecting");
      await unsubscribe();
    } finally {
      await deaf.close();
      link.close();
    }
  });
});
