import type { MigrationInterface, QueryRunner } from "typeorm";

/**
 * Executors that stayed OFFLINE past the retention are deleted by the scheduler (every executor
 * start registers a new one, so the table otherwise only grows). Past task runs and attempts keep
 * their history with the executor link set to NULL; the indexes let each delete find those rows
 * without scanning the task tables.
 */
export class ExecutorRetention1764150000600 implements MigrationInterface {
  name = "ExecutorRetention1764150000600";

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE task_runs DROP CONSTRAINT task_runs_executor_id_fkey,
        ADD CONSTRAINT task_runs_executor_id_fkey FOREIGN KEY (executor_id) REFERENCES executors(id) ON DELETE SET NULL;
      ALTER TABLE task_attempts DROP CONSTRAINT task_attempts_executor_id_fkey,
        ADD CONSTRAINT task_attempts_executor_id_fkey FOREIGN KEY (executor_id) REFERENCES executors(id) ON DELETE SET NULL;
      CREATE INDEX task_runs_executor ON task_runs (executor_id) WHERE executor_id IS NOT NULL;
      CREATE INDEX task_attempts_executor ON task_attempts (executor_id) WHERE executor_id IS NOT NULL;
      CREATE INDEX executors_offline_since ON executors (last_seen_at) WHERE status = 'OFFLINE';
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      DROP INDEX executors_offline_since; DROP INDEX task_attempts_executor; DROP INDEX task_runs_executor;
      ALTER TABLE task_attempts DROP CONSTRAINT task_attempts_executor_id_fkey,
        ADD CONSTRAINT task_attempts_executor_id_fkey FOREIGN KEY (executor_id) REFERENCES executors(id);
      ALTER TABLE task_runs DROP CONSTRAINT task_runs_executor_id_fkey,
        ADD CONSTRAINT task_runs_executor_id_fkey FOREIGN KEY (executor_id) REFERENCES executors(id);
    `);
  }
}
