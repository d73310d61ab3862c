import type { DataSource, EntityManager } from "typeorm";
import { Webhook, WebhookDelivery, WebhookDeliveryAttempt, WebhookDeliveryStatus, WebhookEvent } from "../entities/webhook.entity.js";
import type { EventBus } from "../stores/event-bus/event-bus.js";
import type { RequestContext } from "./context.js";
import { DomainError } from "./errors.js";
import { CURSOR_TIME_PATTERN, cursorTimeSql, encodeKeyCursor, keysetWindow, pageWindow, toPage, type Page, type PageArgs } from "./pagination.js";
import { LIMITS, validateId, validateText } from "./validation.js";
import { checkWebhookDestination } from "./webhook-destination.js";
import type { WebhookDispatcher } from "./webhook-dispatcher.js";

/** Bus topic that wakes the dispatcher after outbox rows were committed. */
export const WEBHOOK_OUTBOX_TOPIC = "webhooks:outbox";

/**
 * Writes one outbox row per webhook subscribed to `event` (paused ones too), inside the caller's
 * transaction, so a delivery exists exactly when the change committed. After the commit call
 * {@link announceWebhookEvents} so the dispatcher sends at once instead of at its next poll.
 *
 * `modelName` scopes registry events: webhooks created for one model only get that model's.
 * Returns the number of deliveries queued.
 */
export async function enqueueWebhookEvent(
  em: EntityManager,
  event: WebhookEvent | `${WebhookEvent}`,
  payload: Record<string, unknown>,
  options: { modelName?: string | null } = {},
): Promise<number> {
  // A webhook scoped to a model gets that model's registry events, and every run and pipeline
  // event (those concern no model). A paused webhook's events are queued too: they wait, unsent,
  // until it is resumed (a serving hook paused for maintenance must not miss a champion change).
  const rows: unknown[] = await em.query(
    `INSERT INTO webhook_deliveries (webhook_id, event, payload, status)
     SELECT id, $1, $2::jsonb, 'PENDING' FROM webhooks
      WHERE $1 = ANY(events) AND (model_name IS NULL OR $3::text IS NULL OR model_name = $3::text)
     RETURNING id`,
    [event, JSON.stringify({ ...payload, occurredAt: new Date().toISOString() }), options.modelName ?? null],
  );
  return rows.length;
}

/** Wakes every replica's dispatcher; call after the transaction that enqueued events committed. */
export async function announceWebhookEvents(bus: EventBus): Promise<void> {
  await bus.publish(WEBHOOK_OUTBOX_TOPIC, {});
}

const SUBSCRIBABLE: WebhookEvent[] = Object.values(WebhookEvent).filter((e) => e !== WebhookEvent.PING);

/** Webhook endpoints (admin-managed) and the record of their deliveries. */
export class WebhooksService {
  private dispatcher?: WebhookDispatcher;

  constructor(
    private readonly db: DataSource,
    private readonly bus: EventBus,
    private readonly allowlist: readonly string[],
  ) {}

  /** The dispatcher testWebhook uses to send at once. */
  useDispatcher(dispatcher: WebhookDispatcher): void {
    this.dispatcher = dispatcher;
  }

  async create(
    ctx: RequestContext,
    input: { url: string; events: WebhookEvent[]; secret: string; modelName?: string | null; description?: string | null },
  ): Promise<Webhook> {
    validateText(input.url, "input.url", 2000);
    await checkWebhookDestination(input.url, this.allowlist, "input.url");
    if (!input.events?.length) throw new DomainError("BAD_USER_INPUT", "input.events: name at least one event", "input.events");
    input.events.forEach((e, i) => {
      if (!SUBSCRIBABLE.includes(e)) throw new DomainError("BAD_USER_INPUT", `input.events[${i}]: ${JSON.stringify(e)} cannot be subscribed to`, `input.events[${i}]`);
    });
    validateText(input.secret, "input.secret", 500);
    if (input.secret.length < 16) throw new DomainError("BAD_USER_INPUT", "input.secret: at least 16 characters, so signatures cannot be guessed", "input.secret");
    const modelName = input.modelName == null ? null : validateText(input.modelName, "input.modelName", LIMITS.nameLength);
    // A misspelt name would scope the webhook to a model that never sends anything.
    if (modelName !== null && (await this.db.query(`SELECT 1 FROM registered_models WHERE name = $1`, [modelName])).length === 0) {
      throw new DomainError("NOT_FOUND", `input.modelName: model ${JSON.stringify(modelName)} not found; create it first`, "input.modelName");
    }
    const description = input.description == null ? null : validateText(input.description, "input.description", LIMITS.descriptionLength, { allowEmpty: true });
    const repo = this.db.getRepository(Webhook);
    return repo.save(
      repo.create({ url: input.url, events: [...new Set(input.events)], secret: input.secret, modelName, description, active: true, createdBy: ctx.principal.name }),
    );
  }

  async list(_ctx: RequestContext): Promise<Webhook[]> {
    return this.db.getRepository(Webhook).find({ order: { createdAt: "ASC" } });
  }

  async get(_ctx: RequestContext, id: string, field = "id"): Promise<Webhook> {
    validateId(id, field);
    const hook = await this.db.getRepository(Webhook).findOneBy({ id });
    if (!hook) throw new DomainError("NOT_FOUND", `${field}: webhook ${JSON.stringify(id)} not found`, field);
    return hook;
  }

