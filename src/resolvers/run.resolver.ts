import { Arg, Authorized, Ctx, FieldResolver, ID, Int, Mutation, Query, Resolver, Root, Subscription } from "type-graphql";
import { Run } from "../entities/run.entity.js";
import { RunParam } from "../entities/run-param.entity.js";
import { Experiment } from "../entities/experiment.entity.js";
import type { RequestContext } from "../services/context.js";
import { ParamInput, Tag, TagInput, toConnection } from "./types/common.types.js";
import { CreateRunInput, DatasetInput, RunConnection, RunInputType, UpdateRunInput } from "./types/tracking.types.js";

@Resolver(() => Run)
export class RunResolver {
  @Authorized("viewer")
  @Query(() => Run, { nullable: true, description: "A run by id." })
  run(@Ctx() ctx: RequestContext, @Arg("id", () => ID, { description: "Run id." }) id: string): Promise<Run | null> {
    return ctx.services.runs.get(ctx, id);
  }

  @Authorized("viewer")
  @Query(() => RunConnection, {
    description:
      "Run search. filter: MLflow-style, e.g. \"metrics.val_loss < 0.3 and params.lr = '0.01' and tags.team = 'nlp'\" (AND and OR, parentheses).",
  })
  async runs(
    @Ctx() ctx: RequestContext,
    @Arg("experimentIds", () => [ID], { nullable: true, description: "Restrict to these experiments." }) experimentIds?: string[],
    @Arg("filter", () => String, { nullable: true, description: "Filter expression over params, tags, metrics and attributes." }) filter?: string,
    @Arg("orderBy", () => [String], { nullable: true, description: "e.g. [\"metrics.val_loss ASC\", \"attributes.start_time DESC\"]." }) orderBy?: string[],
    @Arg("first", () => Int, { nullable: true, description: "Page size (default 50, at most 1000)." }) first?: number,
    @Arg("after", () => String, { nullable: true, description: "Cursor from a previous page." }) after?: string,
  ) {
    return toConnection(await ctx.services.runs.searchRuns(ctx, { experimentIds, filter, orderBy, first, after }));
  }

  @Authorized(["editor", "task"])
  @Mutation(() => Run, { description: "Starts a run in an experiment." })
  createRun(@Ctx() ctx: RequestContext, @Arg("input", () => CreateRunInput, { description: "The new run." }) input: CreateRunInput): Promise<Run> {
    return ctx.services.runs.create(ctx, input);
  }

  @Authorized(["editor", "task"])
  @Mutation(() => Run, { description: "Ends a run (FINISHED, FAILED, KILLED), sets its end time or renames it." })
  updateRun(@Ctx() ctx: RequestContext, @Arg("input", () => UpdateRunInput, { description: "What to change." }) input: UpdateRunInput): Promise<Run> {
    return ctx.services.runs.update(ctx, input);
  }

  @Authorized("editor")
  @Mutation(() => Run, { description: "Soft-deletes a run: hidden from search; metrics can no longer be logged to it." })
  deleteRun(@Ctx() ctx: RequestContext, @Arg("id", () => ID, { description: "The run." }) id: string): Promise<Run> {
    return ctx.services.runs.setDeleted(ctx, id, true);
  }

  @Authorized("editor")
  @Mutation(() => Run, { description: "Restores a soft-deleted run." })
  restoreRun(@Ctx() ctx: RequestContext, @Arg("id", () => ID, { description: "The run." }) id: string): Promise<Run> {
    return ctx.services.runs.setDeleted(ctx, id, false);
  }

  @Authorized(["editor", "task"])
  @Mutation(() => Run, { description: "Logs params. A param is immutable: the same value again is accepted, a different value is CONFLICT and nothing is stored." })
  logParams(
    @Ctx() ctx: RequestContext,
    @Arg("runId", () => ID, { description: "The run." }) runId: string,
    @Arg("params", () => [ParamInput], { description: "Up to 1,000 params." }) params: ParamInput[],
  ): Promise<Run> {
    return ctx.services.runs.logParams(ctx, runId, params);
  }

  @Authorized(["editor", "task"])
  @Mutation(() => Run, { description: "Sets (adds or overwrites) run tags." })
  setRunTags(
    @Ctx() ctx: RequestContext,
    @Arg("runId", () => ID, { description: "The run." }) runId: string,
    @Arg("tags", () => [TagInput], { description: "Up to 1,000 tags." }) tags: TagInput[],
  ): Promise<Run> {
    return ctx.services.runs.setTags(ctx, runId, tags);
  }

  @Authorized(["editor", "task"])
  @Mutation(() => Run, { description: "Removes one run tag." })
  deleteRunTag(
    @Ctx() ctx: RequestContext,
    @Arg("runId", () => ID, { description: "The run." }) runId: string,
    @Arg("key", () => String, { description: "Tag key." }) key: string,
  ): Promise<Run> {
    return ctx.services.runs.deleteTag(ctx, runId, key);
  }

  @Authorized(["editor", "task"])
  @Mutation(() => Run, { description: "Records datasets the run consumed (name + digest identify a dataset)." })
  logInputs(
    @Ctx() ctx: RequestContext,
    @Arg("runId", () => ID, { description: "The run." }) runId: string,
    @Arg("datasets", () => [DatasetInput], { description: "Datasets used." }) datasets: DatasetInput[],
  ): Promise<Run> {
    return ctx.services.runs.logInputs(ctx, runId, datasets);
  }

  @Authorized("viewer")
  @Subscription(() => Run, {
    description: "A run was created or changed (status, params, tags, inputs). Filter by experiment or run.",
    subscribe: ({ args, context }) => (context as RequestContext).services.runUpdates.subscribe(context as RequestContext, args as { experimentId?: string; runId?: string }),
  })
  runUpdated(
    @Root() run: Run,
    @Arg("experimentId", () => ID, { nullable: true, description: "Only runs of this experiment." }) _experimentId?: string,
    @Arg("runId", () => ID, { nullable: true, description: "Only this run." }) _runId?: string,
  ): Run {
    return run;
  }

  @FieldResolver(() => Experiment, { description: "The experiment the run belongs to." })
  async experiment(@Root() run: Run, @Ctx() ctx: RequestContext): Promise<Experiment> {
    return (await ctx.loaders.experimentById.load(run.experimentId)) as Experiment;
  }

  @FieldResolver(() => [RunParam], { description: "Params, by key." })
  params(@Root() run: Run, @Ctx() ctx: RequestContext) {
    return ctx.loaders.runParams.load(run.id);
  }

  @FieldResolver(() => [Tag], { description: "Tags, by key." })
  tags(@Root() run: Run, @Ctx() ctx: RequestContext) {
    return ctx.loaders.runTags.load(run.id);
  }

  @FieldResolver(() => Run, { nullable: true, description: "The parent run, for nested runs." })
  parentRun(@Root() run: Run, @Ctx() ctx: RequestContext) {
    return run.parentRunId ? ctx.loaders.runById.load(run.parentRunId) : null;
  }

  @FieldResolver(() => [RunInputType], { description: "Datasets this run consumed." })
  inputs(@Root() run: Run, @Ctx() ctx: RequestContext) {
    return ctx.loaders.runInputs.load(run.id);
  }
}
