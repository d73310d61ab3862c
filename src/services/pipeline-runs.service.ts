import { rows as sqlRows } from "../scheduler/sql.js";
import type { DataSource, EntityManager } from "typeorm";
import type { Logger } from "pino";
import { PipelineRun, PipelineRunStatus } from "../entities/pipeline-run.entity.js";
import { TaskRun, TaskRunStatus } from "../entities/task-run.entity.js";
import { Executor, ExecutorStatus } from "../entities/executor.entity.js";
import type { EventBus } from "../stores/event-bus/event-bus.js";
import { coerceParams, invocationSizeProblem, resolveTaskInvocation, roots } from "../scheduler/spec/index.js";
import { PendingEvents, pipelineTopics, type PipelineRunEvent, type TaskLogEvent, type TaskRunEvent } from "../scheduler/pipeline-events.js";
import { inTransaction, normalizeGpuType, type TaskQueue } from "../scheduler/task-queue.js";
import { DomainError, isUnavailable } from "./errors.js";
import { createOnce, keyedCall, madeWithKey, type KeyedCall } from "./idempotency.js";
import type { RequestContext } from "./context.js";
import type { ExperimentsService } from "./experiments.service.js";
import type { PipelinesService } from "./pipelines.service.js";
import { liveStream } from "./live-stream.js";
import { pageWindow, toPage, type Page, type PageArgs } from "./pagination.js";
import { validateId } from "./validation.js";

const MAX_PRIORITY = 1_000_000;
const TERMINAL_TASK = ["SUCCEEDED", "FAILED", "CANCELLED", "UPSTREAM_FAILED"];

/**
 * The narrow hook on_success.register_model calls. The model registry implements it; until it
 * exists, a successful pipeline run records that no model could be registered.
 */
export interface PipelineModelRegistrar {
  registerFromPipeline(
    ctx: RequestContext,
    input: { modelName: string; runId: string; artifactPath: string; alias?: string | null; pipelineRunId: string; description?: string },
  ): Promise<{ version: number }>;
}

export interface TaskLogBatchView {
  taskRunId: string;
  fromLine: number;
  lines: string[];
}

/** Pipeline runs: submission (materialising task runs), cancellation, reads and live updates. */
/** How long one try of an on_success action holds the run against other tries. */
const ON_SUCCESS_CLAIM_SECONDS = 300;
/** How long an on_success action that met an unavailable store waits before the next try. */
const ON_SUCCESS_BACKOFF_SECONDS = 60;

/** Most log lines one `TaskRun.logs` read returns. */
export const MAX_LOG_LINES_PER_READ = 10_000;

/** One attempt of a task run, as `TaskRun.attempts` lists it. */
export interface TaskAttemptView {
  attempt: number;
  runId: string;
  executorId: string | null;
  assignedGpus: number[];
  outcome: string | null;
  error: string | null;
  claimedAt: Date;
  finishedAt: Date | null;
}

/** Most task runs one request may load through PipelineRun.tasks. */
export const MAX_TASKS_PER_REQUEST = 50_000;

export class PipelineRunsService {
  constructor(
    private readonly db: DataSource,
    private readonly bus: EventBus,
    private readonly pipelines: PipelinesService,
    private readonly experiments: ExperimentsService,
    private readonly queue: TaskQueue,
    private readonly log: Logger,
  ) {}

