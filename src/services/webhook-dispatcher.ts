import { webhookFailures } from "../server/observability.js";
import http from "node:http";
import https from "node:https";
import type { DataSource } from "typeorm";
import type { Logger } from "pino";
import type { EventBus } from "../stores/event-bus/event-bus.js";
import type { BackgroundWorker } from "./app-services.js";
import { checkWebhookDestination } from "./webhook-destination.js";
import { DELIVERY_HEADER, EVENT_HEADER, WEBHOOK_HEADER, signWebhookBody } from "./webhook-signature.js";
import { WEBHOOK_OUTBOX_TOPIC, WebhooksService } from "./webhooks.service.js";
import { returnedRows } from "./sql-rows.js";

export interface WebhookDispatcherOptions {
  /** Delay before the 2nd attempt; doubles per attempt (capped at one hour). */
  backoffMs: number;
  maxAttempts: number;
  timeoutMs: number;
  allowlist: readonly string[];
  /** Safety net when a wake-up notification is lost (e.g. Redis blip). */
  pollMs?: number;
}

interface ClaimedDelivery {
  id: string;
  event: string;
  payload: Record<string, unknown>;
  created_at: Date;
  attempts: number;
  webhook_id: string;
  url: string;
  secret: string;
}

/** Most deliveries in flight at once (each to a different webhook). */
const MAX_IN_FLIGHT = 20;
/** Deliveries of a paused webhook wait, neither sent nor counted as attempts, until it is resumed. */
/**
 * Each active webhook's oldest pending delivery, found through the (webhook_id, seq) index. Only
 * it may go: events arrive in the order they happened, and a retried one is never overtaken (a
 * receiver applying "@champion moved to v1" after "... to v2" would serve the wrong model). A
 * webhook whose receiver is failing holds its own queue only. (A NOT EXISTS over all pending rows
 * was planned as an anti join comparing every pair: seconds per claim at 10,000 queued.)
 */
const HEADS_OF_LINE = `SELECT h.id, h.next_attempt_at, h.seq FROM webhooks w
  CROSS JOIN LATERAL (
    SELECT d.id, d.next_attempt_at, d.seq FROM webhook_deliveries d
     WHERE d.webhook_id = w.id AND d.status = 'PENDING' ORDER BY d.seq LIMIT 1
  ) h
  WHERE w.active`;
const MAX_BACKOFF_MS = 3_600_000;
const MAX_ERROR_LENGTH = 500;

/**
 * Delivers the webhook outbox. Wakes on the bus topic {@link WEBHOOK_OUTBOX_TOPIC} and when the
 * earliest retry falls due. Claims rows with `FOR UPDATE SKIP LOCKED` and pushes their
 * `next_attempt_at` past the request timeout in the same statement, so two replicas never send
 * the same attempt; a replica that dies mid-send leaves the row to be retried after that lease.
 */
