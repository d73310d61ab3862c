import { Entity, Column, PrimaryColumn } from "typeorm";
import { Field, ObjectType } from "type-graphql";

@Entity({ name: "run_params" })
@ObjectType("Param", { description: "A hyperparameter; immutable once logged." })
export class RunParam {
  @PrimaryColumn({ name: "run_id", type: "uuid" })
  runId: string;

  @PrimaryColumn({ type: "text" })
  @Field({ description: "Parameter name." })
  key: string;

  @Column({ type: "text" })
  @Field({ description: "Value as logged (a string, like MLflow)." })
  value: string;
}
