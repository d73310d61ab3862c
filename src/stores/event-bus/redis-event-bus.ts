import { EventEmitter } from "node:events";
import { Redis } from "ioredis";
import type { Logger } from "pino";
import type { EventBus } from "./event-bus.js";

/**
 * Redis pub/sub: every publish goes through Redis (also for subscribers in this process), so all
 * replicas see one order per channel. One subscriber connection per process, channels reference-
 * counted. When Redis is down, ioredis reconnects and re-subscribes; publishes fail loudly.
 */
export class RedisEventBus implements EventBus {
  private readonly pub: Redis;
  private readonly sub: Redis;
  private readonly local = new EventEmitter();
  private readonly refCounts = new Map<string, number>();

  constructor(url: string, private readonly prefix: string, private readonly log: Logger) {
    const options = { maxRetriesPerRequest: 2, enableOfflineQueue: true, lazyConnect: false };
    this.pub = new Redis(url, options);
    this.sub = new Redis(url, options);
    this.local.setMaxListeners(0);
    for (const [name, client] of [["publisher", this.pub], ["subscriber", this.sub]] as const) {
      client.on("error", (err: Error) => this.log.warn({ err: err.message, client: name }, "redis event bus error"));
    }
    this.sub.on("messageBuffer", (channel: Buffer, message: Buffer) => {
      const topic = channel.toString().slice(this.prefix.length);
      let payload: unknown;
      try {
        payload = JSON.parse(message.toString());
      } catch {
        return;
      }
      this.local.emit(topic, payload);
    });
  }

  /**
   * Live delivery is best effort by design: the write it announces is already committed, and
   * subscribers replay from the store on reconnect. So a Redis outage is logged, not thrown.
   */
  async publish(topic: string, payload: unknown): Promise<void> {
    try {
      await this.pub.publish(this.prefix + topic, JSON.stringify(payload));
    } catch (err) {
      this.log.warn({ err: (err as Error).message, topic }, "redis publish failed; live subscribers on other replicas miss this event");
    }
  }

  async subscribe(topic: string, handler: (payload: unknown) => void): Promise<() => Promise<void>> {
    this.local.on(topic, handler);
    const count = (this.refCounts.get(topic) ?? 0) + 1;
    this.refCounts.set(topic, count);
    if (count === 1) await this.sub.subscribe(this.prefix + topic);
    return async () => {
      this.local.off(topic, handler);
      const left = (this.refCounts.get(topic) ?? 1) - 1;
      if (left <= 0) {
        this.refCounts.delete(topic);
        await this.sub.unsubscribe(this.prefix + topic).catch(() => undefined);
      } else {
        this.refCounts.set(topic, left);
      }
    };
  }

  /** Resolves once both connections are ready, so startup fails fast on a wrong REDIS_URL. */
  async ready(): Promise<void> {
    await Promise.all([this.pub.ping(), this.sub.ping()]);
  }

  async close(): Promise<void> {
    this.local.removeAllListeners();
    this.pub.disconnect();
    this.sub.disconnect();
  }
}
