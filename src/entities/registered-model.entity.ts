import { Entity, PrimaryGeneratedColumn, Column, CreateDateColumn, UpdateDateColumn } from "typeorm";
import { Field, ObjectType } from "type-graphql";

/** What a model's approval policy checks when a stage transition is requested. */
export interface ApprovalPolicy {
  /** Headings the model card must contain, each with some text below it. */
  requiredModelCardSections?: string[];
  /** Run-filter expressions the source run must satisfy, e.g. `metrics.fairness_gap <= 0.05`. */
  metricThresholds?: string[];
  /** Target stages the policy applies to (default: PRODUCTION only). */
  appliesToStages?: string[];
}

@Entity({ name: "registered_models" })
@ObjectType({ description: "A named model in the registry; its versions, aliases and approval policy." })
export class RegisteredModel {
  @PrimaryGeneratedColumn("uuid")
  id: string;

  @Column({ type: "text" })
  @Field({ description: "Unique name." })
  name: string;

  @Column({ type: "text", nullable: true })
  @Field(() => String, { nullable: true, description: "Free text." })
  description: string | null;

  @Column({ name: "approval_policy", type: "jsonb" })
  approvalPolicy: ApprovalPolicy;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  @Field({ description: "When the model was registered." })
  createdAt: Date;

  @UpdateDateColumn({ name: "updated_at", type: "timestamptz" })
  @Field({ description: "Last change to name, description, tags or policy." })
  updatedAt: Date;
}
