import { Entity, PrimaryGeneratedColumn, Column, CreateDateColumn, Index } from "typeorm";
import { Field, ID, ObjectType, registerEnumType } from "type-graphql";

export enum RunStatus {
  RUNNING = "RUNNING",
  FINISHED = "FINISHED",
  FAILED = "FAILED",
  KILLED = "KILLED",
}
registerEnumType(RunStatus, { name: "RunStatus", description: "Lifecycle of a tracking run." });

@Entity({ name: "runs" })
@Index(["experimentId", "startTime"])
// Plain columns use graphql-js's default resolver (no per-field type-graphql wrapper: comparisons
// and searches list up to 1,000 runs); none has field-level auth or middleware.
@ObjectType({ simpleResolvers: true, description: "One execution of training code: params, tags, metrics, artifacts." })
export class Run {
  @PrimaryGeneratedColumn("uuid")
  @Field(() => ID)
  id: string;

  @Column({ name: "experiment_id", type: "uuid" })
  experimentId: string;

  @Column({ type: "text" })
  @Field({ description: "Display name; generated when not given." })
  name: string;

  @Column({ type: "text" })
  @Field(() => RunStatus, { description: "RUNNING until updateRun ends it." })
  status: RunStatus;

  @Column({ name: "start_time", type: "timestamptz" })
  @Field({ description: "When the run started." })
  startTime: Date;

  @Column({ name: "end_time", type: "timestamptz", nullable: true })
  @Field(() => Date, { nullable: true, description: "When the run ended; null while RUNNING." })
  endTime: Date | null;

  @Column({ name: "parent_run_id", type: "uuid", nullable: true })
  parentRunId: string | null;

  @Column({ name: "deleted_at", type: "timestamptz", nullable: true })
  deletedAt: Date | null;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt: Date;

  /**
   * The createRun idempotency key it was made with, and its input's fingerprint (see
   * services/idempotency.ts). Written once; not loaded with the run (select: false) and not in the
   * schema: only a resend's lookup reads them.
   */
  @Column({ name: "idempotency_key", type: "text", nullable: true, select: false })
  idempotencyKey?: string | null;

  @Column({ name: "idempotency_fingerprint", type: "text", nullable: true, select: false })
  idempotencyFingerprint?: string | null;
}
