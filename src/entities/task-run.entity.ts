import { Entity, PrimaryGeneratedColumn, Column, CreateDateColumn } from "typeorm";
import { Field, ID, Int, ObjectType, registerEnumType } from "type-graphql";

export enum TaskRunStatus {
  PENDING = "PENDING",
  QUEUED = "QUEUED",
  CLAIMED = "CLAIMED",
  RUNNING = "RUNNING",
  RETRY_WAIT = "RETRY_WAIT",
  SUCCEEDED = "SUCCEEDED",
  FAILED = "FAILED",
  CANCELLED = "CANCELLED",
  UPSTREAM_FAILED = "UPSTREAM_FAILED",
}
registerEnumType(TaskRunStatus, {
  name: "TaskRunStatus",
  description: "PENDING (waiting on dependencies), QUEUED, CLAIMED, RUNNING, RETRY_WAIT (backing off), then a final state.",
});

export const TERMINAL_TASK_STATUSES: readonly TaskRunStatus[] = [
  TaskRunStatus.SUCCEEDED,
  TaskRunStatus.FAILED,
  TaskRunStatus.CANCELLED,
  TaskRunStatus.UPSTREAM_FAILED,
];

@Entity({ name: "task_runs" })
@ObjectType({ description: "One task of a pipeline run; it is also the queue entry executors claim." })
export class TaskRun {
  @PrimaryGeneratedColumn("uuid")
  @Field(() => ID)
  id: string;

  @Column({ name: "pipeline_run_id", type: "uuid" })
  pipelineRunId: string;

  @Column({ name: "task_id", type: "text" })
  @Field({ description: "The task's id in the spec." })
  taskId: string;

  @Column({ type: "text" })
  @Field(() => TaskRunStatus, { description: "Where the task stands." })
  status: TaskRunStatus;

  @Column({ type: "integer" })
  @Field(() => Int, { description: "Current (or last) attempt, 1-based." })
  attempt: number;

  @Column({ name: "max_attempts", type: "integer" })
  @Field(() => Int, { description: "retries + 1: the attempts that count; attempts handed back NOT_STARTED (uncountedAttempts) come on top." })
  maxAttempts: number;

  @Column({ name: "uncounted_attempts", type: "integer", default: 0 })
  @Field(() => Int, {
    description:
      "Attempts that did not count against the task's retries: handed back NOT_STARTED by an executor that could not set them up (see TaskOutcome.NOT_STARTED). At most 10; later such attempts count as failed ones.",
  })
  uncountedAttempts: number;

  @Column({ name: "retry_backoff_seconds", type: "double precision" })
  retryBackoffSeconds: number;

  @Column({ name: "timeout_seconds", type: "integer" })
  @Field(() => Int, { description: "An attempt running longer is stopped and fails." })
  timeoutSeconds: number;

  @Column({ type: "text" })
  @Field({ description: "Executor pool that runs it." })
  pool: string;

  @Column({ type: "integer" })
  priority: number;

  @Column({ type: "double precision" })
  cpu: number;

  @Column({ name: "memory_mb", type: "integer" })
  memoryMb: number;

  @Column({ type: "integer" })
  gpus: number;

  @Column({ name: "gpu_type", type: "text", nullable: true })
  gpuType: string | null;

  @Column({ name: "executor_id", type: "uuid", nullable: true })
  executorId: string | null;

  @Column({ name: "assigned_gpus", type: "integer", array: true })
  @Field(() => [Int], { description: "GPU indices on the executor given to the current attempt." })
  assignedGpus: number[];

  @Column({ name: "lease_token", type: "text", nullable: true })
  leaseToken: string | null;

  @Column({ name: "lease_expires_at", type: "timestamptz", nullable: true })
  @Field(() => Date, { nullable: true, description: "When the live attempt's lease runs out unless heartbeats extend it." })
  leaseExpiresAt: Date | null;

  @Column({ name: "run_id", type: "uuid", nullable: true })
  runId: string | null;

  @Column({ name: "token_id", type: "uuid", nullable: true })
  tokenId: string | null;

  @Column({ type: "jsonb", nullable: true })
  checkpoint: unknown;

  @Column({ name: "checkpoint_at", type: "timestamptz", nullable: true })
  checkpointAt: Date | null;

  @Column({ name: "checkpoint_attempt", type: "integer", nullable: true })
  checkpointAttempt: number | null;

  @Column({ name: "cancel_requested", type: "boolean" })
  @Field({ description: "Cancellation was requested; the executor is asked to stop the process." })
  cancelRequested: boolean;

  @Column({ name: "exit_code", type: "integer", nullable: true })
  @Field(() => Int, { nullable: true, description: "Exit code of the last attempt's process." })
  exitCode: number | null;

  @Column({ type: "text", nullable: true })
  @Field(() => String, { nullable: true, description: "Why the last attempt failed." })
  error: string | null;

  @Column({ name: "failure_kind", type: "text", nullable: true })
  @Field(() => String, { nullable: true, description: "FAILED, EXECUTOR_LOST, TIMED_OUT, CANCELLED or NOT_STARTED for the last attempt that did not succeed." })
  failureKind: string | null;

  @Column({ name: "log_lines", type: "integer" })
  @Field(() => Int, { description: "Number of log lines stored." })
  logLines: number;

  @Column({ name: "queued_at", type: "timestamptz", nullable: true })
  @Field(() => Date, { nullable: true, description: "When it last entered the queue." })
  queuedAt: Date | null;

  @Column({ name: "not_before", type: "timestamptz", nullable: true })
  @Field(() => Date, { nullable: true, description: "In RETRY_WAIT: when the next attempt may be queued." })
  notBefore: Date | null;

  @Column({ name: "claimed_at", type: "timestamptz", nullable: true })
  claimedAt: Date | null;

  @Column({ name: "started_at", type: "timestamptz", nullable: true })
  @Field(() => Date, { nullable: true, description: "When the current attempt started running." })
  startedAt: Date | null;

  @Column({ name: "finished_at", type: "timestamptz", nullable: true })
  @Field(() => Date, { nullable: true, description: "When the task reached a final state." })
  finishedAt: Date | null;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt: Date;
}
