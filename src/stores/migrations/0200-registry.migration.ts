import type { MigrationInterface, QueryRunner } from "typeorm";

/**
 * Artifacts (pending uploads and verified files), the model registry (models, versions,
 * aliases, stage transition requests) and webhooks with their transactional outbox.
 *
 * Registry invariants live in the schema as well as in the service: an alias is a primary key
 * per model (it names exactly one version) and a partial unique index allows at most one
 * PRODUCTION version per model, so even a bug in the service could not produce two.
 */
export class Registry1764150000200 implements MigrationInterface {
  name = "Registry1764150000200";

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE artifact_uploads (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        run_id uuid NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        path text NOT NULL,
        key text NOT NULL,
        size bigint NOT NULL,
        sha256 text NOT NULL,
        content_type text,
        store_upload_id text,
        created_by text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL
      );
      CREATE INDEX artifact_uploads_run ON artifact_uploads (run_id);
      CREATE TABLE artifacts (
        run_id uuid NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        path text NOT NULL,
        key text NOT NULL,
        size bigint NOT NULL,
        sha256 text NOT NULL,
        content_type text,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (run_id, path)
      );

      CREATE TABLE registered_models (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL,
        description text,
        approval_policy jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE UNIQUE INDEX registered_models_name_key ON registered_models (name);
      CREATE TABLE registered_model_tags (
        model_id uuid NOT NULL REFERENCES registered_models(id) ON DELETE CASCADE,
        key text NOT NULL,
        value text NOT NULL,
        PRIMARY KEY (model_id, key)
      );
      CREATE TABLE model_versions (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        model_id uuid NOT NULL REFERENCES registered_models(id) ON DELETE CASCADE,
        version integer NOT NULL,
        run_id uuid NOT NULL REFERENCES runs(id),
        artifact_path text NOT NULL,
        artifact_key text NOT NULL,
        description text,
        model_card text,
        stage text NOT NULL DEFAULT 'NONE' CHECK (stage IN ('NONE','STAGING','PRODUCTION','ARCHIVED')),
        status text NOT NULL DEFAULT 'READY',
        created_by text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (model_id, version)
      );
      CREATE UNIQUE INDEX model_versions_one_production ON model_versions (model_id) WHERE stage = 'PRODUCTION';
      CREATE INDEX model_versions_run ON model_versions (run_id);
      CREATE TABLE model_version_tags (
        model_version_id uuid NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
        key text NOT NULL,
        value text NOT NULL,
        PRIMARY KEY (model_version_id, key)
      );
      CREATE TABLE model_aliases (
        model_id uuid NOT NULL REFERENCES registered_models(id) ON DELETE CASCADE,
        alias text NOT NULL,
        model_version_id uuid NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (model_id, alias)
      );
      CREATE INDEX model_aliases_version ON model_aliases (model_version_id);
      CREATE TABLE stage_transition_requests (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        model_version_id uuid NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
        from_stage text NOT NULL,
        to_stage text NOT NULL CHECK (to_stage IN ('NONE','STAGING','PRODUCTION','ARCHIVED')),
        status text NOT NULL CHECK (status IN ('PENDING','APPROVED','REJECTED')),
        checks jsonb NOT NULL DEFAULT '[]'::jsonb,
        comment text,
        requested_by text NOT NULL,
        requested_by_id text NOT NULL,
        decided_by text,
        decided_by_id text,
        decision_comment text,
        created_at timestamptz NOT NULL DEFAULT now(),
        decided_at timestamptz
      );
      CREATE INDEX stage_transition_requests_version ON stage_transition_requests (model_version_id, created_at);

      CREATE TABLE webhooks (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        url text NOT NULL,
        events text[] NOT NULL,
        model_name text,
        secret text NOT NULL,
        description text,
        active boolean NOT NULL DEFAULT true,
        created_by text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE TABLE webhook_deliveries (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        webhook_id uuid NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
        event text NOT NULL,
        payload jsonb NOT NULL,
        status text NOT NULL CHECK (status IN ('PENDING','DELIVERED','FAILED')),
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL DEFAULT now(),
        last_error text,
        created_at timestamptz NOT NULL DEFAULT now(),
        delivered_at timestamptz
      );
      CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'PENDING';
      CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, created_at DESC);
      CREATE TABLE webhook_delivery_attempts (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        delivery_id uuid NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
        attempt integer NOT NULL,
        started_at timestamptz NOT NULL,
        duration_ms integer NOT NULL,
        response_status integer,
        error text,
        UNIQUE (delivery_id, attempt)
      );
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE webhook_delivery_attempts, webhook_deliveries, webhooks, stage_transition_requests, model_aliases,
      model_version_tags, model_versions, registered_model_tags, registered_models, artifacts, artifact_uploads`);
  }
}
