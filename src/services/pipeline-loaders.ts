import DataLoader from "dataloader";
import type { AppServices } from "./app-services.js";
import type { Pipeline } from "../entities/pipeline.entity.js";
import type { PipelineVersion } from "../entities/pipeline-version.entity.js";
import type { TaskRun } from "../entities/task-run.entity.js";
import type { PipelineRun } from "../entities/pipeline-run.entity.js";
import { EMPTY_PAGE, type Page, type PageArgs } from "./pagination.js";
import { loaderByArgs } from "./grouped-loader.js";
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
    /** Pipeline.runs: one statement per distinct page request, a window per pipeline. */
    runsOfPipeline: loaderByArgs<PageArgs, Page<PipelineRun>>((pipelineIds, args) => services.pipelineRuns.runsOfPipelines(pipelineIds, args), EMPTY_PAGE),
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
    /** TaskRun.logs: one statement per distinct (fromLine, limit). */
    logsOfTaskRun: loaderByArgs<{ fromLine: number; limit: number }, string[]>((ids, w) => services.pipelineRuns.logsFor(ids, w.fromLine, w.limit), []),
    /** Run id → id of the task run whose attempt it was. */
    taskRunIdOfRun: new DataLoader<string, string | null>(async (ids) => {
      const rows = await services.pipelineRuns.taskRunsByRunIds(ids);
      const map = new Map(rows.map((r) => [r.runId, r.id]));
      return ids.map((id) => map.get(id) ?? null);
    }),
  };
}
