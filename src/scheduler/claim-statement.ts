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
 * runs that were still QUEUED. With a claim id, the attempts record it and the executor's claim
 * record is marked served, so a resend of the call is answered with these tasks again. Returns the
 * claimed task_runs rows, each carrying `started_pipeline_runs` (the ids of the pipeline runs this
 * claim started).
 */
export async function claimTasksInOneStatement(
  em: EntityManager,
  claims: PreparedClaim[],
  executorId: string,
  leaseSeconds: number,
  claimId: string | null,
): Promise<Record<string, unknown>[]> {
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
       INSERT INTO task_attempts (task_run_id, attempt, run_id, executor_id, assigned_gpus, claim_id)
       SELECT t.id, t.attempt, t.run_id, $17, t.assigned_gpus, $20 FROM t
     ), served AS (
       UPDATE executor_claims SET served_at = now() WHERE executor_id = $17 AND claim_id = $20
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
      claimId,
    ],
  );
}

/** A task of a claim answered again, with the fresh credentials its executor receives this time. */
export interface ReplayedClaim {
  taskRunId: string;
  /** The name of its new task token (`task <id> #<attempt>`). */
  tokenName: string;
  tokenId: string;
  leaseToken: string;
  taskToken: { secret: string; tokenHash: string; prefix: string };
}

/**
 * Hands claimed tasks out again (a claim call whose answer was lost, resent): each gets a new lease
 * token and a new task token, the old task token is revoked, and the lease runs from now. The old
 * credentials were never seen by the executor (task tokens are stored hashed, so they could not be
 * sent again), and a new lease token makes any earlier answer of the call stale. Returns the
 * task_runs rows as left.
 */
export async function replayClaimInOneStatement(em: EntityManager, replays: ReplayedClaim[], leaseSeconds: number): Promise<Record<string, unknown>[]> {
  return sqlRows(em,
    `WITH u AS (
       SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[]) AS u(task_run_id, lease_token, token_id, name, hash, prefix)
     ), old AS (
       UPDATE api_tokens k SET revoked_at = now() FROM task_runs t JOIN u ON u.task_run_id = t.id WHERE k.id = t.token_id AND k.revoked_at IS NULL
     ), tok AS (
       INSERT INTO api_tokens (id, name, role, token_hash, prefix, scope, created_by)
       SELECT u.token_id, u.name, 'task', u.hash, u.prefix,
              jsonb_strip_nulls(jsonb_build_object('taskRunId', t.id::text, 'runId', t.run_id::text,
                                                   'submitterId', pr.created_by_id, 'submitter', pr.created_by)), 'system'
         FROM u JOIN task_runs t ON t.id = u.task_run_id JOIN pipeline_runs pr ON pr.id = t.pipeline_run_id
     )
     UPDATE task_runs t SET lease_token = u.lease_token, token_id = u.token_id, lease_expires_at = now() + $7 * interval '1 second'
       FROM u WHERE t.id = u.task_run_id
     RETURNING t.*`,
    [
      replays.map((r) => r.taskRunId),
      replays.map((r) => r.leaseToken),
      replays.map((r) => r.tokenId),
      replays.map((r) => r.tokenName.slice(0, LIMITS.nameLength)),
      replays.map((r) => r.taskToken.tokenHash),
      replays.map((r) => r.taskToken.prefix),
      leaseSeconds,
    ],
  );
}
