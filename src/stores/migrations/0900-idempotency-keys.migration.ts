import type { MigrationInterface, QueryRunner } from "typeorm";

/**
 * Idempotency keys of the creates a client may resend after a lost answer: createRun (scoped to
 * the experiment), submitPipelineRun (to the pipeline) and createModelVersion (to the model).
 *
 * `idempotency_key` is the client's key, `idempotency_fingerprint` the SHA-256 of the call's
 * input: a resend with the same key and input is answered with the row made the first time, the
 * same key with other input is refused. The partial unique indexes make two concurrent calls with
 * one key create one row (the loser's insert fails on the index and it answers as a resend); rows
 * created without a key are not indexed.
 */
export class IdempotencyKeys1764150000900 implements MigrationInterface {
  name = "IdempotencyKeys1764150000900";

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE runs ADD COLUMN idempotency_key text, ADD COLUMN idempotency_fingerprint text;
      CREATE UNIQUE INDEX runs_idempotency_key ON runs (experiment_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
      ALTER TABLE pipeline_runs ADD COLUMN idempotency_key text, ADD COLUMN idempotency_fingerprint text;
      CREATE UNIQUE INDEX pipeline_runs_idempotency_key ON pipeline_runs (pipeline_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
      ALTER TABLE model_versions ADD COLUMN idempotency_key text, ADD COLUMN idempotency_fingerprint text;
      CREATE UNIQUE INDEX model_versions_idempotency_key ON model_versions (model_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      DROP INDEX model_versions_idempotency_key;
      ALTER TABLE model_versions DROP COLUMN idempotency_fingerprint, DROP COLUMN idempotency_key;
      DROP INDEX pipeline_runs_idempotency_key;
      ALTER TABLE pipeline_runs DROP COLUMN idempotency_fingerprint, DROP COLUMN idempotency_key;
      DROP INDEX runs_idempotency_key;
      ALTER TABLE runs DROP COLUMN idempotency_fingerprint, DROP COLUMN idempotency_key;
    `);
  }
}
