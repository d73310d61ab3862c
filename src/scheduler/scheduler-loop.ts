import { rows as sqlRows } from "./sql.js";
import type { DataSource, QueryRunner } from "typeorm";
import type { Logger } from "pino";
import type { Config } from "../config.js";
import type { EventBus } from "../stores/event-bus/event-bus.js";
import type { BackgroundWorker } from "../services/app-services.js";
import type { RequestContext } from "../services/context.js";
import { PendingEvents } from "./pipeline-events.js";
import { inTransaction, type TaskQueue, type TaskRow, type FinishEffects } from "./task-queue.js";

/** Arbitrary constant: the advisory lock whose holder is the scheduler leader. */
export const SCHEDULER_LEADER_LOCK_KEY = 7_241_000_300;
const BATCH = 200;

/**
 * The scheduler loop. Every replica runs it; only the holder of a PostgreSQL advisory lock (on a
 * dedicated connection, so the lock lives exactly as long as that session) acts: it fails attempts
 * whose lease expired (EXECUTOR_LOST) or that ran past their timeout, queues retries whose backoff
 * is over, and marks silent executors OFFLINE. Claims and completions need no leader.
 */
export class SchedulerLoop implements BackgroundWorker {
  readonly name = "scheduler";
  private timer: NodeJS.Timeout | null = null;
  private leaderConnection: QueryRunner | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;
  /** Runs on_success actions left due (set by the pipeline services); on the leader, one pass at a time. */
  onSuccessSweep: (() => Promise<unknown>) | null = null;
  private sweeping: Promise<unknown> | null = null;

  constructor(
    private readonly db: DataSource,
    private readonly bus: EventBus,
    private readonly queue: TaskQueue,
    private readonly config: Config,
    private readonly log: Logger,
    private readonly systemContext: () => RequestContext,
  ) {}

  get isLeader(): boolean {
    return this.leaderConnection !== null;
  }

