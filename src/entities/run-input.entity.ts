import { Entity, PrimaryColumn, CreateDateColumn } from "typeorm";

@Entity({ name: "run_inputs" })
export class RunInputRecord {
  @PrimaryColumn({ name: "run_id", type: "uuid" })
  runId: string;

  @PrimaryColumn({ name: "dataset_id", type: "uuid" })
  datasetId: string;

  /** e.g. "training", "validation"; "" when not given, so it can be part of the key. */
  @PrimaryColumn({ type: "text", default: "" })
  context: string;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt: Date;
}
