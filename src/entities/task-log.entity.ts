import { Entity, Column, CreateDateColumn, PrimaryColumn } from "typeorm";

/** One line of a task's stdout/stderr; numbered per task run across attempts. */
@Entity({ name: "task_logs" })
export class TaskLogLine {
  @PrimaryColumn({ name: "task_run_id", type: "uuid" })
  taskRunId: string;

  @PrimaryColumn({ name: "line_no", type: "integer" })
  lineNo: number;

  @Column({ type: "integer" })
  attempt: number;

  @Column({ type: "text" })
  line: string;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt: Date;
}