  async setActive(ctx: RequestContext, id: string, active: boolean): Promise<Webhook> {
    const hook = await this.get(ctx, id);
    await this.db.getRepository(Webhook).update({ id: hook.id }, { active });
    const saved = await this.db.getRepository(Webhook).findOneByOrFail({ id: hook.id });
    // Deliveries held while it was paused are due now.
    if (active) await announceWebhookEvents(this.bus);
    return saved;
  }

  async delete(ctx: RequestContext, id: string): Promise<boolean> {
    await this.get(ctx, id);
    await this.db.getRepository(Webhook).delete({ id });
    return true;
  }

  /** Sends a PING to one webhook right away and returns the delivery with its first attempt recorded. */
  async test(ctx: RequestContext, id: string): Promise<WebhookDelivery> {
    const hook = await this.get(ctx, id);
    const delivery = await this.db.getRepository(WebhookDelivery).save(
      this.db.getRepository(WebhookDelivery).create({
        webhookId: hook.id,
        event: WebhookEvent.PING,
        payload: { webhookId: hook.id, requestedBy: ctx.principal.name, occurredAt: new Date().toISOString() },
        status: WebhookDeliveryStatus.PENDING,
        attempts: 0,
        nextAttemptAt: new Date(),
      }),
    );
    if (this.dispatcher) await this.dispatcher.deliverNow(delivery.id);
    else await announceWebhookEvents(this.bus);
    return this.db.getRepository(WebhookDelivery).findOneByOrFail({ id: delivery.id });
  }

  /**
   * A page of each webhook's deliveries, newest first: one statement for every webhook a request
   * lists, each page read with its own LIMIT (a page never sorts a webhook's whole history), then
   * the rows by id. Cursors name a delivery (its created_at and seq): a later page starts below
   * it, so deliveries queued meanwhile (they come first) never make a page repeat one.
   */
  async deliveriesOf(webhookIds: readonly string[], args: PageArgs & { status?: WebhookDeliveryStatus | null }): Promise<Map<string, Page<WebhookDelivery>>> {
    // The key of the last delivery seen: its created_at (UTC, to the microsecond) and seq.
    const { after: at, window } = keysetWindow(args, new RegExp(`^(${CURSOR_TIME_PATTERN})\\|(\\d{1,18})$`));
    const ranked: { id: string; webhook_id: string; key: string }[] = await this.db.query(
      `SELECT d.id, w.id AS webhook_id, ${cursorTimeSql("d.created_at")} || '|' || d.seq AS key
         FROM unnest($1::uuid[]) WITH ORDINALITY AS w(id, n)
       CROSS JOIN LATERAL (
         SELECT id, created_at, seq FROM webhook_deliveries
          WHERE webhook_id = w.id AND ($2::text IS NULL OR status = $2::text)
            AND ($5::timestamp IS NULL OR (created_at, seq) < ($5::timestamp AT TIME ZONE 'UTC', $6::bigint))
          ORDER BY created_at DESC, seq DESC OFFSET $3 LIMIT $4 + 1
       ) d
       ORDER BY w.n, d.created_at DESC, d.seq DESC`,
      [[...new Set(webhookIds)], args.status ?? null, window.offset, window.limit, at?.[1] ?? null, at?.[2] ?? null],
    );
    const rows = ranked.length ? await this.db.getRepository(WebhookDelivery).createQueryBuilder("d").where("d.id = ANY(:ids)", { ids: ranked.map((r) => r.id) }).getMany() : [];
    const byId = new Map(rows.map((r) => [r.id, r]));
    const lists = new Map<string, { delivery: WebhookDelivery; key: string }[]>(webhookIds.map((id) => [id, []]));
    for (const r of ranked) lists.get(r.webhook_id)?.push({ delivery: byId.get(r.id)!, key: r.key });
    return new Map(
      [...lists].map(([id, list]) => {
        const page = toPage(list, window);
        return [id, { ...page, items: page.items.map((x) => x.delivery), cursors: page.items.map((x) => encodeKeyCursor(x.key)), ...(at ? { hasPreviousPage: true } : {}) }];
      }),
    );
  }

  async attemptsFor(deliveryIds: readonly string[]): Promise<Map<string, WebhookDeliveryAttempt[]>> {
    const rows = await this.db
      .getRepository(WebhookDeliveryAttempt)
      .createQueryBuilder("a")
      .where("a.delivery_id = ANY(:ids)", { ids: [...deliveryIds] })
      .orderBy("a.attempt")
      .getMany();
    const map = new Map<string, WebhookDeliveryAttempt[]>();
    for (const r of rows) map.set(r.deliveryId, [...(map.get(r.deliveryId) ?? []), r]);
    return map;
  }

  /** The JSON body a delivery sends: the same bytes on every retry, so receivers can dedupe on `id`. */
  static bodyOf(delivery: Pick<WebhookDelivery, "id" | "event" | "payload" | "createdAt">): string {
    return JSON.stringify({ id: delivery.id, event: delivery.event, createdAt: delivery.createdAt.toISOString(), data: delivery.payload });
  }
}
