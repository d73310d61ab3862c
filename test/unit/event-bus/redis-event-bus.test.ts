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
 * A TCP proxy to Redis that holds what the client sends for `delayMs`: the subscriber's replica
 * sits behind a slow link, so its SUBSCRIBE reaches Redis well after it was sent.
 */
async function slowLinkTo(redisUrl: string, delayMs: number): Promise<{ url: string; close: () => void }> {
  const target = new URL(redisUrl);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 6379), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => undefined);
      s.on("close", () => (client.destroy(), upstream.destroy()));
    }
    client.on("data", (chunk) => setTimeout(() => upstream.write(chunk), delayMs));
    upstream.on("data", (chunk) => client.write(chunk));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  const url = new URL(redisUrl);
  url.hostname = "127.0.0.1";
  url.port = String(port);
  return {
    url: url.toString(),
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
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
});
