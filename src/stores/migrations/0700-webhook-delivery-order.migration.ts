import type { MigrationInterface, QueryRunner } from "typeorm";

/**
 * Webhook deliveries go out in the order their events happened, one at a time per webhook. Events
 * of one transaction share `created_at` (an approval's STAGE_TRANSITION_APPROVED and ALIAS_SET),
 * so the order is a sequence number; the index finds each webhook's oldest pending delivery.
 */
export class WebhookDeliveryOrder1764150000700 implements MigrationInterface {
  name = "WebhookDeliveryOrder1764150000700";

  async up(q: QueryRunner): Promise<void> {
    // Existing rows are numbered in the order they were created (a bigserial column would number
    // them in the order they lie on disk, where an updated retry row may come after newer events).
    await q.query(`
      ALTER TABLE webhook_deliveries ADD COLUMN seq bigint;
      CREATE SEQUENCE webhook_deliveries_seq_seq OWNED BY webhook_deliveries.seq;
      UPDATE webhook_deliveries d SET seq = o.n
        FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM webhook_deliveries) o WHERE o.id = d.id;
      SELECT setval('webhook_deliveries_seq_seq', coalesce((SELECT max(seq) FROM webhook_deliveries), 0) + 1, false);
      ALTER TABLE webhook_deliveries ALTER COLUMN seq SET DEFAULT nextval('webhook_deliveries_seq_seq'), ALTER COLUMN seq SET NOT NULL;
      CREATE INDEX webhook_deliveries_pending_order ON webhook_deliveries (webhook_id, seq) WHERE status = 'PENDING';
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX webhook_deliveries_pending_order; ALTER TABLE webhook_deliveries DROP COLUMN seq;`); // drops its sequence too
  }
}
