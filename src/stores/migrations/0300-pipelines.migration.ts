import type { MigrationInterface, QueryRunner } from "typeorm";

/**
 * Pipelines, immutable content-hashed versions, pipeline runs, task runs (the queue itself),
 * dependency edges, executors and task logs.
 */
export class Pipelines1764150000300 implements MigrationInterface {
  name = "Pipelines1764150000300";

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE pipelines (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL UNIQUE,
        description text,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE TABLE pipeline_versions (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        pipeline_id uuid NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
        version integer NOT NULL,
        content_hash text NOT NULL,
        spec jsonb NOT NULL,
        created_by text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (pipeline_id, version),
        UNIQUE (pipeline_id, content_hash)
      );
      CREATE TABLE pipeline_runs (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        pipeline_id uuid NOT NULL REFERENCES pipelines(id),
        pipeline_version_id uuid NOT NULL REFERENCES pipeline_versions(id),
        experiment_id uuid NOT NULL REFERENCES experiments(id),
        params jsonb NOT NULL,
        priority integer NOT NULL DEFAULT 0,
        status text NOT NULL CHECK (status IN ('QUEUED','RUNNING','SUCCEEDED','FAILED','CANCELLED')),
        tasks_total integer NOT NULL,
        tasks_done integer NOT NULL DEFAULT 0,
        tasks_failed integer NOT NULL DEFAULT 0,
        cancel_requested boolean NOT NULL DEFAULT false,
        error text,
        registered_model_name text,
        registered_model_version integer,
        created_by text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        started_at timestamptz,
        finished_at timestamptz
      );
      CREATE INDEX pipeline_runs_pipeline_created ON pipeline_runs (pipeline_id, created_at DESC, id);
      CREATE INDEX pipeline_runs_status_created ON pipeline_runs (status, created_at DESC, id);
      CREATE TABLE executors (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL,
        pool text NOT NULL,
        labels jsonb NOT NULL DEFAULT '{}'::jsonb,
        cpu double precision NOT NULL,
        memory_mb integer NOT NULL,
        gpus jsonb NOT NULL DEFAULT '[]'::jsonb,
        status text NOT NULL CHECK (status IN ('ONLINE','OFFLINE')),
        registered_by text NOT NULL,
        last_seen_at timestamptz NOT NULL DEFAULT now(),
        created_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX executors_pool ON executors (pool, status);
      CREATE TABLE task_runs (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        pipeline_run_id uuid NOT NULL REFERENCES pipeline_runs(id) ON DELETE CASCADE,
        task_id text NOT NULL,
        status text NOT NULL CHECK (status IN ('PENDING','QUEUED','CLAIMED','RUNNING','RETRY_WAIT','SUCCEEDED','FAILED','CANCELLED','UPSTREAM_FAILED')),
        attempt integer NOT NULL DEFAULT 1,
        max_attempts integer NOT NULL,
        retry_backoff_seconds double precision NOT NULL,
        timeout_seconds integer NOT NULL,
        pool text NOT NULL,
        priority integer NOT NULL DEFAULT 0,
        cpu double precision NOT NULL,
        memory_mb integer NOT NULL,
        gpus integer NOT NULL,
        gpu_type text,
        pending_deps integer NOT NULL,
        executor_id uuid REFERENCES executors(id),
        assigned_gpus integer[] NOT NULL DEFAULT '{}',
        lease_token text,
        lease_expires_at timestamptz,
        run_id uuid REFERENCES runs(id),
        token_id uuid,
        checkpoint jsonb,
        checkpoint_at timestamptz,
        checkpoint_attempt integer,
        cancel_requested boolean NOT NULL DEFAULT false,
        exit_code integer,
        error text,
        failure_kind text,
        log_lines integer NOT NULL DEFAULT 0,
        queued_at timestamptz,
        not_before timestamptz,
        claimed_at timestamptz,
        started_at timestamptz,
        finished_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (pipeline_run_id, task_id)
      );
      -- The claim query: queued tasks of a pool, highest priority first, then oldest.
      CREATE INDEX task_runs_queue ON task_runs (pool, priority DESC, queued_at, id) WHERE status = 'QUEUED';
      CREATE INDEX task_runs_live_lease ON task_runs (lease_expires_at) WHERE status IN ('CLAIMED','RUNNING');
      CREATE INDEX task_runs_live_executor ON task_runs (executor_id) WHERE status IN ('CLAIMED','RUNNING');
      CREATE INDEX task_runs_retry_wait ON task_runs (not_before) WHERE status = 'RETRY_WAIT';
      CREATE INDEX task_runs_run ON task_runs (run_id) WHERE run_id IS NOT NULL;
      CREATE TABLE task_run_edges (
        upstream_id uuid NOT NULL REFERENCES task_runs(id) ON DELETE CASCADE,
        downstream_id uuid NOT NULL REFERENCES task_runs(id) ON DELETE CASCADE,
        PRIMARY KEY (upstream_id, downstream_id)
      );
      CREATE INDEX task_run_edges_downstream ON task_run_edges (downstream_id);
      -- Every attempt's tracking run, so earlier attempts stay reachable after a retry.
      CREATE TABLE task_attempts (
        task_run_id uuid NOT NULL REFERENCES task_runs(id) ON DELETE CASCADE,
        attempt integer NOT NULL,
        run_id uuid NOT NULL REFERENCES runs(id),
        executor_id uuid REFERENCES executors(id),
        assigned_gpus integer[] NOT NULL DEFAULT '{}',
        outcome text,
        error text,
        claimed_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz,
        PRIMARY KEY (task_run_id, attempt)
      );
      CREATE TABLE task_logs (
        task_run_id uuid NOT NULL REFERENCES task_runs(id) ON DELETE CASCADE,
        line_no integer NOT NULL,
        attempt integer NOT NULL,
        line text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (task_run_id, line_no)
      );
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      DROP TABLE task_logs; DROP TABLE task_attempts; DROP TABLE task_run_edges; DROP TABLE task_runs;
      DROP TABLE executors; DROP TABLE pipeline_runs; DROP TABLE pipeline_versions; DROP TABLE pipelines;
    `);
  }
}
