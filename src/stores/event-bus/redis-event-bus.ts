import { EventEmitter } from "node:events";
import crypto from "node:crypto";
import { Redis } from "ioredis";
import type { Logger } from "pino";
import type { EventBus } from "./event-bus.js";

/** How long a subscribe waits for Redis to confirm the channel before going on without it. */
const SUBSCRIBE_CONFIRM_TIMEOUT_MS = 2_000;

/** How the bus notices connections gone half-open (a peer or NAT vanished without a FIN). */
export interface DeadConnectionLimits {
  /** Bytes of unanswered publishes held in memory; past it, publishes to other replicas are dropped. */
  maxPendingBytes: number;
  /** With the backlog full, how long without any answer before the publisher is taken for dead and reopened. */
  stalledAfterMs: number;
  /** How often the subscriber connection is pinged; one ping unanswered for as long reopens it. */
  subscriberPingMs: number;
}

const DEFAULT_LIMITS: DeadConnectionLimits = { maxPendingBytes: 64 * 1024 * 1024, stalledAfterMs: 10_000, subscriberPingMs: 15_000 };

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
  /** Bytes of publishes sent on the current connection and not answered yet. */
  private pendingBytes = 0;
  /** Bumped when the publisher's connection closes: answers to an older one no longer count. */
  private connectionGeneration = 0;
  /** When Redis last answered a publish (or the backlog was last empty). */
  private lastAnswerAt = Date.now();
  private lastDropWarningAt = 0;
  /** A reconnect of the publisher was asked for and its connection has not closed yet. */
  private publisherReopening = false;
  private readonly subscriberPing: NodeJS.Timeout;
  private readonly publisherCheck: NodeJS.Timeout;

  constructor(
    url: string,
    private readonly prefix: string,
    private readonly log: Logger,
    private readonly limits: DeadConnectionLimits = DEFAULT_LIMITS,
  ) {
    // The publisher fails fast while Redis is down (no offline queue): a write must never wait on
    // the bus. The subscriber queues its SUBSCRIBE commands and re-subscribes after reconnecting.
    // Publishes in flight when a connection closes are not sent again after reconnecting: they are
    // best effort, and resent ones would sit in memory uncounted by the backlog below.
    this.pub = new Redis(url, { maxRetriesPerRequest: 1, enableOfflineQueue: false, autoResendUnfulfilledCommands: false });
    this.sub = new Redis(url, { maxRetriesPerRequest: null, enableOfflineQueue: true });
    this.local.setMaxListeners(0);
    for (const [name, client] of [["publisher", this.pub], ["subscriber", this.sub]] as const) {
      client.on("error", (err: Error) => this.log.warn({ err: err.message, client: name }, "redis event bus error"));
    }
    // Whatever was in flight on a closed connection is resent or failed by ioredis, or dropped
    // silently (it does either); it no longer counts against the backlog.
    this.pub.on("close", () => {
      this.connectionGeneration++;
      this.pendingBytes = 0;
      this.lastAnswerAt = Date.now();
      this.publisherReopening = false;
    });
    // Checked on a timer too, not only when the backlog is full: at a trickle of events the
    // backlog would take hours to fill while the other replicas hear nothing.
    this.publisherCheck = setInterval(() => this.checkPublisher(), Math.max(100, Math.floor(this.limits.stalledAfterMs / 2)));
    this.publisherCheck.unref();
    // A half-open subscriber would hear nothing from the other replicas, for good, while looking
    // connected: a ping unanswered for a whole interval reopens it (ioredis then re-subscribes).
    this.subscriberPing = setInterval(() => this.checkSubscriber(), this.limits.subscriberPingMs);
    this.subscriberPing.unref();
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
    const message = JSON.stringify({ o: this.origin, p: payload });
    const bytes = Buffer.byteLength(message);
    if (!this.admitToBacklog(bytes, topic)) return;
    const generation = this.connectionGeneration;
    this.pendingBytes += bytes;
    const answered = () => {
      if (generation !== this.connectionGeneration) return;
      this.pendingBytes -= bytes;
      this.lastAnswerAt = Date.now();
    };
    this.pub.publish(this.prefix + topic, message).then(answered, (err: Error) => {
      answered();
      this.log.warn({ err: err.message, topic }, "redis publish failed; other replicas miss this live event");
    });
  }

  private checkSubscriber(): void {
    if (this.sub.status !== "ready") return;
    let answered = false;
    const timer = setTimeout(() => {
      if (answered || this.sub.status !== "ready") return;
      this.log.warn({ waitedMs: this.limits.subscriberPingMs }, "redis subscriber connection looks dead; reconnecting");
      this.sub.disconnect(true);
    }, this.limits.subscriberPingMs);
    timer.unref();
    this.sub.ping().then(
      () => {
        answered = true;
        clearTimeout(timer);
      },
      () => undefined, // a failed ping means a closing connection, which ioredis reopens itself
    );
  }

  /** Bytes of publishes Redis has not answered yet on the current connection. */
  get pendingPublishBytes(): number {
    return this.pendingBytes;
  }

  /**
   * A connection that went half-open (a peer or a NAT gone without a FIN) still reads "ready",
   * and every publish would wait in memory for an answer that never comes. Past the backlog
   * limit, publishes to the other replicas are dropped (local subscribers already have them);
   * if Redis has not answered anything for a while either, the connection is reopened, which
   * also releases the backlog.
   */
  private admitToBacklog(bytes: number, topic: string): boolean {
    if (this.pendingBytes === 0) this.lastAnswerAt = Date.now();
    if (this.pendingBytes + bytes <= this.limits.maxPendingBytes) return true;
    if (Date.now() - this.lastDropWarningAt > 10_000) {
      this.lastDropWarningAt = Date.now();
      this.log.warn({ topic, pendingBytes: this.pendingBytes, silentForMs: Date.now() - this.lastAnswerAt }, "redis is not answering publishes; other replicas miss live events");
    }
    this.checkPublisher();
    return false;
  }

  /** Reopens the publisher once publishes have waited `stalledAfterMs` without any answer. */
  private checkPublisher(): void {
    const silentForMs = Date.now() - this.lastAnswerAt;
    if (this.pendingBytes === 0 || silentForMs <= this.limits.stalledAfterMs || this.publisherReopening) return;
    this.publisherReopening = true;
    this.log.warn({ silentForMs, pendingBytes: this.pendingBytes }, "redis publisher connection looks dead; reconnecting");
    this.pub.disconnect(true);
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
    clearInterval(this.subscriberPing);
    clearInterval(this.publisherCheck);
    this.local.removeAllListeners();
    this.pub.disconnect();
    this.sub.disconnect();
  }
}
