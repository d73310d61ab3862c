import type { EntityManager } from "typeorm";
import { LIMITS } from "../services/validation.js";
import type { TaskDemand } from "./resource-packing.js";
import type { JsonValue, ParamValue, TaskInvocation, TaskSpec } from "./spec/index.js";
import { rows as sqlRows } from "./sql.js";

/** A queued task that fits the claiming executor on its own, as the claim reads it (locked). */
export interface ClaimCandidate extends TaskDemand {
  id: string;
  pipeline_run_id: string;
  task_id: string;
  attempt: number;
  timeout_seconds: number;
  checkpoint: unknown;
  checkpoint_at: Date | null;
  checkpoint_attempt: number | null;
  experiment_id: string;
  pipeline_version_id: string;
  run_params: Record<string, ParamValue>;
}

/** One task the claim will take, with everything its attempt needs decided up front. */
export interface PreparedClaim {
  task: ClaimCandidate;
  gpus: number[];
  spec: TaskSpec;
  pipelineName: string;
  invocation: TaskInvocation;
  /** Ids chosen here rather than by the database, so one set-based statement can link the rows. */
  runId: string;
  tokenId: string;
  leaseToken: string;
  taskToken: { secret: string; tokenHash: string; prefix: string };
}

function paramText(value: JsonValue): string {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > LIMITS.paramValueLength ? text.slice(0, LIMITS.paramValueLength) : text;
}

/**
 * Claims the prepared tasks in one statement, however many there are: opens each attempt's
 * tracking run with its params and tags, mints its task-scoped token (revoked when the attempt
 * ends; it acts on behalf of the pipeline run's submitter, whose id its scope carries), marks the task CLAIMED with its lease and GPUs, records the attempt, and starts pipeline
 * runs that were still QUEUED. Returns the claimed task_runs rows, each carrying
 * `started_pipeline_runs` (the ids of the pipeline runs this claim started).
 */
export async function claimTasksInOneStatement(em: EntityManager, claims: PreparedClaim[], executorId: string, leaseSeconds: number): Promise<Record<string, unknown>[]> {
  const params: [string, string, string][] = [];
  const tags: [string, string, string][] = [];
  for (const c of claims) {
    for (const [k, v] of Object.entries(c.invocation.params)) params.push([c.runId, k, paramText(v)]);
    tags.push(
      [c.runId, "mlgraph.pipeline", c.pipelineName],
      [c.runId, "mlgraph.pipelineRunId", c.task.pipeline_run_id],
      [c.runId, "mlgraph.taskId", c.task.task_id],
      [c.runId, "mlgraph.taskRunId", c.task.id],
      [c.runId, "mlgraph.attempt", String(c.task.attempt)],
    );
  }
  const column = <T, V>(list: T[], pick: (item: T) => V): V[] => list.map(pick);
  return sqlRows(em,
    `WITH c AS (
       SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[]) AS c(task_run_id, run_id, token_id, lease_token, gpus)
     ), r AS (
       INSERT INTO runs (id, experiment_id, name, status, start_time)
       SELECT u.id, u.experiment_id, u.name, 'RUNNING', now() FROM unnest($2::uuid[], $6::uuid[], $7::text[]) AS u(id, experiment_id, name)
     ), p AS (
       INSERT INTO run_params (run_id, key, value) SELECT * FROM unnest($8::uuid[], $9::text[], $10::text[])
     ), tg AS (
       INSERT INTO run_tags (run_id, key, value) SELECT * FROM unnest($11::uuid[], $12::text[], $13::text[])
     ), tok AS (
       INSERT INTO api_tokens (id, name, role, token_hash, prefix, scope, created_by)
       SELECT c.token_id, u.name, 'task', u.hash, u.prefix,
              jsonb_strip_nulls(jsonb_build_object('taskRunId', c.task_run_id::text, 'runId', c.run_id::text,
                                                   'submitterId', pr.created_by_id, 'submitter', pr.created_by)), 'system'
         FROM unnest($3::uuid[], $14::text[], $15::text[], $16::text[]) AS u(id, name, hash, prefix) JOIN c ON c.token_id = u.id
         JOIN task_runs tr ON tr.id = c.task_run_id JOIN pipeline_runs pr ON pr.id = tr.pipeline_run_id
     ), t AS (
       UPDATE task_runs SET status = 'CLAIMED', executor_id = $17, assigned_gpus = c.gpus::int[], lease_token = c.lease_token,
              lease_expires_at = now() + $18 * interval '1 second', run_id = c.run_id, token_id = c.token_id,
              claimed_at = now(), started_at = NULL, exit_code = NULL
         FROM c WHERE task_runs.id = c.task_run_id
       RETURNING task_runs.*
     ), a AS (
       INSERT INTO task_attempts (task_run_id, attempt, run_id, executor_id, assigned_gpus)
       SELECT t.id, t.attempt, t.run_id, $17, t.assigned_gpus FROM t
     ), pr AS (
       UPDATE pipeline_runs SET status = 'RUNNING', started_at = now() WHERE id = ANY($19::uuid[]) AND status = 'QUEUED' RETURNING id
     )
     SELECT t.*, (SELECT coalesce(array_agg(id::text), '{}') FROM pr) AS started_pipeline_runs FROM t`,
    [
      column(claims, (c) => c.task.id),
      column(claims, (c) => c.runId),
      column(claims, (c) => c.tokenId),
      column(claims, (c) => c.leaseToken),
      column(claims, (c) => `{${c.gpus.join(",")}}`),
      column(claims, (c) => c.task.experiment_id),
      column(claims, (c) => `${c.task.task_id} #${c.task.attempt}`),
      column(params, (p) => p[0]),
      column(params, (p) => p[1]),
      column(params, (p) => p[2]),
      column(tags, (t) => t[0]),
      column(tags, (t) => t[1]),
      column(tags, (t) => t[2]),
      column(claims, (c) => `task ${c.task.task_id} #${c.task.attempt}`.slice(0, LIMITS.nameLength)),
      column(claims, (c) => c.taskToken.tokenHash),
      column(claims, (c) => c.taskToken.prefix),
      executorId,
      leaseSeconds,
      [...new Set(claims.map((c) => c.task.pipeline_run_id))],
    ],
  );
}
