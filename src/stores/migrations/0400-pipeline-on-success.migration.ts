import type { MigrationInterface, QueryRunner } from "typeorm";

/**
 * `pipeline_runs.on_success_due`: set in the transaction that finishes a run SUCCEEDED whose spec
 * has an `on_success` action, cleared by the statement that records the action's result.
 * `on_success_next_at`: no try may start before it (a try in progress claims the run until then;
 * a try that met an unavailable store backs off until then). A run still due after a crash (or a
 * failed try) is picked up by the scheduler.
 */
export class PipelineOnSuccess1764150000400 implements MigrationInterface {
  name = "PipelineOnSuccess1764150000400";

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE pipeline_runs ADD COLUMN on_success_due boolean NOT NULL DEFAULT false;
      ALTER TABLE pipeline_runs ADD COLUMN on_success_next_at timestamptz;
      CREATE INDEX pipeline_runs_on_success_due ON pipeline_runs (finished_at) WHERE on_success_due;
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX pipeline_runs_on_success_due; ALTER TABLE pipeline_runs DROP COLUMN on_success_next_at; ALTER TABLE pipeline_runs DROP COLUMN on_success_due;`);
  }
}