  /**
   * Coerces params to their declared types, materialises one task run per task (and the
   * dependency edges), and queues the roots — all in one transaction. Every task's command is
   * rendered here too, so a bad template fails the submission rather than a task later.
   */
  async submit(
    ctx: RequestContext,
    input: { pipelineName: string; version?: number | null; params?: unknown; priority?: number | null; idempotencyKey?: string | null },
  ): Promise<PipelineRun> {
    const keyed = keyedCall(input.idempotencyKey, { pipelineName: input.pipelineName, version: input.version, params: input.params, priority: input.priority });
    const { pipeline, version } = await this.pipelines.resolveVersion(ctx, input.pipelineName, input.version);
    if (keyed) {
      // A resend is answered before the checks below: since the first call, a newer version may
      // have changed the params it takes, or its experiment been deleted, and the run exists.
      const earlier = await this.runSubmittedWithKey(this.db.manager, pipeline.id, keyed);
      if (earlier) return earlier;
    }
    const priority = input.priority ?? 0;
    if (!Number.isInteger(priority) || Math.abs(priority) > MAX_PRIORITY) {
      throw new DomainError("BAD_USER_INPUT", `input.priority: must be an integer from -${MAX_PRIORITY} to ${MAX_PRIORITY}`, "input.priority");
    }
    const spec = version.spec;
    let params;
    try {
      params = coerceParams(spec, input.params);
    } catch (err) {
      if (err instanceof DomainError && err.field) throw new DomainError(err.code, `input.${err.message}`, `input.${err.field}`, err.details);
      throw err;
    }
    for (const task of spec.pipeline.tasks) {
      const problem = invocationSizeProblem(resolveTaskInvocation(task, params));
      // Large data belongs in an artifact or dataset, passed by URI.
      if (problem) throw new DomainError("BAD_USER_INPUT", `input.params: task ${JSON.stringify(task.id)}: ${problem}`, "input.params");
    }
    const experiment = await this.experiments.getOrCreateByName(ctx, spec.pipeline.name);
    // Its tasks' tracking runs would land in a hidden experiment and have every write refused.
    if (experiment.deletedAt) {
      throw new DomainError("BAD_USER_INPUT", `input.pipelineName: the pipeline's experiment ${JSON.stringify(experiment.name)} is deleted; restore it first`, "input.pipelineName");
    }
    const rootIds = new Set(roots(spec));
    const tasks = spec.pipeline.tasks;
    const events = new PendingEvents();
    const submitted = await createOnce(keyed, "pipeline_runs_idempotency_key", () => this.db.transaction(async (em) => {
      if (keyed) {
        const earlier = await this.runSubmittedWithKey(em, pipeline.id, keyed);
        if (earlier) return { value: earlier, isNew: false };
      }
      const inserted: { id: string }[] = await sqlRows(em, 
        `INSERT INTO pipeline_runs (pipeline_id, pipeline_version_id, experiment_id, params, priority, status, tasks_total, created_by, created_by_id,
                                    idempotency_key, idempotency_fingerprint)
         VALUES ($1, $2, $3, $4::jsonb, $5, 'QUEUED', $6, $7, $8, $9, $10) RETURNING id`,
        [pipeline.id, version.id, experiment.id, JSON.stringify(params), priority, tasks.length, ctx.principal.name, ctx.principal.id, keyed?.key ?? null, keyed?.fingerprint ?? null],
      );
      const runId = inserted[0]!.id;
      const idsByTask = new Map<string, string>();
      // unnest() keeps a 10,000-task run to a handful of statements.
      for (let start = 0; start < tasks.length; start += 5000) {
        const chunk = tasks.slice(start, start + 5000);
        const rows: { id: string; task_id: string }[] = await sqlRows(em, 
          `INSERT INTO task_runs (pipeline_run_id, task_id, status, max_attempts, retry_backoff_seconds, timeout_seconds, pool, priority,
                                  cpu, memory_mb, gpus, gpu_type, pending_deps, queued_at)
           SELECT $1, u.task_id, u.status, u.max_attempts, u.backoff, u.timeout, u.pool, $2, u.cpu, u.memory_mb, u.gpus, u.gpu_type, u.deps,
                  CASE WHEN u.status = 'QUEUED' THEN now() END
             FROM unnest($3::text[], $4::text[], $5::int[], $6::float8[], $7::int[], $8::text[], $9::float8[], $10::int[], $11::int[], $12::text[], $13::int[])
               AS u(task_id, status, max_attempts, backoff, timeout, pool, cpu, memory_mb, gpus, gpu_type, deps)
           RETURNING id, task_id`,
          [
            runId,
            priority,
            chunk.map((t) => t.id),
            chunk.map((t) => (rootIds.has(t.id) ? "QUEUED" : "PENDING")),
            chunk.map((t) => t.retries + 1),
            chunk.map((t) => t.retry_backoff_seconds),
            chunk.map((t) => t.timeout_seconds),
            chunk.map((t) => t.pool),
            chunk.map((t) => t.resources.cpu),
            chunk.map((t) => t.resources.memory_mb),
            chunk.map((t) => t.resources.gpus),
            chunk.map((t) => (t.resources.gpu_type ? normalizeGpuType(t.resources.gpu_type) : null)),
            chunk.map((t) => t.depends_on.length),
          ],
        );
        rows.forEach((r) => idsByTask.set(r.task_id, r.id));
      }
      const upstream: string[] = [];
      const downstream: string[] = [];
      for (const t of tasks) {
        for (const dep of t.depends_on) {
          upstream.push(idsByTask.get(dep)!);
          downstream.push(idsByTask.get(t.id)!);
        }
      }
      for (let start = 0; start < upstream.length; start += 20_000) {
        await sqlRows(em, `INSERT INTO task_run_edges (upstream_id, downstream_id) SELECT * FROM unnest($1::uuid[], $2::uuid[])`, [
          upstream.slice(start, start + 20_000),
          downstream.slice(start, start + 20_000),
        ]);
      }
      for (const t of tasks) if (rootIds.has(t.id)) events.pools.add(t.pool);
      events.pipelineRuns.add(runId);
      return { value: await em.getRepository(PipelineRun).findOneByOrFail({ id: runId }), isNew: true };
    }), (key) => this.runSubmittedWithKey(this.db.manager, pipeline.id, key));
    // A resend queues and announces nothing: the first call did.
    if (submitted.isNew) await events.publish(this.bus);
    return submitted.value;
  }

