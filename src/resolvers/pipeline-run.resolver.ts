import { Arg, Authorized, Ctx, FieldResolver, ID, Int, Mutation, Query, Resolver, Root, Subscription } from "type-graphql";
import { PipelineRun, PipelineRunStatus } from "../entities/pipeline-run.entity.js";
import { PipelineVersion } from "../entities/pipeline-version.entity.js";
import { TaskRun } from "../entities/task-run.entity.js";
import { Executor } from "../entities/executor.entity.js";
import { Run } from "../entities/run.entity.js";
import { ModelVersion } from "../entities/model-version.entity.js";
import type { RequestContext } from "../services/context.js";
import { toConnection } from "./types/common.types.js";
import { Checkpoint, PipelineRunConnection, SubmitPipelineRunInput, TaskAttempt, TaskLogBatch } from "./types/pipeline.types.js";
import { argsKey } from "../services/grouped-loader.js";

@Resolver(() => PipelineRun)
export class PipelineRunResolver {
  @Authorized("viewer")
  @Query(() => PipelineRun, { nullable: true, description: "A pipeline run by id." })
  pipelineRun(@Ctx() ctx: RequestContext, @Arg("id", () => ID, { description: "Pipeline run id." }) id: string) {
    return ctx.services.pipelineRuns.get(ctx, id);
  }

  @Authorized("viewer")
  @Query(() => PipelineRunConnection, { description: "Pipeline runs, newest first." })
  async pipelineRuns(
    @Ctx() ctx: RequestContext,
    @Arg("pipelineName", () => String, { nullable: true, description: "Only runs of this pipeline." }) pipelineName?: string,
    @Arg("status", () => [PipelineRunStatus], { nullable: true, description: "Only runs in these states." }) status?: PipelineRunStatus[],
    @Arg("first", () => Int, { nullable: true, description: "Page size (default 50, at most 1000)." }) first?: number,
    @Arg("after", () => String, { nullable: true, description: "Cursor from a previous page." }) after?: string,
  ) {
    return toConnection(await ctx.services.pipelineRuns.list(ctx, { pipelineName, status, first, after }));
  }

  @Authorized("viewer")
  @Query(() => TaskRun, { nullable: true, description: "A task run by id." })
  taskRun(@Ctx() ctx: RequestContext, @Arg("id", () => ID, { description: "Task run id." }) id: string) {
    return ctx.services.pipelineRuns.taskRun(ctx, id);
  }

  @Authorized("editor")
  @Mutation(() => PipelineRun, { description: "Runs a pipeline version: coerces params, materialises task runs, queues the roots." })
  submitPipelineRun(@Ctx() ctx: RequestContext, @Arg("input", () => SubmitPipelineRunInput, { description: "What to run." }) input: SubmitPipelineRunInput) {
    return ctx.services.pipelineRuns.submit(ctx, input);
  }

  @Authorized("editor")
  @Mutation(() => PipelineRun, { description: "Cancels queued tasks and asks running ones to stop; the run ends CANCELLED." })
  cancelPipelineRun(@Ctx() ctx: RequestContext, @Arg("id", () => ID, { description: "Pipeline run id." }) id: string) {
    return ctx.services.pipelineRuns.cancel(ctx, id);
  }

  @Authorized("viewer")
  @Subscription(() => PipelineRun, {
    description: "The pipeline run whenever its status or progress changes.",
    subscribe: ({ args, context }) => (context as RequestContext).services.pipelineRuns.pipelineRunUpdated(context as RequestContext, (args as { id: string }).id),
  })
  pipelineRunUpdated(@Root() run: PipelineRun, @Arg("id", () => ID, { description: "Pipeline run id." }) _id: string): PipelineRun {
    return run;
  }

  @Authorized("viewer")
  @Subscription(() => TaskRun, {
    description: "A task run of the pipeline run whenever it changes (queued, claimed, running, retried, finished).",
    subscribe: ({ args, context }) =>
      (context as RequestContext).services.pipelineRuns.taskRunUpdated(context as RequestContext, (args as { pipelineRunId: string }).pipelineRunId),
  })
  taskRunUpdated(@Root() task: TaskRun, @Arg("pipelineRunId", () => ID, { description: "Pipeline run id." }) _pipelineRunId: string): TaskRun {
    return task;
  }

