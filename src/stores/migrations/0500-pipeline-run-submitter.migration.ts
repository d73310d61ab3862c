import type { MigrationInterface, QueryRunner } from "typeorm";

/**
 * `pipeline_runs.created_by_id`: the principal id of whoever submitted the run (`created_by` keeps
 * their display name). Task tokens carry it, so what a task does on the registry is attributed to
 * the person who ran the pipeline: a stage transition a task requests cannot then be approved by
 * that same person (the self-approval rule). Runs submitted before this migration have none.
 */
export class PipelineRunSubmitter1764150000500 implements MigrationInterface {
  name = "PipelineRunSubmitter1764150000500";

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE pipeline_runs ADD COLUMN created_by_id text`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE pipeline_runs DROP COLUMN created_by_id`);
  }
}
