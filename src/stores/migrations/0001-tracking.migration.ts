import type { MigrationInterface, QueryRunner } from "typeorm";

/** Experiments, runs, params, tags, dataset inputs and API tokens. */
export class Tracking1764150000001 implements MigrationInterface {
  name = "Tracking1764150000001";

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE experiments (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL,
        description text,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        deleted_at timestamptz
      );
      CREATE UNIQUE INDEX experiments_name_key ON experiments (name);
      CREATE TABLE experiment_tags (
        experiment_id uuid NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
        key text NOT NULL,
        value text NOT NULL,
        PRIMARY KEY (experiment_id, key)
      );
      CREATE TABLE runs (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        experiment_id uuid NOT NULL REFERENCES experiments(id),
        name text NOT NULL,
        status text NOT NULL CHECK (status IN ('RUNNING','FINISHED','FAILED','KILLED')),
        start_time timestamptz NOT NULL DEFAULT now(),
        end_time timestamptz,
        parent_run_id uuid REFERENCES runs(id),
        deleted_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX runs_experiment_start ON runs (experiment_id, start_time DESC, id);
      CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
      CREATE TABLE run_params (
        run_id uuid NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        key text NOT NULL,
        value text NOT NULL,
        PRIMARY KEY (run_id, key)
      );
      CREATE INDEX run_params_key_value ON run_params (key, value);
      CREATE TABLE run_tags (
        run_id uuid NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        key text NOT NULL,
        value text NOT NULL,
        PRIMARY KEY (run_id, key)
      );
      CREATE INDEX run_tags_key_value ON run_tags (key, value);
      CREATE TABLE datasets (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL,
        digest text NOT NULL,
        source_uri text,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (name, digest)
      );
      CREATE TABLE run_inputs (
        run_id uuid NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        dataset_id uuid NOT NULL REFERENCES datasets(id),
        context text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (run_id, dataset_id, context)
      );
      CREATE INDEX run_inputs_dataset ON run_inputs (dataset_id);
      CREATE TABLE api_tokens (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL,
        role text NOT NULL,
        token_hash text NOT NULL UNIQUE,
        prefix text NOT NULL,
        scope jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_by text,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz,
        revoked_at timestamptz
      );
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE api_tokens, run_inputs, datasets, run_tags, run_params, runs, experiment_tags, experiments`);
  }
}
