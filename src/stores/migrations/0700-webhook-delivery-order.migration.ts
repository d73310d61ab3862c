import type { MigrationInterface, QueryRunner } from "typeorm";

/**
 * Webhook deliveries go out in the order their events happened, one at a time per webhook. Events
 * of one transaction share `created_at` (an approval's STAGE_TRANSITION_APPROVED and ALIAS_SET),
 * so the order is a sequence number; the index finds each webhook's oldest pending delivery.
 */
export class WebhookDeliveryOrder1764150000700 implements MigrationInterface {
  name = "WebhookDeliveryOrder1764150000700";

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE webhook_deliveries ADD COLUMN seq bigserial;
      CREATE INDEX webhook_deliveries_pending_order ON webhook_deliveries (webhook_id, seq) WHERE status = 'PENDING';
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX webhook_deliveries_pending_order; ALTER TABLE webhook_deliveries DROP COLUMN seq;`);
  }
}
