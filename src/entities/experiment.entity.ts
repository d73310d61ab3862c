import { Entity, PrimaryGeneratedColumn, Column, CreateDateColumn, UpdateDateColumn, OneToMany } from "typeorm";
import { Field, ID, ObjectType } from "type-graphql";
import { ExperimentTag } from "./experiment-tag.entity.js";

@Entity({ name: "experiments" })
@ObjectType({ description: "A named group of runs, e.g. one modelling question." })
export class Experiment {
  @PrimaryGeneratedColumn("uuid")
  @Field(() => ID)
  id: string;

  @Column({ type: "text" })
  @Field({ description: "Unique name." })
  name: string;

  @Column({ type: "text", nullable: true })
  @Field(() => String, { nullable: true, description: "Free text." })
  description: string | null;

  @OneToMany(() => ExperimentTag, (t) => t.experiment, { cascade: true })
  tags: ExperimentTag[];

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  @Field({ description: "When the experiment was created." })
  createdAt: Date;

  @UpdateDateColumn({ name: "updated_at", type: "timestamptz" })
  @Field({ description: "When the experiment was last changed." })
  updatedAt: Date;

  @Column({ name: "deleted_at", type: "timestamptz", nullable: true })
  @Field(() => Date, { nullable: true, description: "Set while the experiment is soft-deleted; restoreExperiment clears it." })
  deletedAt: Date | null;
}