  /** The pipeline run submitted with this idempotency key, as it is now, or null; refuses a key used with other input. */
  private runSubmittedWithKey(em: EntityManager, pipelineId: string, keyed: KeyedCall): Promise<PipelineRun | null> {
    return madeWithKey(em, PipelineRun, { table: "pipeline_runs", scopeColumn: "pipeline_id", scopeId: pipelineId }, keyed, (run) => `pipeline run ${JSON.stringify(run.id)}`);
  }

  async get(_ctx: RequestContext, id: string, field = "id"): Promise<PipelineRun | null> {
    validateId(id, field);
    return this.db.getRepository(PipelineRun).findOneBy({ id });
  }

  async list(ctx: RequestContext, args: PageArgs & { pipelineName?: string | null; status?: PipelineRunStatus[] | null }): Promise<Page<PipelineRun>> {
    const window = pageWindow(args);
    const qb = this.db.getRepository(PipelineRun).createQueryBuilder("r");
    if (args.pipelineName != null) {
      const pipeline = await this.pipelines.getByName(ctx, args.pipelineName);
      if (!pipeline) return toPage([], window, 0);
      qb.andWhere("r.pipeline_id = :pid", { pid: pipeline.id });
    }
    if (args.status?.length) qb.andWhere("r.status = ANY(:statuses)", { statuses: args.status });
    const [rows, total] = await qb.orderBy("r.created_at", "DESC").addOrderBy("r.id", "ASC").offset(window.offset).limit(window.limit + 1).getManyAndCount();
    return toPage(rows, window, total);
  }

