import type { MigrationInterface, QueryRunner } from "typeorm";

/**
 * Claim ids and attempts that were never set up.
 *
 * `executor_claims` remembers each claim call an executor made with a claim id: how many calls
 * carried it (the latest one is the one its executor still listens to) and whether one of them
 * claimed tasks. A resend of a call whose answer was lost is then answered with that claim's tasks
 * again instead of claiming more. Rows are pruned by the scheduler some time after their last call
 * (`last_call_at`), and go with their executor. `task_attempts.claim_id` says which claim call
 * handed an attempt out; the partial index finds a claim's live attempts.
 *
 * `task_runs.uncounted_attempts` counts attempts that did not count against the task's retries:
 * handed back NOT_STARTED by an executor that could not set them up (a full disk).
 */
export class ExecutorClaims1764150000800 implements MigrationInterface {
  name = "ExecutorClaims1764150000800";

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE executor_claims (
        executor_id uuid NOT NULL REFERENCES executors(id) ON DELETE CASCADE,
        claim_id text NOT NULL,
        calls integer NOT NULL DEFAULT 1,
        served_at timestamptz,
        last_call_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (executor_id, claim_id)
      );
      CREATE INDEX executor_claims_last_call ON executor_claims (last_call_at);
      ALTER TABLE task_attempts ADD COLUMN claim_id text;
      CREATE INDEX task_attempts_live_claim ON task_attempts (executor_id, claim_id) WHERE claim_id IS NOT NULL AND outcome IS NULL;
      ALTER TABLE task_runs ADD COLUMN uncounted_attempts integer NOT NULL DEFAULT 0;
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE task_runs DROP COLUMN uncounted_attempts;
      DROP INDEX task_attempts_live_claim;
      ALTER TABLE task_attempts DROP COLUMN claim_id;
      DROP TABLE executor_claims;
    `);
  }
}
