import { Entity, PrimaryGeneratedColumn, Column, CreateDateColumn } from "typeorm";
import { Field, ID, ObjectType, registerEnumType } from "type-graphql";
import { ModelStage } from "./model-version.entity.js";

export enum StageTransitionStatus {
  PENDING = "PENDING",
  APPROVED = "APPROVED",
  REJECTED = "REJECTED",
}
registerEnumType(StageTransitionStatus, { name: "StageTransitionStatus", description: "Where a stage transition request stands." });

/** One result of the approval policy, stored with the request. */
export interface ApprovalCheckResult {
  name: string;
  passed: boolean;
  detail: string;
}

@Entity({ name: "stage_transition_requests" })
@ObjectType({ description: "A request to move a model version to another stage, with the approval policy's check results." })
export class StageTransitionRequest {
  @PrimaryGeneratedColumn("uuid")
  @Field(() => ID, { description: "Request id." })
  id: string;

  @Column({ name: "model_version_id", type: "uuid" })
  modelVersionId: string;

  @Column({ name: "from_stage", type: "text" })
  @Field(() => ModelStage, { description: "Stage of the version when the request was made." })
  fromStage: ModelStage;

  @Column({ name: "to_stage", type: "text" })
  @Field(() => ModelStage, { description: "Requested stage." })
  toStage: ModelStage;

  @Column({ type: "text" })
  @Field(() => StageTransitionStatus, { description: "PENDING until approved or rejected." })
  status: StageTransitionStatus;

  @Column({ type: "jsonb" })
  checks: ApprovalCheckResult[];

  @Column({ type: "text", nullable: true })
  @Field(() => String, { nullable: true, description: "The requester's comment." })
  comment: string | null;

  @Column({ name: "requested_by", type: "text" })
  @Field({ description: "Name of the requester." })
  requestedBy: string;

  @Column({ name: "requested_by_id", type: "text" })
  requestedById: string;

  @Column({ name: "decided_by", type: "text", nullable: true })
  @Field(() => String, { nullable: true, description: "Who approved or rejected it." })
  decidedBy: string | null;

  @Column({ name: "decided_by_id", type: "text", nullable: true })
  decidedById: string | null;

  @Column({ name: "decision_comment", type: "text", nullable: true })
  @Field(() => String, { nullable: true, description: "Why it was approved or rejected." })
  decisionComment: string | null;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  @Field({ description: "When it was requested." })
  createdAt: Date;

  @Column({ name: "decided_at", type: "timestamptz", nullable: true })
  @Field(() => Date, { nullable: true, description: "When it was decided." })
  decidedAt: Date | null;
}