  /**
   * A page of each pipeline's runs, newest first, with each pipeline's total: one statement for
   * every pipeline a request lists, each page read through the (pipeline_id, created_at) index
   * (LIMIT per pipeline, so a page of 5 never sorts a pipeline's 100,000 runs), then the rows by id.
   */
  async runsOfPipelines(pipelineIds: readonly string[], args: PageArgs): Promise<Map<string, Page<PipelineRun>>> {
    const window = pageWindow(args);
    const ranked: { id: string | null; pipeline_id: string; total: number }[] = await sqlRows(
      this.db,
      `SELECT r.id, p.id AS pipeline_id, c.total FROM unnest($1::uuid[]) WITH ORDINALITY AS p(id, n)
       CROSS JOIN LATERAL (SELECT count(*)::int AS total FROM pipeline_runs WHERE pipeline_id = p.id) c
       LEFT JOIN LATERAL (
         SELECT id, created_at FROM pipeline_runs WHERE pipeline_id = p.id ORDER BY created_at DESC, id ASC OFFSET $2 LIMIT $3 + 1
       ) r ON true
       ORDER BY p.n, r.created_at DESC, r.id ASC`,
      [[...new Set(pipelineIds)], window.offset, window.limit],
    );
    const ids = ranked.flatMap((r) => (r.id ? [r.id] : []));
    const rows = ids.length ? await this.db.getRepository(PipelineRun).createQueryBuilder("r").where("r.id = ANY(:ids)", { ids }).getMany() : [];
    const byId = new Map(rows.map((r) => [r.id, r]));
    const lists = new Map<string, { runs: PipelineRun[]; total: number }>(pipelineIds.map((id) => [id, { runs: [], total: 0 }]));
    for (const r of ranked) {
      const entry = lists.get(r.pipeline_id);
      if (!entry) continue;
      entry.total = r.total;
      if (r.id) entry.runs.push(byId.get(r.id)!);
    }
    return new Map([...lists].map(([id, { runs, total }]) => [id, toPage(runs, window, total)]));
  }


  /**
   * Cancels queued and waiting tasks at once and asks running ones to stop (their executors learn
   * it from the next heartbeat). The run becomes CANCELLED when its last running task has ended.
   */
  async cancel(ctx: RequestContext, id: string): Promise<PipelineRun> {
    validateId(id, "id");
    const current = await this.db.getRepository(PipelineRun).findOneBy({ id });
    if (!current) throw new DomainError("NOT_FOUND", `id: pipeline run ${JSON.stringify(id)} not found`, "id");
    if (current.status === PipelineRunStatus.CANCELLED) return current; // cancelling twice is a no-op
    if (current.status === PipelineRunStatus.SUCCEEDED || current.status === PipelineRunStatus.FAILED) {
      throw new DomainError("CONFLICT", `id: pipeline run ${JSON.stringify(id)} already ${current.status}; there is nothing to cancel`, "id");
    }
    const events = new PendingEvents();
    const finished = await inTransaction(this.db, async (em) => {
      // Task rows first, then the run row: the same lock order as completions. One statement for
      // waiting and running tasks: with two, a running task that failed and went back to
      // RETRY_WAIT (or QUEUED) between them matched neither and was run again. Here a row changed
      // by a concurrent commit is re-checked in its new state and cancelled if it is waiting now.
      const touched: { id: string; status: string }[] = await sqlRows(em,
        `UPDATE task_runs
            SET cancel_requested = true,
                finished_at = CASE WHEN status IN ('PENDING','QUEUED','RETRY_WAIT') THEN now() ELSE finished_at END,
                status = CASE WHEN status IN ('PENDING','QUEUED','RETRY_WAIT') THEN 'CANCELLED' ELSE status END
          WHERE pipeline_run_id = $1
            AND (status IN ('PENDING','QUEUED','RETRY_WAIT') OR (status IN ('CLAIMED','RUNNING') AND NOT cancel_requested))
          RETURNING id, status`,
        [id],
      );
      const cancelled = touched.filter((t) => t.status === "CANCELLED");
      const asked = touched.filter((t) => t.status !== "CANCELLED");
      // A run that finished since the check above keeps its record as it was.
      await sqlRows(em, `UPDATE pipeline_runs SET cancel_requested = true WHERE id = $1 AND status NOT IN ('SUCCEEDED','FAILED')`, [id]);
      [...cancelled, ...asked].forEach((t) => events.task(id, t.id));
      events.pipelineRuns.add(id);
      if (cancelled.length === 0) return null;
      return this.queue.advancePipelineRun(em, id, cancelled.length, cancelled.length, events);
    });
    await this.queue.announce(events);
    if (finished) this.log.info({ pipelineRunId: id, by: ctx.principal.name }, "pipeline run cancelled");
    return (await this.db.getRepository(PipelineRun).findOneBy({ id }))!;
  }

