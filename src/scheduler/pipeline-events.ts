import type { EventBus } from "../stores/event-bus/event-bus.js";

/** Event-bus topics of pipelines; payloads are ids only, subscribers re-read current state. */
export const pipelineTopics = {
  /** Something was queued in a pool (or resources freed there): idle claimers should look again. */
  queue: (pool: string) => `pipelines:queue:${pool}`,
  pipelineRun: (pipelineRunId: string) => `pipelines:run:${pipelineRunId}`,
  taskRuns: (pipelineRunId: string) => `pipelines:run:${pipelineRunId}:tasks`,
  taskLogs: (taskRunId: string) => `pipelines:task:${taskRunId}:logs`,
};

export interface PipelineRunEvent {
  pipelineRunId: string;
}

export interface TaskRunEvent {
  pipelineRunId: string;
  taskRunId: string;
}

export interface TaskLogEvent {
  taskRunId: string;
  fromLine: number;
  lines: string[];
}

/**
 * What a state change needs to announce once its transaction has committed (announcing earlier
 * would let a subscriber read the old state). Collected while the transaction runs.
 */
export class PendingEvents {
  readonly pools = new Set<string>();
  readonly pipelineRuns = new Set<string>();
  readonly taskRuns = new Map<string, string>();
  /** Pipeline runs that reached a final state in the transaction. */
  readonly finished = new Set<string>();

  task(pipelineRunId: string, taskRunId: string): void {
    this.taskRuns.set(taskRunId, pipelineRunId);
  }

  merge(other: PendingEvents): void {
    other.pools.forEach((p) => this.pools.add(p));
    other.pipelineRuns.forEach((p) => this.pipelineRuns.add(p));
    other.taskRuns.forEach((run, task) => this.taskRuns.set(task, run));
    other.finished.forEach((p) => this.finished.add(p));
  }

  async publish(bus: EventBus): Promise<void> {
    const sends: Promise<void>[] = [];
    for (const [taskRunId, pipelineRunId] of this.taskRuns) {
      sends.push(bus.publish(pipelineTopics.taskRuns(pipelineRunId), { pipelineRunId, taskRunId } satisfies TaskRunEvent));
    }
    for (const pipelineRunId of this.pipelineRuns) {
      sends.push(bus.publish(pipelineTopics.pipelineRun(pipelineRunId), { pipelineRunId } satisfies PipelineRunEvent));
    }
    for (const pool of this.pools) sends.push(bus.publish(pipelineTopics.queue(pool), {}));
    await Promise.all(sends);
  }
}
