import { Entity, PrimaryGeneratedColumn, Column, CreateDateColumn } from "typeorm";
import { Field, ID, Int, ObjectType, registerEnumType } from "type-graphql";
import { GraphQLJSON } from "graphql-scalars";
import type { ParamValue } from "../scheduler/spec/index.js";

export enum PipelineRunStatus {
  QUEUED = "QUEUED",
  RUNNING = "RUNNING",
  SUCCEEDED = "SUCCEEDED",
  FAILED = "FAILED",
  CANCELLED = "CANCELLED",
}
registerEnumType(PipelineRunStatus, { name: "PipelineRunStatus", description: "Lifecycle of a pipeline run; it follows its task runs." });

export const TERMINAL_PIPELINE_RUN_STATUSES: readonly PipelineRunStatus[] = [PipelineRunStatus.SUCCEEDED, PipelineRunStatus.FAILED, PipelineRunStatus.CANCELLED];

@Entity({ name: "pipeline_runs" })
@ObjectType({ description: "One execution of a pipeline version with coerced parameters." })
export class PipelineRun {
  @PrimaryGeneratedColumn("uuid")
  @Field(() => ID)
  id: string;

  @Column({ name: "pipeline_id", type: "uuid" })
  pipelineId: string;

  @Column({ name: "pipeline_version_id", type: "uuid" })
  pipelineVersionId: string;

  /** The experiment named after the pipeline; every task attempt's tracking run lives there. */
  @Column({ name: "experiment_id", type: "uuid" })
  experimentId: string;

  @Column({ type: "jsonb" })
  @Field(() => GraphQLJSON, { description: "Parameters after coercion to their declared types, defaults filled in." })
  params: Record<string, ParamValue>;

  @Column({ type: "integer" })
  @Field(() => Int, { description: "Higher runs first among queued tasks of a pool." })
  priority: number;

  @Column({ type: "text" })
  @Field(() => PipelineRunStatus, { description: "QUEUED, RUNNING, then SUCCEEDED, FAILED or CANCELLED." })
  status: PipelineRunStatus;

  @Column({ name: "tasks_total", type: "integer" })
  @Field(() => Int, { description: "Number of tasks." })
  tasksTotal: number;

  @Column({ name: "tasks_done", type: "integer" })
  @Field(() => Int, { description: "Tasks in a final state (succeeded, failed, cancelled or upstream-failed)." })
  tasksDone: number;

  @Column({ name: "tasks_failed", type: "integer" })
  tasksFailed: number;

  @Column({ name: "cancel_requested", type: "boolean" })
  @Field({ description: "cancelPipelineRun was called." })
  cancelRequested: boolean;

  @Column({ type: "text", nullable: true })
  @Field(() => String, { nullable: true, description: "Why the run failed, when it did (or why on_success did not complete)." })
  error: string | null;

  @Column({ name: "registered_model_name", type: "text", nullable: true })
  registeredModelName: string | null;

  @Column({ name: "registered_model_version", type: "integer", nullable: true })
  registeredModelVersion: number | null;

  @Column({ name: "created_by", type: "text" })
  @Field({ description: "Who submitted the run." })
  createdBy: string;

  /** The submitter's principal id (token id or OIDC subject); task tokens act on their behalf. Null for runs older than migration 0500. */
  @Column({ name: "created_by_id", type: "text", nullable: true })
  createdById: string | null;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  @Field({ description: "When the run was submitted." })
  createdAt: Date;

  @Column({ name: "started_at", type: "timestamptz", nullable: true })
  @Field(() => Date, { nullable: true, description: "When the first task was claimed." })
  startedAt: Date | null;

  @Column({ name: "finished_at", type: "timestamptz", nullable: true })
  @Field(() => Date, { nullable: true, description: "When the run reached a final state." })
  finishedAt: Date | null;
}