  async taskRun(_ctx: RequestContext, id: string): Promise<TaskRun | null> {
    validateId(id, "id");
    return this.db.getRepository(TaskRun).findOneBy({ id });
  }

  /**
   * Task runs of several pipeline runs (one request's `PipelineRun.tasks`). A run may hold 10,000
   * tasks, so a page of 1,000 runs could ask for ten million rows: past MAX_TASKS_PER_REQUEST the
   * request is refused, before anything is loaded.
   */
  async tasksFor(pipelineRunIds: readonly string[]): Promise<Map<string, TaskRun[]>> {
    const [{ total }] = await sqlRows<{ total: number }>(this.db, "SELECT coalesce(sum(tasks_total), 0)::int AS total FROM pipeline_runs WHERE id = ANY($1::uuid[])", [[...pipelineRunIds]]);
    if (total > MAX_TASKS_PER_REQUEST) {
      throw new DomainError(
        "BAD_USER_INPUT",
        `tasks: these ${pipelineRunIds.length} pipeline runs hold ${total} task runs, more than ${MAX_TASKS_PER_REQUEST} per request; ask for fewer runs (first) or one run at a time`,
        "tasks",
      );
    }
    const rows = await this.db
      .getRepository(TaskRun)
      .createQueryBuilder("t")
      .where("t.pipeline_run_id = ANY(:ids)", { ids: [...pipelineRunIds] })
      .orderBy("t.created_at")
      .addOrderBy("t.id")
      .getMany();
    const map = new Map<string, TaskRun[]>();
    for (const t of rows) {
      const list = map.get(t.pipelineRunId);
      if (list) list.push(t);
      else map.set(t.pipelineRunId, [t]);
    }
    return map;
  }

  async taskRunsByRunIds(runIds: readonly string[]): Promise<{ runId: string; id: string }[]> {
    // Earlier attempts' runs point at their task run through task_attempts.
    return this.db.query(
      `SELECT a.run_id AS "runId", t.id FROM task_attempts a JOIN task_runs t ON t.id = a.task_run_id WHERE a.run_id = ANY($1)`,
      [[...runIds]],
    );
  }

  async executorsByIds(ids: readonly string[]): Promise<Executor[]> {
    return this.db.getRepository(Executor).createQueryBuilder("e").where("e.id = ANY(:ids)", { ids: [...ids] }).getMany();
  }

  async executors(_ctx: RequestContext, pool?: string | null, status?: string | null): Promise<Executor[]> {
    if (status != null && !(Object.values(ExecutorStatus) as string[]).includes(status)) {
      throw new DomainError("BAD_USER_INPUT", `status: expected ONLINE or OFFLINE, got ${JSON.stringify(status)}`, "status");
    }
    const where: { pool?: string; status?: ExecutorStatus } = {};
    if (pool) where.pool = pool;
    if (status != null) where.status = status as ExecutorStatus;
    return this.db.getRepository(Executor).find({ where, order: { pool: "ASC", createdAt: "ASC" } });
  }

  async runningTasksFor(executorIds: readonly string[]): Promise<Map<string, TaskRun[]>> {
    const rows = await this.db
      .getRepository(TaskRun)
      .createQueryBuilder("t")
      .where("t.executor_id = ANY(:ids) AND t.status IN ('CLAIMED','RUNNING')", { ids: [...executorIds] })
      .getMany();
    const map = new Map<string, TaskRun[]>();
    for (const t of rows) map.set(t.executorId!, [...(map.get(t.executorId!) ?? []), t]);
    return map;
  }