  @Authorized("viewer")
  @Subscription(() => TaskLogBatch, {
    description: "A task run's log: stored lines from fromLine first, then new lines as the executor sends them.",
    subscribe: ({ args, context }) => {
      const a = args as { taskRunId: string; fromLine?: number | null };
      return (context as RequestContext).services.pipelineRuns.taskLogs(context as RequestContext, a.taskRunId, a.fromLine ?? 0);
    },
  })
  taskLogs(
    @Root() batch: TaskLogBatch,
    @Arg("taskRunId", () => ID, { description: "Task run id." }) _taskRunId: string,
    @Arg("fromLine", () => Int, { nullable: true, description: "First line to replay (0-based, default 0)." }) _fromLine?: number,
  ): TaskLogBatch {
    return batch;
  }

  @FieldResolver(() => PipelineVersion, { description: "The version that runs." })
  async pipelineVersion(@Root() run: PipelineRun, @Ctx() ctx: RequestContext) {
    return ctx.loaders.pipelineVersionById.load(run.pipelineVersionId);
  }

  @FieldResolver(() => String, { description: "The pipeline's name." })
  async pipelineName(@Root() run: PipelineRun, @Ctx() ctx: RequestContext) {
    return (await ctx.loaders.pipelineById.load(run.pipelineId))?.name;
  }

  @FieldResolver(() => [TaskRun], { description: "Its task runs." })
  tasks(@Root() run: PipelineRun, @Ctx() ctx: RequestContext) {
    return ctx.loaders.tasksOfPipelineRun.load(run.id);
  }

  @FieldResolver(() => ModelVersion, { nullable: true, description: "The model version on_success.register_model created." })
  async registeredModelVersion(@Root() run: PipelineRun, @Ctx() ctx: RequestContext) {
    if (!run.registeredModelName || run.registeredModelVersion == null) return null;
    return ctx.loaders.modelVersionByNumber.load(`${run.registeredModelVersion}\u0000${run.registeredModelName}`);
  }
}

@Resolver(() => TaskRun)
export class TaskRunResolver {
  @FieldResolver(() => Executor, { nullable: true, description: "Executor of the current (or last) attempt." })
  executor(@Root() task: TaskRun, @Ctx() ctx: RequestContext) {
    return task.executorId ? ctx.loaders.executorById.load(task.executorId) : null;
  }

  @FieldResolver(() => Run, { nullable: true, description: "Tracking run of the current (or last) attempt." })
  run(@Root() task: TaskRun, @Ctx() ctx: RequestContext) {
    return task.runId ? ctx.loaders.runById.load(task.runId) : null;
  }

  @FieldResolver(() => ID, { description: "The pipeline run it belongs to." })
  pipelineRunId(@Root() task: TaskRun): string {
    return task.pipelineRunId;
  }

  @FieldResolver(() => Checkpoint, { nullable: true, description: "The last checkpoint stored." })
  checkpoint(@Root() task: TaskRun): Checkpoint | null {
    if (!task.checkpointAt || task.checkpoint === null) return null;
    return { data: task.checkpoint, attempt: task.checkpointAttempt ?? 0, updatedAt: task.checkpointAt };
  }

  @FieldResolver(() => [String], { description: "Log lines from fromLine (0-based)." })
  logs(
    @Root() task: TaskRun,
    @Ctx() ctx: RequestContext,
    @Arg("fromLine", () => Int, { nullable: true, description: "First line (default 0)." }) fromLine?: number,
    @Arg("limit", () => Int, { nullable: true, description: "At most this many (default 1000, at most 10,000)." }) limit?: number,
  ) {
    ctx.services.pipelineRuns.validateLogWindow(fromLine ?? 0, limit ?? 1000);
    return ctx.loaders.logsOfTaskRun.load(argsKey({ fromLine: fromLine ?? 0, limit: limit ?? 1000 }, task.id));
  }

  @FieldResolver(() => [TaskAttempt], { description: "Every attempt, oldest first." })
  attempts(@Root() task: TaskRun, @Ctx() ctx: RequestContext) {
    return ctx.loaders.attemptsOfTaskRun.load(task.id);
  }
}

@Resolver(() => Run)
export class RunTaskRunResolver {
  @FieldResolver(() => TaskRun, { nullable: true, description: "The pipeline task attempt this run tracks, if any." })
  async taskRun(@Root() run: Run, @Ctx() ctx: RequestContext) {
    const id = await ctx.loaders.taskRunIdOfRun.load(run.id);
    return id ? ctx.loaders.taskRunById.load(id) : null;
  }
}
