import type { MigrationInterface, QueryRunner } from "typeorm";

/**
 * `pipeline_runs.on_success_due`: set in the transaction that finishes a run SUCCEEDED whose spec
 * has an `on_success` action, cleared in the transaction that records the action's result. A run
 * still due after a crash (or a failed attempt at the action) is picked up by the scheduler.
 */
export class PipelineOnSuccess1764150000400 implements MigrationInterface {
  name = "PipelineOnSuccess1764150000400";

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE pipeline_runs ADD COLUMN on_success_due boolean NOT NULL DEFAULT false;
      CREATE INDEX pipeline_runs_on_success_due ON pipeline_runs (finished_at) WHERE on_success_due;
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX pipeline_runs_on_success_due; ALTER TABLE pipeline_runs DROP COLUMN on_success_due;`);
  }
}