  /** Per pool: executors online and tasks waiting or running. */
  async pools(_ctx: RequestContext): Promise<{ name: string; onlineExecutors: number; executors: number; queuedTasks: number; runningTasks: number }[]> {
    const rows: { name: string; online: string; total: string; queued: string; running: string }[] = await sqlRows(this.db, `
      WITH e AS (SELECT pool, count(*) FILTER (WHERE status = 'ONLINE') AS online, count(*) AS total FROM executors GROUP BY pool),
           t AS (SELECT pool, count(*) FILTER (WHERE status = 'QUEUED') AS queued, count(*) FILTER (WHERE status IN ('CLAIMED','RUNNING')) AS running
                   FROM task_runs WHERE status IN ('QUEUED','CLAIMED','RUNNING') GROUP BY pool)
      SELECT coalesce(e.pool, t.pool) AS name, coalesce(e.online, 0) AS online, coalesce(e.total, 0) AS total,
             coalesce(t.queued, 0) AS queued, coalesce(t.running, 0) AS running
        FROM e FULL JOIN t ON e.pool = t.pool ORDER BY 1`);
    return rows.map((r) => ({ name: r.name, onlineExecutors: Number(r.online), executors: Number(r.total), queuedTasks: Number(r.queued), runningTasks: Number(r.running) }));
  }

  /** Every attempt of a task run, oldest first. */
  /** Every attempt of each task run, oldest first (one statement for a request's tasks). */
  async attemptsFor(taskRunIds: readonly string[]): Promise<Map<string, TaskAttemptView[]>> {
    const rows: { task_run_id: string; attempt: number; run_id: string; executor_id: string | null; assigned_gpus: number[]; outcome: string | null; error: string | null; claimed_at: Date; finished_at: Date | null }[] =
      await sqlRows(this.db, "SELECT * FROM task_attempts WHERE task_run_id = ANY($1::uuid[]) ORDER BY task_run_id, attempt", [[...taskRunIds]]);
    const map = new Map<string, TaskAttemptView[]>();
    for (const r of rows) {
      const list = map.get(r.task_run_id) ?? [];
      list.push({
        attempt: r.attempt,
        runId: r.run_id,
        executorId: r.executor_id,
        assignedGpus: r.assigned_gpus,
        outcome: r.outcome,
        error: r.error,
        claimedAt: r.claimed_at,
        finishedAt: r.finished_at,
      });
      map.set(r.task_run_id, list);
    }
    return map;
  }

  /** Checks `TaskRun.logs` arguments; the lines are read through the request's loader. */
  validateLogWindow(fromLine: number, limit: number): void {
    if (!Number.isInteger(fromLine) || fromLine < 0) throw new DomainError("BAD_USER_INPUT", "fromLine: must be a non-negative integer", "fromLine");
    if (!Number.isInteger(limit) || limit < 0 || limit > MAX_LOG_LINES_PER_READ) throw new DomainError("BAD_USER_INPUT", `limit: must be an integer from 0 to ${MAX_LOG_LINES_PER_READ.toLocaleString("en-US")}`, "limit");
  }

  /**
   * Stored log lines of many task runs from the same `fromLine` (0-based), at most `limit` each:
   * one statement, each task's lines read through its (task_run_id, line_no) index.
   */
  async logsFor(taskRunIds: readonly string[], fromLine: number, limit: number): Promise<Map<string, string[]>> {
    this.validateLogWindow(fromLine, limit);
    const rows: { task_run_id: string; line: string }[] = await sqlRows(this.db,
      `SELECT t.id AS task_run_id, l.line FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, n)
       CROSS JOIN LATERAL (SELECT line, line_no FROM task_logs WHERE task_run_id = t.id AND line_no >= $2 ORDER BY line_no LIMIT $3) l
       ORDER BY t.n, l.line_no`,
      [[...new Set(taskRunIds)], fromLine, limit],
    );
    const map = new Map<string, string[]>();
    for (const r of rows) {
      const list = map.get(r.task_run_id) ?? [];
      list.push(r.line);
      map.set(r.task_run_id, list);
    }
    return map;
  }

