import DataLoader from "dataloader";
import type { AppServices } from "./app-services.js";
import type { Pipeline } from "../entities/pipeline.entity.js";
import type { PipelineVersion } from "../entities/pipeline-version.entity.js";
import type { TaskRun } from "../entities/task-run.entity.js";
import type { PipelineRun } from "../entities/pipeline-run.entity.js";
import type { Page } from "./pagination.js";
import type { Executor } from "../entities/executor.entity.js";
import type { TaskAttemptView } from "./pipeline-runs.service.js";

/** Per-request loaders of the pipeline types (merged into createLoaders). */
export function createPipelineLoaders(services: AppServices) {
  const byId = <T extends { id: string }>(ids: readonly string[], rows: T[]) => {
    const map = new Map(rows.map((r) => [r.id, r]));
    return ids.map((id) => map.get(id) ?? null);
  };
  return {
    pipelineById: new DataLoader<string, Pipeline | null>(async (ids) => byId(ids, await services.pipelines.pipelinesByIds(ids))),
    pipelineVersionById: new DataLoader<string, PipelineVersion | null>(async (ids) => byId(ids, await services.pipelines.versionsByIds(ids))),
    pipelineVersionsOf: new DataLoader<string, PipelineVersion[]>(async (ids) => {
      const map = await services.pipelines.versionsFor(ids);
      return ids.map((id) => map.get(id) ?? []);
    }),
    latestPipelineVersion: new DataLoader<string, PipelineVersion | null>(async (ids) => {
      const latest = new Map((await services.pipelines.latestVersionsOf(ids)).map((v) => [v.pipelineId, v]));
      return ids.map((id) => latest.get(id) ?? null);
    }),
    /** Key: `${JSON of { first, after }}\u0000${pipelineId}`; one statement per distinct page request. */
    runsOfPipeline: new DataLoader<string, Page<PipelineRun>>(async (keys) => {
      const byArgs = new Map<string, string[]>();
      for (const key of keys) {
        const at = key.lastIndexOf("\u0000");
        byArgs.set(key.slice(0, at), [...(byArgs.get(key.slice(0, at)) ?? []), key.slice(at + 1)]);
      }
      const pages = new Map<string, Page<PipelineRun>>();
      for (const [args, pipelineIds] of byArgs) {
        for (const [id, page] of await services.pipelineRuns.runsOfPipelines(pipelineIds, JSON.parse(args))) pages.set(`${args}\u0000${id}`, page);
      }
      return keys.map((k) => pages.get(k)!);
    }),
    tasksOfPipelineRun: new DataLoader<string, TaskRun[]>(async (ids) => {
      const map = await services.pipelineRuns.tasksFor(ids);
      return ids.map((id) => map.get(id) ?? []);
    }),
    executorById: new DataLoader<string, Executor | null>(async (ids) => byId(ids, await services.pipelineRuns.executorsByIds(ids))),
    runningTasksOfExecutor: new DataLoader<string, TaskRun[]>(async (ids) => {
      const map = await services.pipelineRuns.runningTasksFor(ids);
      return ids.map((id) => map.get(id) ?? []);
    }),
    taskRunById: new DataLoader<string, TaskRun | null>(async (ids) => byId(ids, await services.pipelineRuns.taskRunsByIds(ids))),
    attemptsOfTaskRun: new DataLoader<string, TaskAttemptView[]>(async (ids) => {
      const map = await services.pipelineRuns.attemptsFor(ids);
      return ids.map((id) => map.get(id) ?? []);
    }),
    /** Keyed `fromLine \0 limit \0 taskRunId`: one statement per distinct window. */
    logsOfTaskRun: new DataLoader<string, string[]>(async (keys) => {
      const byWindow = new Map<string, string[]>();
      for (const key of keys) {
        const at = key.lastIndexOf("\u0000");
        const window = key.slice(0, at);
        byWindow.set(window, [...(byWindow.get(window) ?? []), key.slice(at + 1)]);
      }
      const lines = new Map<string, string[]>();
      for (const [window, ids] of byWindow) {
        const [fromLine, limit] = window.split("\u0000").map(Number);
        const map = await services.pipelineRuns.logsFor(ids, fromLine!, limit!);
        for (const id of ids) lines.set(`${window}\u0000${id}`, map.get(id) ?? []);
      }
      return keys.map((k) => lines.get(k) ?? []);
    }),
    /** Run id → id of the task run whose attempt it was. */
    taskRunIdOfRun: new DataLoader<string, string | null>(async (ids) => {
      const rows = await services.pipelineRuns.taskRunsByRunIds(ids);
      const map = new Map(rows.map((r) => [r.runId, r.id]));
      return ids.map((id) => map.get(id) ?? null);
    }),
  };
}
