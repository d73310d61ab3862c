import { Entity, PrimaryGeneratedColumn, Column, CreateDateColumn, UpdateDateColumn } from "typeorm";
import { Field, ID, Int, ObjectType, registerEnumType } from "type-graphql";

export enum ModelStage {
  NONE = "NONE",
  STAGING = "STAGING",
  PRODUCTION = "PRODUCTION",
  ARCHIVED = "ARCHIVED",
}
registerEnumType(ModelStage, { name: "ModelStage", description: "Deployment stage of a model version; at most one PRODUCTION version per model." });

@Entity({ name: "model_versions" })
@ObjectType({ description: "One registered version of a model: an artifact of a run, with stage, aliases and lineage." })
export class ModelVersion {
  @PrimaryGeneratedColumn("uuid")
  @Field(() => ID, { description: "Opaque id of the version." })
  id: string;

  @Column({ name: "model_id", type: "uuid" })
  modelId: string;

  @Column({ type: "int" })
  @Field(() => Int, { description: "1, 2, 3 … per model, assigned atomically." })
  version: number;

  @Column({ name: "run_id", type: "uuid" })
  runId: string;

  @Column({ name: "artifact_path", type: "text" })
  @Field({ description: "Path of the model artifact inside the source run's artifacts." })
  artifactPath: string;

  @Column({ name: "artifact_key", type: "text" })
  artifactKey: string;

  @Column({ type: "text", nullable: true })
  @Field(() => String, { nullable: true, description: "Free text." })
  description: string | null;

  @Column({ name: "model_card", type: "text", nullable: true })
  @Field(() => String, { nullable: true, description: "Markdown model card; approval policies check its sections." })
  modelCard: string | null;

  @Column({ type: "text" })
  @Field(() => ModelStage, { description: "Current stage." })
  stage: ModelStage;

  @Column({ type: "text" })
  @Field({ description: "READY once the artifact was verified (the only status today)." })
  status: string;

  @Column({ name: "created_by", type: "text" })
  @Field({ description: "Who registered the version." })
  createdBy: string;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  @Field({ description: "When the version was registered." })
  createdAt: Date;

  @UpdateDateColumn({ name: "updated_at", type: "timestamptz" })
  @Field({ description: "Last stage or description change." })
  updatedAt: Date;

  /**
   * The createModelVersion idempotency key it was made with, and its input's fingerprint (see
   * services/idempotency.ts). Written once; not loaded with the version (select: false) and not in
   * the schema: only a resend's lookup reads them.
   */
  @Column({ name: "idempotency_key", type: "text", nullable: true, select: false })
  idempotencyKey?: string | null;

  @Column({ name: "idempotency_fingerprint", type: "text", nullable: true, select: false })
  idempotencyFingerprint?: string | null;
}