  /** Stored log lines from `fromLine` (0-based), at most `limit`. */
  async logs(_ctx: RequestContext, taskRunId: string, fromLine = 0, limit = 1000): Promise<string[]> {
    validateId(taskRunId, "taskRunId");
    return (await this.logsFor([taskRunId], fromLine, limit)).get(taskRunId) ?? [];
  }

  /** Task runs by id (one statement). */
  async taskRunsByIds(ids: readonly string[]): Promise<TaskRun[]> {
    return ids.length ? this.db.getRepository(TaskRun).createQueryBuilder("t").where("t.id = ANY(:ids)", { ids: [...ids] }).getMany() : [];
  }

  // ---------------------------------------------------------------- live

  pipelineRunUpdated(ctx: RequestContext, rawId: string): AsyncGenerator<PipelineRun> {
    // Topics are named by ids as PostgreSQL spells them (lower case).
    const id = validateId(rawId, "id");
    return liveStream<PipelineRunEvent, PipelineRun>(ctx, pipelineTopics.pipelineRun(id), {
      map: () => this.db.getRepository(PipelineRun).findOneBy({ id }),
    });
  }

  taskRunUpdated(ctx: RequestContext, rawPipelineRunId: string): AsyncGenerator<TaskRun> {
    const pipelineRunId = validateId(rawPipelineRunId, "pipelineRunId");
    return liveStream<TaskRunEvent, TaskRun>(ctx, pipelineTopics.taskRuns(pipelineRunId), {
      map: (e) => this.db.getRepository(TaskRun).findOneBy({ id: e.taskRunId }),
    });
  }

  /** Replays stored lines from `fromLine`, then streams new ones; no line is sent twice. */
  taskLogs(ctx: RequestContext, rawTaskRunId: string, fromLine = 0): AsyncGenerator<TaskLogBatchView> {
    const taskRunId = validateId(rawTaskRunId, "taskRunId");
    if (!Number.isInteger(fromLine) || fromLine < 0) throw new DomainError("BAD_USER_INPUT", "fromLine: must be a non-negative integer", "fromLine");
    let next = fromLine;
    const self = this;
    return liveStream<TaskLogEvent, TaskLogBatchView>(ctx, pipelineTopics.taskLogs(taskRunId), {
      async *replay() {
        for (;;) {
          const lines = await self.logs(ctx, taskRunId, next, 1000);
          if (lines.length === 0) return;
          yield { taskRunId, fromLine: next, lines };
          next += lines.length;
        }
      },
      map: (e) => {
        // Live batches the replay already covered are dropped or trimmed.
        const end = e.fromLine + e.lines.length;
        if (end <= next) return null;
        const skip = Math.max(0, next - e.fromLine);
        const batch = { taskRunId, fromLine: e.fromLine + skip, lines: e.lines.slice(skip) };
        next = end;
        return batch;
      },
    });
  }

  // ---------------------------------------------------------------- on_success

