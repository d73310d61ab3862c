import { Entity, PrimaryGeneratedColumn, Column, CreateDateColumn } from "typeorm";
import { Field, ID, Int, ObjectType } from "type-graphql";
import { GraphQLJSON } from "graphql-scalars";
import type { PipelineSpec } from "../scheduler/spec/index.js";

@Entity({ name: "pipeline_versions" })
@ObjectType({ description: "An immutable, validated and normalized pipeline spec, identified by its content hash." })
export class PipelineVersion {
  @PrimaryGeneratedColumn("uuid")
  @Field(() => ID)
  id: string;

  @Column({ name: "pipeline_id", type: "uuid" })
  pipelineId: string;

  @Column({ type: "integer" })
  @Field(() => Int, { description: "1, 2, … per pipeline; the same spec submitted again keeps its number." })
  version: number;

  @Column({ name: "content_hash", type: "text" })
  @Field({ description: "sha256 of the normalized spec's canonical JSON." })
  contentHash: string;

  @Column({ type: "jsonb" })
  @Field(() => GraphQLJSON, { description: "The normalized spec (defaults filled in)." })
  spec: PipelineSpec;

  @Column({ name: "created_by", type: "text" })
  @Field({ description: "Who created this version." })
  createdBy: string;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  @Field({ description: "When this version was first created." })
  createdAt: Date;
}
