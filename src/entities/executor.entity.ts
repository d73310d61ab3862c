import { Entity, PrimaryGeneratedColumn, Column, CreateDateColumn } from "typeorm";
import { Field, Float, ID, Int, ObjectType } from "type-graphql";
import { GraphQLJSON } from "graphql-scalars";

@ObjectType({ description: "A GPU an executor offers to tasks." })
export class Gpu {
  @Field(() => Int, { description: "Device index, as CUDA_VISIBLE_DEVICES takes it." })
  index: number;

  @Field({ description: "Product name, e.g. \"NVIDIA H100 80GB HBM3\"; \"unknown\" when only a count was configured." })
  model: string;

  @Field(() => Int, { nullable: true, description: "Total memory in MiB, when known." })
  memoryMb: number | null;
}

export enum ExecutorStatus {
  ONLINE = "ONLINE",
  OFFLINE = "OFFLINE",
}

@Entity({ name: "executors" })
@ObjectType({ description: "A pull-based executor process serving one pool." })
export class Executor {
  @PrimaryGeneratedColumn("uuid")
  @Field(() => ID)
  id: string;

  @Column({ type: "text" })
  @Field({ description: "Display name (host name by default)." })
  name: string;

  @Column({ type: "text" })
  @Field({ description: "The pool it claims tasks from." })
  pool: string;

  @Column({ type: "jsonb" })
  @Field(() => GraphQLJSON, { description: "Free-form labels." })
  labels: Record<string, string>;

  @Column({ type: "double precision" })
  @Field(() => Float, { description: "CPU cores it offers." })
  cpu: number;

  @Column({ name: "memory_mb", type: "integer" })
  @Field(() => Int, { description: "Memory it offers, in MiB." })
  memoryMb: number;

  @Column({ type: "jsonb" })
  @Field(() => [Gpu], { description: "GPUs it offers." })
  gpus: Gpu[];

  @Column({ type: "text" })
  @Field({ description: "ONLINE, or OFFLINE when it has not been seen for the offline timeout." })
  status: ExecutorStatus;

  @Column({ name: "registered_by", type: "text" })
  registeredBy: string;

  @Column({ name: "last_seen_at", type: "timestamptz" })
  @Field({ description: "Last claim or heartbeat." })
  lastSeenAt: Date;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  @Field({ description: "When it registered." })
  createdAt: Date;
}
