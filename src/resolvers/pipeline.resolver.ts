import { Arg, Authorized, Ctx, FieldResolver, Int, Mutation, Query, Resolver, Root } from "type-graphql";
import { Pipeline } from "../entities/pipeline.entity.js";
import { PipelineVersion } from "../entities/pipeline-version.entity.js";
import type { RequestContext } from "../services/context.js";
import { toConnection } from "./types/common.types.js";
import { CreatePipelineInput, PipelineConnection, PipelineRunConnection } from "./types/pipeline.types.js";
import { argsKey } from "../services/grouped-loader.js";

@Resolver(() => Pipeline)
export class PipelineResolver {
  @Authorized("viewer")
  @Query(() => Pipeline, { nullable: true, description: "A pipeline by name." })
  pipeline(@Ctx() ctx: RequestContext, @Arg("name", { description: "Pipeline name." }) name: string): Promise<Pipeline | null> {
    return ctx.services.pipelines.getByName(ctx, name);
  }

  @Authorized("viewer")
  @Query(() => PipelineConnection, { description: "Pipelines by name." })
  async pipelines(
    @Ctx() ctx: RequestContext,
    @Arg("first", () => Int, { nullable: true, description: "Page size (default 50, at most 1000)." }) first?: number,
    @Arg("after", () => String, { nullable: true, description: "Cursor from a previous page." }) after?: string,
  ) {
    return toConnection(await ctx.services.pipelines.list(ctx, { first, after }));
  }

  @Authorized("editor")
  @Mutation(() => PipelineVersion, {
    description: "Validates a spec (YAML or JSON) and stores it as an immutable version; the same spec again returns the same version. Errors carry the JSON path.",
  })
  createPipeline(@Ctx() ctx: RequestContext, @Arg("input", () => CreatePipelineInput, { description: "The spec." }) input: CreatePipelineInput): Promise<PipelineVersion> {
    return ctx.services.pipelines.create(ctx, input);
  }

  @FieldResolver(() => [PipelineVersion], { description: "Every version, oldest first." })
  versions(@Root() pipeline: Pipeline, @Ctx() ctx: RequestContext) {
    return ctx.loaders.pipelineVersionsOf.load(pipeline.id);
  }

  @FieldResolver(() => PipelineVersion, { description: "The newest version." })
  async latestVersion(@Root() pipeline: Pipeline, @Ctx() ctx: RequestContext) {
    return ctx.loaders.latestPipelineVersion.load(pipeline.id);
  }

  @FieldResolver(() => PipelineRunConnection, { description: "Runs of this pipeline, newest first." })
  async runs(
    @Root() pipeline: Pipeline,
    @Ctx() ctx: RequestContext,
    @Arg("first", () => Int, { nullable: true, description: "Page size (default 50, at most 1000)." }) first?: number,
    @Arg("after", () => String, { nullable: true, description: "Cursor from a previous page." }) after?: string,
  ) {
    return toConnection(await ctx.loaders.runsOfPipeline.load(argsKey({ first: first ?? null, after: after ?? null }, pipeline.id)));
  }
}

@Resolver(() => PipelineVersion)
export class PipelineVersionResolver {
  @FieldResolver(() => Pipeline, { description: "The pipeline this is a version of." })
  async pipeline(@Root() version: PipelineVersion, @Ctx() ctx: RequestContext): Promise<Pipeline> {
    return (await ctx.loaders.pipelineById.load(version.pipelineId)) as Pipeline;
  }
}