  /**
   * Runs a SUCCEEDED run's `on_success.register_model`. The run is marked due in the transaction
   * that finished it, and each try first claims it with one statement (setting
   * `on_success_next_at` ON_SUCCESS_CLAIM_SECONDS ahead), so the finishing request and the
   * scheduler never run it at once; no connection is held while the action runs. The statement
   * recording the result clears the mark. A crash mid-try leaves the run due and the claim
   * expires: the scheduler tries again, reusing a version the interrupted try registered (decided
   * under the model's lock, so a slow try outliving its claim and the retry register once). A store
   * or database that is unavailable backs off ON_SUCCESS_BACKOFF_SECONDS; any other failure lands
   * in `error` for good.
   */
  async runOnSuccess(ctx: RequestContext, registrar: PipelineModelRegistrar | undefined, pipelineRunId: string): Promise<void> {
    const claimed = await sqlRows(
      this.db,
      `UPDATE pipeline_runs SET on_success_next_at = now() + make_interval(secs => $2)
        WHERE id = $1 AND on_success_due AND (on_success_next_at IS NULL OR on_success_next_at <= now()) RETURNING id`,
      [pipelineRunId, ON_SUCCESS_CLAIM_SECONDS],
    );
    if (claimed.length === 0) return;
    // A store or database that is unavailable is worth another try; anything else is final.
    const result = await this.performOnSuccess(ctx, registrar, pipelineRunId).catch((err: unknown) => ({
      error: `on_success.register_model: ${(err as Error).message}`,
      retry: isUnavailable(err) || (err instanceof DomainError && err.code === "UNAVAILABLE"),
    }));
    if ("registered" in result) {
      await sqlRows(
        this.db,
        "UPDATE pipeline_runs SET on_success_due = false, on_success_next_at = NULL, error = NULL, registered_model_name = $2, registered_model_version = $3 WHERE id = $1",
        [pipelineRunId, result.registered.modelName, result.registered.version],
      );
    } else if (result.retry) {
      await sqlRows(this.db, "UPDATE pipeline_runs SET error = $2, on_success_next_at = now() + make_interval(secs => $3) WHERE id = $1", [
        pipelineRunId,
        `${result.error} (will retry)`.slice(0, 10_000),
        ON_SUCCESS_BACKOFF_SECONDS,
      ]);
    } else {
      await sqlRows(this.db, "UPDATE pipeline_runs SET on_success_due = false, on_success_next_at = NULL, error = $2 WHERE id = $1", [pipelineRunId, result.error.slice(0, 10_000)]);
    }
    await this.bus.publish(pipelineTopics.pipelineRun(pipelineRunId), { pipelineRunId } satisfies PipelineRunEvent);
  }

  /**
   * Runs still due for their on_success action a while after they finished (a crash, an outage),
   * a few per call, whose claim or backoff has run out.
   */
  async runDueOnSuccessActions(ctx: RequestContext, registrar: PipelineModelRegistrar | undefined, olderThanSeconds: number): Promise<number> {
    const due: { id: string }[] = await this.db.query(
      `SELECT id FROM pipeline_runs
        WHERE on_success_due AND finished_at < now() - make_interval(secs => $1) AND (on_success_next_at IS NULL OR on_success_next_at <= now())
        ORDER BY on_success_next_at NULLS FIRST, finished_at LIMIT 5`,
      [olderThanSeconds],
    );
    for (const { id } of due) await this.runOnSuccess(ctx, registrar, id);
    return due.length;
  }

  private async performOnSuccess(
    ctx: RequestContext,
    registrar: PipelineModelRegistrar | undefined,
    pipelineRunId: string,
  ): Promise<{ registered: { modelName: string; version: number } } | { error: string; retry: boolean }> {
    const run = await this.db.getRepository(PipelineRun).findOneByOrFail({ id: pipelineRunId });
    const [version] = await this.pipelines.versionsByIds([run.pipelineVersionId]);
    const action = version?.spec.pipeline.on_success?.register_model;
    if (!action) return { error: "on_success: the pipeline version has no action", retry: false };
    const task = await this.db.getRepository(TaskRun).findOneBy({ pipelineRunId, taskId: action.task });
    if (!registrar) return { error: "on_success.register_model: the model registry is not available on this server", retry: false };
    if (!task?.runId || task.status !== TaskRunStatus.SUCCEEDED) return { error: `on_success.register_model: task ${JSON.stringify(action.task)} has no successful run`, retry: false };
    const registered = await registrar.registerFromPipeline(ctx, {
      modelName: action.model_name,
      runId: task.runId,
      artifactPath: action.artifact_path,
      alias: action.alias ?? null,
      pipelineRunId,
      description: `registered by pipeline ${version.spec.pipeline.name} run ${pipelineRunId}`,
    });
    return { registered: { modelName: action.model_name, version: registered.version } };
  }

  isTerminalTask(status: string): boolean {
    return TERMINAL_TASK.includes(status);
  }
}
