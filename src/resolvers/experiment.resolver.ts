import { Arg, Args, ArgsType, Authorized, Ctx, Field, FieldResolver, ID, Int, Mutation, Query, Resolver, Root } from "type-graphql";
import { Experiment } from "../entities/experiment.entity.js";
import type { RequestContext } from "../services/context.js";
import { Tag, TagInput, toConnection } from "./types/common.types.js";
import { CreateExperimentInput, ExperimentConnection, RunConnection, UpdateExperimentInput } from "./types/tracking.types.js";
import { argsKey } from "../services/grouped-loader.js";

@ArgsType()
class ExperimentRunsArgs {
  @Field(() => String, { nullable: true, description: "MLflow-style filter, e.g. \"metrics.val_loss < 0.3 and params.lr = '0.01'\"." })
  filter?: string | null;

  @Field(() => [String], { nullable: true, description: "e.g. [\"metrics.val_loss ASC\", \"start_time DESC\"]." })
  orderBy?: string[] | null;

  @Field(() => Int, { nullable: true, description: "Page size (default 50, at most 1000)." })
  first?: number | null;

  @Field(() => String, { nullable: true, description: "Cursor from a previous page." })
  after?: string | null;
}

@Resolver(() => Experiment)
export class ExperimentResolver {
  @Authorized("viewer")
  @Query(() => Experiment, { nullable: true, description: "An experiment by id or by name." })
  experiment(
    @Ctx() ctx: RequestContext,
    @Arg("id", () => ID, { nullable: true, description: "Experiment id." }) id?: string,
    @Arg("name", () => String, { nullable: true, description: "Experiment name." }) name?: string,
  ): Promise<Experiment | null> {
    return ctx.services.experiments.get(ctx, { id, name });
  }

  @Authorized("viewer")
  @Query(() => ExperimentConnection, { description: "Experiments, newest first." })
  async experiments(
    @Ctx() ctx: RequestContext,
    @Arg("first", () => Int, { nullable: true, description: "Page size (default 50, at most 1000)." }) first?: number,
    @Arg("after", () => String, { nullable: true, description: "Cursor from a previous page." }) after?: string,
    @Arg("includeDeleted", () => Boolean, { nullable: true, description: "Also list soft-deleted experiments." }) includeDeleted?: boolean,
  ) {
    return toConnection(await ctx.services.experiments.list(ctx, { first, after, includeDeleted }));
  }

  @Authorized("editor")
  @Mutation(() => Experiment, { description: "Creates an experiment; the name must be unique." })
  createExperiment(@Ctx() ctx: RequestContext, @Arg("input", () => CreateExperimentInput, { description: "The new experiment." }) input: CreateExperimentInput): Promise<Experiment> {
    return ctx.services.experiments.create(ctx, input);
  }

  @Authorized("editor")
  @Mutation(() => Experiment, { description: "Renames or re-describes an experiment." })
  updateExperiment(@Ctx() ctx: RequestContext, @Arg("input", () => UpdateExperimentInput, { description: "What to change." }) input: UpdateExperimentInput): Promise<Experiment> {
    return ctx.services.experiments.update(ctx, input);
  }

  @Authorized("editor")
  @Mutation(() => Experiment, { description: "Soft-deletes an experiment: it and its runs are hidden from lists, its runs take no writes and no new runs or pipeline runs start in it; restorable." })
  deleteExperiment(@Ctx() ctx: RequestContext, @Arg("id", () => ID, { description: "The experiment." }) id: string): Promise<Experiment> {
    return ctx.services.experiments.setDeleted(ctx, id, true);
  }

  @Authorized("editor")
  @Mutation(() => Experiment, { description: "Restores a soft-deleted experiment." })
  restoreExperiment(@Ctx() ctx: RequestContext, @Arg("id", () => ID, { description: "The experiment." }) id: string): Promise<Experiment> {
    return ctx.services.experiments.setDeleted(ctx, id, false);
  }

  @Authorized("editor")
  @Mutation(() => Experiment, { description: "Sets (adds or overwrites) experiment tags." })
  setExperimentTags(
    @Ctx() ctx: RequestContext,
    @Arg("experimentId", () => ID, { description: "The experiment." }) experimentId: string,
    @Arg("tags", () => [TagInput], { description: "Tags to set." }) tags: TagInput[],
  ): Promise<Experiment> {
    return ctx.services.experiments.setTags(ctx, experimentId, tags);
  }

  @FieldResolver(() => [Tag], { description: "Experiment tags, by key." })
  tags(@Root() experiment: Experiment, @Ctx() ctx: RequestContext): Promise<Tag[]> {
    return ctx.loaders.experimentTags.load(experiment.id);
  }

  @FieldResolver(() => RunConnection, { description: "Runs of this experiment, filtered and ordered like `runs`." })
  async runs(@Root() experiment: Experiment, @Ctx() ctx: RequestContext, @Args(() => ExperimentRunsArgs) args: ExperimentRunsArgs) {
    const search = { filter: args.filter ?? null, orderBy: args.orderBy ?? null, first: args.first ?? null, after: args.after ?? null };
    return toConnection(await ctx.loaders.experimentRuns.load(argsKey(search, experiment.id)));
  }
}
