import { Entity, Column, PrimaryColumn } from "typeorm";

@Entity({ name: "run_tags" })
export class RunTag {
  @PrimaryColumn({ name: "run_id", type: "uuid" })
  runId: string;

  @PrimaryColumn({ type: "text" })
  key: string;

  @Column({ type: "text" })
  value: string;
}