export class WebhookDispatcher implements BackgroundWorker {
  readonly name = "webhook-dispatcher";
  private running = false;
  private wake: (() => void) | null = null;
  private pendingWake = false;
  private unsubscribe: (() => Promise<void>) | null = null;
  private loop: Promise<void> | null = null;
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly db: DataSource,
    private readonly bus: EventBus,
    private readonly log: Logger,
    private readonly options: WebhookDispatcherOptions,
  ) {}

  async start(): Promise<void> {
    this.running = true;
    this.unsubscribe = await this.bus.subscribe(WEBHOOK_OUTBOX_TOPIC, () => this.poke());
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.poke();
    await this.unsubscribe?.();
    await this.loop;
    await Promise.allSettled([...this.inFlight]);
  }

  /** Claims and sends one delivery now (testWebhook); a no-op when another replica holds it. */
  async deliverNow(deliveryId: string): Promise<void> {
    const claimed = await this.claim(deliveryId);
    await Promise.all(claimed.map((d) => this.send(d)));
  }

  private poke(): void {
    this.pendingWake = true;
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private async run(): Promise<void> {
    while (this.running) {
      this.pendingWake = false;
      try {
        // Sends are not awaited as a batch: a receiver that answers slowly holds its own delivery,
        // not everyone else's. Each finished send wakes the loop (the next in its line is due).
        while (this.running) {
          const room = MAX_IN_FLIGHT - this.inFlight.size;
          if (room <= 0) {
            await Promise.race(this.inFlight);
            continue;
          }
          const claimed = await this.claim(undefined, room);
          if (claimed.length === 0) break;
          for (const d of claimed) void this.track(this.send(d));
        }
      } catch (err) {
        this.log.error({ err: (err as Error).message }, "webhook dispatcher: claiming deliveries failed; retrying");
      }
      if (!this.running) break;
      const delay = await this.untilNextDue().catch(() => 1000);
      if (this.pendingWake) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  private track(p: Promise<void>): Promise<void> {
    this.inFlight.add(p);
    return p.finally(() => {
      this.inFlight.delete(p);
      this.poke();
    });
  }

  private async untilNextDue(): Promise<number> {
    const poll = this.options.pollMs ?? 5000;
    const rows: { due: Date | null }[] = await this.db.query(
      `SELECT min(next_attempt_at) AS due FROM (${HEADS_OF_LINE}) heads`,
    );
    const due = rows[0]?.due;
    if (!due) return poll;
    return Math.max(0, Math.min(poll, new Date(due).getTime() - Date.now() + 5));
  }

  private async claim(deliveryId?: string, limit = MAX_IN_FLIGHT): Promise<ClaimedDelivery[]> {
    const leaseMs = this.options.timeoutMs + 30_000;
    // A delivery being sent stays PENDING (its lease pushed next_attempt_at ahead), so the next in
    // its webhook's line waits for its outcome; testWebhook's PING (by id) skips the line.
    const result: unknown = await this.db.query(
      `WITH due AS (
         SELECT d.id FROM webhook_deliveries d
          WHERE d.status = 'PENDING' AND ${
            deliveryId ? "d.id = $2" : `d.next_attempt_at <= now() AND d.id IN (SELECT id FROM (${HEADS_OF_LINE}) heads WHERE heads.next_attempt_at <= now())`
          }
          ORDER BY d.seq
          LIMIT ${Math.max(1, Math.floor(limit))}
          FOR UPDATE SKIP LOCKED
       )
       UPDATE webhook_deliveries d
          SET attempts = d.attempts + 1, next_attempt_at = now() + ($1::int * interval '1 millisecond')
         FROM due, webhooks w
        WHERE d.id = due.id AND w.id = d.webhook_id
       RETURNING d.id, d.event, d.payload, d.created_at, d.attempts, d.webhook_id, w.url, w.secret`,
      deliveryId ? [leaseMs, deliveryId] : [leaseMs],
    );
    return returnedRows<ClaimedDelivery>(result);
  }

  private async send(d: ClaimedDelivery): Promise<void> {
    const startedAt = new Date();
    let status: number | null = null;
    let error: string | null = null;
    try {
      status = await this.post(d);
      if (status < 200 || status > 299) error = `HTTP ${status}`;
    } catch (err) {
      error = (err as Error).message.slice(0, MAX_ERROR_LENGTH);
    }
    const durationMs = Date.now() - startedAt.getTime();
    const delivered = error === null;
    // A PING (testWebhook) is tried once: it answers "is the receiver up now?", and a failed one
    // left pending would hold the webhook's real events behind its retries.
    const exhausted = !delivered && (d.attempts >= this.options.maxAttempts || d.event === "PING");
    const backoff = Math.min(MAX_BACKOFF_MS, this.options.backoffMs * 2 ** (d.attempts - 1));
    try {
      await this.db.transaction(async (em) => {
        await em.query(
          `INSERT INTO webhook_delivery_attempts (delivery_id, attempt, started_at, duration_ms, response_status, error)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (delivery_id, attempt) DO NOTHING`,
          [d.id, d.attempts, startedAt, durationMs, status, error],
        );
        await em.query(
          `UPDATE webhook_deliveries
              SET status = $2, last_error = $3,
                  delivered_at = CASE WHEN $2 = 'DELIVERED' THEN now() ELSE NULL END,
                  next_attempt_at = now() + ($4::int * interval '1 millisecond')
            WHERE id = $1 AND attempts = $5 AND status = 'PENDING'`,
          // An attempt that outlived its lease was re-sent by another claim (attempts moved on):
          // its late result must not overwrite the newer attempt's outcome.
          [d.id, delivered ? "DELIVERED" : exhausted ? "FAILED" : "PENDING", error, backoff, d.attempts],
        );
      });
    } catch (err) {
      this.log.error({ err: (err as Error).message, delivery: d.id }, "webhook dispatcher: recording an attempt failed");
    }
    if (!delivered) {
      webhookFailures.inc();
      this.log.warn({ delivery: d.id, attempt: d.attempts, error, final: exhausted }, "webhook delivery attempt failed");
    }
  }

  /**
   * POSTs the signed body to the vetted address; resolves with the HTTP status. One deadline
   * covers the whole attempt (the socket's idle timeout alone never fires for a receiver that
   * trickles a byte at a time), so an attempt always ends well inside its claim's lease.
   */
  private async post(d: ClaimedDelivery): Promise<number> {
    const deadline = AbortSignal.timeout(this.options.timeoutMs);
    const expired = new Promise<never>((_, reject) =>
      deadline.addEventListener("abort", () => reject(new Error(`no answer within ${this.options.timeoutMs} ms`)), { once: true }),
    );
    expired.catch(() => {}); // settled by whichever finishes first; never an unhandled rejection
    return Promise.race([this.postBefore(d, deadline), expired]);
  }

  private async postBefore(d: ClaimedDelivery, deadline: AbortSignal): Promise<number> {
    // Vetted again at send time: DNS may have changed since the webhook was created.
    const dest = await checkWebhookDestination(d.url, this.options.allowlist, "url");
    deadline.throwIfAborted();
    const body = WebhooksService.bodyOf({ id: d.id, event: d.event as never, payload: d.payload, createdAt: new Date(d.created_at) });
    const timestamp = Math.floor(Date.now() / 1000);
    const client = dest.url.protocol === "https:" ? https : http;
    return new Promise<number>((resolve, reject) => {
      const req = client.request(
        dest.url,
        {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "content-length": Buffer.byteLength(body),
            "user-agent": "mlgraph-webhooks/1",
            [DELIVERY_HEADER]: d.id,
            [EVENT_HEADER]: d.event,
            [WEBHOOK_HEADER]: d.webhook_id,
            "x-mlgraph-signature": signWebhookBody(d.secret, body, timestamp),
          },
          // Connect to the address that passed the check, not to a fresh DNS answer.
          lookup: ((_host: string, opts: { all?: boolean }, cb: (...args: unknown[]) => void) =>
            opts.all ? cb(null, [{ address: dest.address, family: dest.family }]) : cb(null, dest.address, dest.family)) as never,
          timeout: this.options.timeoutMs,
          signal: deadline, // destroys the socket when the attempt's time is up
        },
        (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode ?? 0));
          res.on("error", reject);
        },
      );
      req.on("timeout", () => req.destroy(new Error(`no answer within ${this.options.timeoutMs} ms`)));
      req.on("error", reject);
      req.end(body);
    });
  }
}
