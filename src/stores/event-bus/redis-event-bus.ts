import { EventEmitter } from "node:events";
import crypto from "node:crypto";
import { Redis } from "ioredis";
import type { Logger } from "pino";
import type { EventBus } from "./event-bus.js";

/** How long a subscribe waits for Redis to confirm the channel before going on without it. */
const SUBSCRIBE_CONFIRM_TIMEOUT_MS = 2_000;

/**
 * Redis pub/sub between replicas. A publish is delivered to this process's subscribers at once
 * (so they keep receiving while Redis is down) and sent through Redis, tagged with this process's
 * id, to the other replicas; a process ignores its own messages coming back. One subscriber
 * connection per process, channels reference-counted; ioredis reconnects and re-subscribes after
 * an outage.
 */
export class RedisEventBus implements EventBus {
  private readonly pub: Redis;
  private readonly sub: Redis;
  private readonly local = new EventEmitter();
  private readonly refCounts = new Map<string, number>();
  /** Per subscribed topic: settles when Redis has confirmed the channel's SUBSCRIBE. */
  private readonly confirmed = new Map<string, Promise<void>>();
  private readonly origin = crypto.randomBytes(8).toString("hex");

  constructor(url: string, private readonly prefix: string, private readonly log: Logger) {
    // The publisher fails fast while Redis is down (no offline queue): a write must never wait on
    // the bus. The subscriber queues its SUBSCRIBE commands and re-subscribes after reconnecting.
    this.pub = new Redis(url, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
    this.sub = new Redis(url, { maxRetriesPerRequest: null, enableOfflineQueue: true });
    this.local.setMaxListeners(0);
    for (const [name, client] of [["publisher", this.pub], ["subscriber", this.sub]] as const) {
      client.on("error", (err: Error) => this.log.warn({ err: err.message, client: name }, "redis event bus error"));
    }
    this.sub.on("messageBuffer", (channel: Buffer, message: Buffer) => {
      const topic = channel.toString().slice(this.prefix.length);
      let envelope: { o?: string; p?: unknown };
      try {
        envelope = JSON.parse(message.toString());
      } catch {
        return;
      }
      if (envelope.o === this.origin) return;
      this.local.emit(topic, envelope.p);
    });
  }

  async publish(topic: string, payload: unknown): Promise<void> {
    this.local.emit(topic, payload);
    if (this.pub.status !== "ready") {
      this.log.warn({ topic, redis: this.pub.status }, "redis is unavailable; other replicas miss this live event");
      return;
    }
    this.pub.publish(this.prefix + topic, JSON.stringify({ o: this.origin, p: payload })).catch((err: Error) => {
      this.log.warn({ err: err.message, topic }, "redis publish failed; other replicas miss this live event");
    });
  }

  /**
   * Resolves once Redis has confirmed the channel (when Redis is up), so a message another replica
   * publishes after this returns reaches the handler. `metricsLogged` relies on that: it subscribes,
   * then replays stored points, and a batch stored and published on another replica between the
   * two must be in one or the other. While Redis is down the SUBSCRIBE waits in ioredis' queue
   * (sent on reconnect) and this does not wait for it: local events reach the handler meanwhile.
   */
  async subscribe(topic: string, handler: (payload: unknown) => void): Promise<() => Promise<void>> {
    this.local.on(topic, handler);
    const count = (this.refCounts.get(topic) ?? 0) + 1;
    this.refCounts.set(topic, count);
    if (count === 1) {
      this.confirmed.set(
        topic,
        this.sub.subscribe(this.prefix + topic).then(
          () => undefined,
          (err: Error) => this.log.warn({ err: err.message, topic }, "redis subscribe failed"),
        ),
      );
    }
    // A later subscriber of the same topic waits for the first one's confirmation too.
    if (this.sub.status === "ready") await this.untilConfirmed(topic);
    return async () => {
      this.local.off(topic, handler);
      const left = (this.refCounts.get(topic) ?? 1) - 1;
      if (left <= 0) {
        this.refCounts.delete(topic);
        this.confirmed.delete(topic);
        await this.sub.unsubscribe(this.prefix + topic).catch(() => undefined);
      } else {
        this.refCounts.set(topic, left);
      }
    };
  }

  private async untilConfirmed(topic: string): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), SUBSCRIBE_CONFIRM_TIMEOUT_MS);
    });
    const late = await Promise.race([this.confirmed.get(topic)?.then(() => false), timedOut]);
    clearTimeout(timer);
    if (late) this.log.warn({ topic, waitedMs: SUBSCRIBE_CONFIRM_TIMEOUT_MS }, "redis has not confirmed a subscription; events from other replicas may be missed until it does");
  }

  /** Resolves once both connections are ready, so startup fails fast on a wrong REDIS_URL. */
  async ready(timeoutMs = 10_000): Promise<void> {
    const connected = (client: Redis) =>
      client.status === "ready"
        ? Promise.resolve()
        : new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`REDIS_URL: no connection to Redis within ${timeoutMs / 1000} s`)), timeoutMs);
            client.once("ready", () => {
              clearTimeout(timer);
              resolve();
            });
          });
    await Promise.all([connected(this.pub), connected(this.sub)]);
  }

  async close(): Promise<void> {
    this.local.removeAllListeners();
    this.pub.disconnect();
    this.sub.disconnect();
  }
}
