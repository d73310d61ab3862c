import { Entity, Column, ManyToOne, JoinColumn, PrimaryColumn } from "typeorm";
import type { Experiment } from "./experiment.entity.js";

@Entity({ name: "experiment_tags" })
export class ExperimentTag {
  @PrimaryColumn({ name: "experiment_id", type: "uuid" })
  experimentId: string;

  @PrimaryColumn({ type: "text" })
  key: string;

  @Column({ type: "text" })
  value: string;

  @ManyToOne("Experiment", "tags", { onDelete: "CASCADE" })
  @JoinColumn({ name: "experiment_id" })
  experiment: Experiment;
}
