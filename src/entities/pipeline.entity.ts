import { Entity, PrimaryGeneratedColumn, Column, CreateDateColumn, UpdateDateColumn } from "typeorm";
import { Field, ID, ObjectType } from "type-graphql";

@Entity({ name: "pipelines" })
@ObjectType({ description: "A named pipeline: a DAG of tasks, kept as immutable versions." })
export class Pipeline {
  @PrimaryGeneratedColumn("uuid")
  @Field(() => ID)
  id: string;

  @Column({ type: "text" })
  @Field({ description: "Unique name (the spec's pipeline.name)." })
  name: string;

  @Column({ type: "text", nullable: true })
  @Field(() => String, { nullable: true, description: "The latest version's description." })
  description: string | null;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  @Field({ description: "When the first version was created." })
  createdAt: Date;

  @UpdateDateColumn({ name: "updated_at", type: "timestamptz" })
  @Field({ description: "When the latest version was created." })
  updatedAt: Date;
}