  start(): void {
    const tick = () => {
      if (this.stopped) return;
      this.running = this.tick()
        .catch((err: Error) => this.log.error({ err: err.message }, "scheduler tick failed"))
        .finally(() => {
          this.running = null;
          if (!this.stopped) this.timer = setTimeout(tick, this.config.schedulerIntervalMs);
        });
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
    await this.sweeping;
    await this.resign();
  }

  /** One pass; public so tests and benchmarks can drive it. */
  async tick(): Promise<void> {
    if (!(await this.ensureLeader())) return;
    await this.promoteRetries();
    await this.reapExpiredLeases();
    await this.reapTimeouts();
    await this.markOfflineExecutors();
    await this.pruneExecutors();
    await this.pruneClaimRecords();
    // Not awaited: an action waiting on a slow store must not hold up retries and the reaper.
    if (this.onSuccessSweep && !this.sweeping) {
      this.sweeping = this.onSuccessSweep()
        .catch((err: Error) => this.log.error({ err: err.message }, "on_success sweep failed"))
        .finally(() => (this.sweeping = null));
    }
  }

  private async ensureLeader(): Promise<boolean> {
    if (this.leaderConnection) {
      try {
        await this.leaderConnection.query("SELECT 1");
        return true;
      } catch (err) {
        // The session (and with it the lock) is gone; another replica may lead now.
        this.log.warn({ err: (err as Error).message }, "scheduler lost its leader connection");
        await this.resign();
      }
    }
    const runner = this.db.createQueryRunner();
    try {
      await runner.connect();
      const rows: { locked: boolean }[] = await runner.query("SELECT pg_try_advisory_lock($1) AS locked", [SCHEDULER_LEADER_LOCK_KEY]);
      if (rows[0]?.locked) {
        this.leaderConnection = runner;
        this.log.info("this replica is the scheduler leader");
        return true;
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, "scheduler leader election failed");
    }
    await runner.release();
    return false;
  }

  private async resign(): Promise<void> {
    const runner = this.leaderConnection;
    this.leaderConnection = null;
    if (!runner) return;
    await runner.query("SELECT pg_advisory_unlock($1)", [SCHEDULER_LEADER_LOCK_KEY]).catch(() => undefined);
    await runner.release().catch(() => undefined);
  }

  /** RETRY_WAIT tasks whose backoff is over go back to the queue; their pools are woken. */
  private async promoteRetries(): Promise<void> {
    const rows: { id: string; pool: string; pipeline_run_id: string }[] = await sqlRows(this.db, 
      `UPDATE task_runs SET status = 'QUEUED', queued_at = now(), not_before = NULL
        WHERE id IN (SELECT id FROM task_runs WHERE status = 'RETRY_WAIT' AND not_before <= now() ORDER BY not_before LIMIT ${BATCH} FOR UPDATE SKIP LOCKED)
        RETURNING id, pool, pipeline_run_id`,
    );
    if (!rows.length) return;
    const events = new PendingEvents();
    for (const r of rows) {
      events.task(r.pipeline_run_id, r.id);
      events.pools.add(r.pool);
    }
    await events.publish(this.bus);
  }

  private async reapExpiredLeases(): Promise<void> {
    const ids: { id: string }[] = await sqlRows(this.db, 
      `SELECT id FROM task_runs WHERE status IN ('CLAIMED','RUNNING') AND lease_expires_at < now() ORDER BY lease_expires_at LIMIT ${BATCH}`,
    );
    for (const { id } of ids) {
      await this.failAttempt(id, `status IN ('CLAIMED','RUNNING') AND lease_expires_at < now()`, "EXECUTOR_LOST", "executor lost: lease expired without heartbeats");
    }
  }

  /** A backstop for executors that do not enforce timeouts: one lease past the deadline. */
  private async reapTimeouts(): Promise<void> {
    const condition = `status IN ('CLAIMED','RUNNING') AND claimed_at + (timeout_seconds + ${this.config.leaseSeconds}) * interval '1 second' < now()`;
    const ids: { id: string }[] = await sqlRows(this.db, `SELECT id FROM task_runs WHERE ${condition} LIMIT ${BATCH}`);
    for (const { id } of ids) await this.failAttempt(id, condition, "TIMED_OUT", "timed out (the executor did not stop it)");
  }

  private async failAttempt(id: string, condition: string, kind: "EXECUTOR_LOST" | "TIMED_OUT", message: string): Promise<void> {
    const events = new PendingEvents();
    const effects: FinishEffects | null = await inTransaction(this.db, async (em) => {
      // Re-checked under the row lock: a heartbeat or completion may have come in meanwhile.
      const rows: TaskRow[] = await sqlRows(em, `SELECT * FROM task_runs WHERE id = $1 AND ${condition} FOR UPDATE SKIP LOCKED`, [id]);
      if (!rows[0]) return null;
      const outcome = rows[0].cancel_requested ? "CANCELLED" : kind;
      return this.queue.finishAttempt(em, rows[0], outcome, { exitCode: null, error: rows[0].cancel_requested ? "cancelled" : message }, events);
    });
    if (!effects) return;
    this.log.warn({ taskRunId: id, kind }, "task attempt failed by the scheduler");
    await this.queue.afterFinish(this.systemContext(), effects, events);
  }

  /**
   * Deletes executors OFFLINE for longer than the retention (each executor start registers a new
   * one). The conditions are repeated outside the sub-select so they are re-checked on the row
   * itself: an executor whose claim or heartbeat brings it back meanwhile is kept. One that claims
   * after being deleted is told NOT_FOUND and registers again.
   */
  private async pruneExecutors(): Promise<void> {
    const retention = this.config.executorRetentionSeconds;
    if (retention === 0) return;
    const gone = `status = 'OFFLINE' AND last_seen_at < now() - $1 * interval '1 second'
                  AND NOT EXISTS (SELECT 1 FROM task_runs t WHERE t.executor_id = executors.id AND t.status IN ('CLAIMED','RUNNING'))`;
    const deleted: { id: string }[] = await sqlRows(this.db,
      `DELETE FROM executors WHERE id IN (SELECT id FROM executors WHERE ${gone} LIMIT ${BATCH}) AND ${gone} RETURNING id`,
      [retention],
    );
    if (deleted.length) this.log.info({ executors: deleted.length }, "deleted executors offline past the retention");
  }

  /**
   * Forgets claim ids whose last call is long past: an hour, or two leases if that is longer. A
   * task a forgotten claim took was reaped long before (a replay extends its lease by one lease
   * from the call), so a resend that late simply claims anew. Bounded per tick; at claim rates the
   * queue can sustain this keeps up.
   */
  private async pruneClaimRecords(): Promise<void> {
    const keepSeconds = Math.max(3600, 2 * this.config.leaseSeconds);
    await sqlRows(this.db,
      `DELETE FROM executor_claims WHERE ctid = ANY(ARRAY(SELECT ctid FROM executor_claims WHERE last_call_at < now() - $1 * interval '1 second' LIMIT 5000))`,
      [keepSeconds],
    );
  }

  private async markOfflineExecutors(): Promise<void> {
    await sqlRows(this.db, `UPDATE executors SET status = 'OFFLINE' WHERE status = 'ONLINE' AND last_seen_at < now() - $1 * interval '1 second'`, [
      this.config.executorOfflineSeconds,
    ]);
  }
}
