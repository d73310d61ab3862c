import { Arg, Authorized, Ctx, FieldResolver, ID, Int, Mutation, Query, Resolver, Root, Subscription } from "type-graphql";
import { RegisteredModel } from "../entities/registered-model.entity.js";
import { ModelStage, ModelVersion } from "../entities/model-version.entity.js";
import { StageTransitionRequest } from "../entities/stage-transition-request.entity.js";
import { Run } from "../entities/run.entity.js";
import type { RequestContext } from "../services/context.js";
import type { RegistryEventPayload } from "../services/registry.service.js";
import { Tag, TagInput, toConnection } from "./types/common.types.js";
import { RunConnection, RunInputType } from "./types/tracking.types.js";
import {
  ApprovalCheck,
  ApprovalPolicyInput,
  ApprovalPolicyType,
  CreateModelVersionInput,
  CreateRegisteredModelInput,
  DatasetLineage,
  Lineage,
  ModelAlias,
  ModelVersionConnection,
  RegisteredModelConnection,
  RegistryEvent,
  StageTransitionInput,
  UpdateRegisteredModelInput,
} from "./types/registry.types.js";

@Resolver(() => RegisteredModel)
export class RegisteredModelResolver {
  @Authorized("viewer")
  @Query(() => RegisteredModel, { nullable: true, description: "A registered model by name." })
  registeredModel(@Ctx() ctx: RequestContext, @Arg("name", () => String, { description: "Model name." }) name: string) {
    return ctx.services.registry.getModel(ctx, name);
  }

  @Authorized("viewer")
  @Query(() => RegisteredModelConnection, { description: "Registered models by name; filter e.g. \"name LIKE 'churn%' and tags.team = 'nlp'\"." })
  async registeredModels(
    @Ctx() ctx: RequestContext,
    @Arg("filter", () => String, { nullable: true, description: "Terms `name|tags.<key> (=, !=, LIKE, ILIKE) '<value>'` joined by AND." }) filter?: string,
    @Arg("first", () => Int, { nullable: true, description: "Page size (default 50, at most 1000)." }) first?: number,
    @Arg("after", () => String, { nullable: true, description: "Cursor from a previous page." }) after?: string,
  ) {
    return toConnection(await ctx.services.registry.listModels(ctx, { filter, first, after }));
  }

  @Authorized("editor")
  @Mutation(() => RegisteredModel, { description: "Registers a model name." })
  createRegisteredModel(@Ctx() ctx: RequestContext, @Arg("input", () => CreateRegisteredModelInput, { description: "The new model." }) input: CreateRegisteredModelInput) {
    return ctx.services.registry.createModel(ctx, input);
  }

  @Authorized("editor")
  @Mutation(() => RegisteredModel, { description: "Renames or re-describes a model." })
  updateRegisteredModel(@Ctx() ctx: RequestContext, @Arg("input", () => UpdateRegisteredModelInput, { description: "What to change." }) input: UpdateRegisteredModelInput) {
    return ctx.services.registry.updateModel(ctx, input);
  }

  @Authorized("editor")
  @Mutation(() => RegisteredModel, { description: "Sets (adds or overwrites) model tags." })
  setRegisteredModelTags(
    @Ctx() ctx: RequestContext,
    @Arg("name", () => String, { description: "Model name." }) name: string,
    @Arg("tags", () => [TagInput], { description: "Tags." }) tags: TagInput[],
  ) {
    return ctx.services.registry.setModelTags(ctx, name, tags);
  }

  @Authorized("editor")
  @Mutation(() => RegisteredModel, { description: "Removes one model tag." })
  deleteRegisteredModelTag(
    @Ctx() ctx: RequestContext,
    @Arg("name", () => String, { description: "Model name." }) name: string,
    @Arg("key", () => String, { description: "Tag key." }) key: string,
  ) {
    return ctx.services.registry.deleteModelTag(ctx, name, key);
  }

  @Authorized("admin")
  @Mutation(() => RegisteredModel, { description: "Sets the checks requestStageTransition runs (model card sections, metric thresholds)." })
  setApprovalPolicy(
    @Ctx() ctx: RequestContext,
    @Arg("modelName", () => String, { description: "Model name." }) modelName: string,
    @Arg("policy", () => ApprovalPolicyInput, { description: "The policy." }) policy: ApprovalPolicyInput,
  ) {
    return ctx.services.registry.setApprovalPolicy(ctx, modelName, {
      requiredModelCardSections: policy.requiredModelCardSections ?? [],
      metricThresholds: policy.metricThresholds ?? [],
      ...(policy.appliesToStages ? { appliesToStages: policy.appliesToStages } : {}),
    });
  }

  @FieldResolver(() => [Tag], { description: "Tags, by key." })
  tags(@Root() model: RegisteredModel, @Ctx() ctx: RequestContext) {
    return ctx.loaders.registeredModelTags.load(model.id);
  }

  @FieldResolver(() => [ModelAlias], { description: "Aliases and the versions they name (read in one consistent snapshot)." })
  aliases(@Root() model: RegisteredModel, @Ctx() ctx: RequestContext) {
    return ctx.loaders.registeredModelAliases.load(model.id);
  }

  @FieldResolver(() => ModelVersionConnection, { description: "Versions, newest first." })
  async versions(
    @Root() model: RegisteredModel,
    @Ctx() ctx: RequestContext,
    @Arg("first", () => Int, { nullable: true, description: "Page size (default 50, at most 1000)." }) first?: number,
    @Arg("after", () => String, { nullable: true, description: "Cursor from a previous page." }) after?: string,
  ) {
    return toConnection(await ctx.services.registry.listVersions(ctx, model.id, { first, after }));
  }

  @FieldResolver(() => ModelVersion, { nullable: true, description: "The highest version number." })
  latestVersion(@Root() model: RegisteredModel, @Ctx() ctx: RequestContext) {
    return ctx.loaders.latestModelVersion.load(model.id);
  }

  @FieldResolver(() => ApprovalPolicyType, { description: "Checks run on stage transition requests." })
  approvalPolicy(@Root() model: RegisteredModel): ApprovalPolicyType {
    const p = model.approvalPolicy ?? {};
    return {
      requiredModelCardSections: p.requiredModelCardSections ?? [],
      metricThresholds: p.metricThresholds ?? [],
      appliesToStages: (p.appliesToStages ?? [ModelStage.PRODUCTION]) as ModelStage[],
    };
  }
}

@Resolver(() => ModelVersion)
export class ModelVersionResolver {
  @Authorized("viewer")
  @Query(() => ModelVersion, { nullable: true, description: "Resolve by number or by alias, e.g. modelVersion(name: \"churn\", alias: \"champion\")." })
  modelVersion(
    @Ctx() ctx: RequestContext,
    @Arg("name", () => String, { description: "Model name." }) name: string,
    @Arg("version", () => Int, { nullable: true, description: "Version number." }) version?: number,
    @Arg("alias", () => String, { nullable: true, description: "Alias, with or without '@'." }) alias?: string,
  ) {
    return ctx.services.registry.getVersion(ctx, { name, version, alias });
  }

  @Authorized(["editor", "task"])
  @Mutation(() => ModelVersion, { description: "Registers an artifact of a run as the model's next version; the artifact must exist." })
  createModelVersion(@Ctx() ctx: RequestContext, @Arg("input", () => CreateModelVersionInput, { description: "The new version." }) input: CreateModelVersionInput) {
    return ctx.services.registry.createVersion(ctx, input);
  }

  @Authorized("editor")
  @Mutation(() => ModelVersion, { description: "Points an alias at a version (moving it atomically if it named another; one that already names it is left as it is and announces nothing, so a retry sends no second ALIAS_SET). @champion moves with approved Production transitions; setting it here needs the approver role." })
  setModelAlias(
    @Ctx() ctx: RequestContext,
    @Arg("modelName", () => String, { description: "Model name." }) modelName: string,
    @Arg("alias", () => String, { description: "Alias, with or without '@'." }) alias: string,
    @Arg("version", () => Int, { description: "Version number." }) version: number,
  ) {
    return ctx.services.registry.setAlias(ctx, modelName, alias, version);
  }

  @Authorized("editor")
  @Mutation(() => Boolean, { description: "Removes an alias (@champion only with the approver role)." })
  deleteModelAlias(
    @Ctx() ctx: RequestContext,
    @Arg("modelName", () => String, { description: "Model name." }) modelName: string,
    @Arg("alias", () => String, { description: "Alias, with or without '@'." }) alias: string,
  ) {
    return ctx.services.registry.deleteAlias(ctx, modelName, alias);
  }

  @Authorized("viewer")
  @Query(() => DatasetLineage, { nullable: true, description: "Runs and model versions downstream of a dataset." })
  async datasetLineage(
    @Ctx() ctx: RequestContext,
    @Arg("name", () => String, { description: "Dataset name." }) name: string,
    @Arg("digest", () => String, { description: "Dataset digest." }) digest: string,
  ): Promise<DatasetLineage | null> {
    return ctx.services.lineage.datasetLineage(ctx, name, digest);
  }

  @FieldResolver(() => RegisteredModel, { description: "The registered model." })
  async model(@Root() version: ModelVersion, @Ctx() ctx: RequestContext) {
    return ctx.loaders.registeredModelById.load(version.modelId);
  }

  @FieldResolver(() => [String], { description: "Aliases naming this version." })
  aliases(@Root() version: ModelVersion, @Ctx() ctx: RequestContext) {
    return ctx.loaders.modelVersionAliases.load(version.id);
  }

  @FieldResolver(() => [Tag], { description: "Version tags." })
  tags(@Root() version: ModelVersion, @Ctx() ctx: RequestContext) {
    return ctx.loaders.modelVersionTags.load(version.id);
  }

  @FieldResolver(() => Run, { nullable: true, description: "The source run." })
  run(@Root() version: ModelVersion, @Ctx() ctx: RequestContext) {
    return ctx.loaders.runById.load(version.runId);
  }

  @FieldResolver(() => String, { description: "runs:/<runId>/<artifactPath>" })
  artifactUri(@Root() version: ModelVersion): string {
    return `runs:/${version.runId}/${version.artifactPath}`;
  }

  @FieldResolver(() => Lineage, { description: "Source run, its dataset inputs, parent runs and the producing pipeline task." })
  lineage(@Root() version: ModelVersion, @Ctx() ctx: RequestContext) {
    return ctx.services.lineage.ofVersion(ctx, version);
  }

  @FieldResolver(() => [StageTransitionRequest], { description: "Stage transition requests, oldest first." })
  transitionRequests(@Root() version: ModelVersion, @Ctx() ctx: RequestContext) {
    return ctx.loaders.transitionRequestsOfVersion.load(version.id);
  }
}

@Resolver(() => Lineage)
export class LineageResolver {
  @FieldResolver(() => Run, { nullable: true, description: "The run that logged the model artifact." })
  sourceRun(@Root() lineage: Lineage, @Ctx() ctx: RequestContext) {
    return ctx.loaders.runById.load(lineage.sourceRunId);
  }

  @FieldResolver(() => [RunInputType], { description: "Datasets the source run consumed." })
  datasets(@Root() lineage: Lineage, @Ctx() ctx: RequestContext) {
    return ctx.loaders.runInputs.load(lineage.sourceRunId);
  }

  @FieldResolver(() => [Run], { description: "Ancestors of the source run (nested runs), nearest first." })
  parentRuns(@Root() lineage: Lineage, @Ctx() ctx: RequestContext) {
    return ctx.services.lineage.runsByIds(ctx, lineage.parentRunIds);
  }
}

@Resolver(() => DatasetLineage)
export class DatasetLineageResolver {
  @FieldResolver(() => RunConnection, { description: "Runs downstream of the dataset (those that consumed it, and their nested runs), oldest first; deleted runs are left out." })
  async runs(
    @Root() lineage: DatasetLineage,
    @Ctx() ctx: RequestContext,
    @Arg("first", () => Int, { nullable: true, description: "Page size (default 50, at most 1000)." }) first?: number,
    @Arg("after", () => String, { nullable: true, description: "Cursor from a previous page." }) after?: string,
  ) {
    return toConnection(await ctx.services.lineage.runsOfDataset(ctx, lineage.dataset.id, { first, after }));
  }

  @FieldResolver(() => ModelVersionConnection, { description: "Model versions registered from those runs, oldest first." })
  async modelVersions(
    @Root() lineage: DatasetLineage,
    @Ctx() ctx: RequestContext,
    @Arg("first", () => Int, { nullable: true, description: "Page size (default 50, at most 1000)." }) first?: number,
    @Arg("after", () => String, { nullable: true, description: "Cursor from a previous page." }) after?: string,
  ) {
    return toConnection(await ctx.services.lineage.versionsOfDataset(ctx, lineage.dataset.id, { first, after }));
  }
}

@Resolver(() => StageTransitionRequest)
export class StageTransitionResolver {
  @Authorized(["editor", "task"])
  @Mutation(() => StageTransitionRequest, { description: "Requests a stage change; the model's approval policy runs at once and its checks are stored." })
  requestStageTransition(@Ctx() ctx: RequestContext, @Arg("input", () => StageTransitionInput, { description: "The transition." }) input: StageTransitionInput) {
    return ctx.services.registry.requestTransition(ctx, input);
  }

  @Authorized("editor")
  @Mutation(() => StageTransitionRequest, {
    description: "Approves and performs a transition (admin, or the configured approver role; not your own request unless configured). Into PRODUCTION archives the previous one and moves @champion.",
  })
  approveStageTransition(
    @Ctx() ctx: RequestContext,
    @Arg("requestId", () => ID, { description: "The request." }) requestId: string,
    @Arg("comment", () => String, { nullable: true, description: "Why." }) comment?: string,
  ) {
    return ctx.services.registry.approveTransition(ctx, requestId, comment);
  }

  @Authorized("editor")
  @Mutation(() => StageTransitionRequest, { description: "Rejects a transition request; the comment (why) is required." })
  rejectStageTransition(
    @Ctx() ctx: RequestContext,
    @Arg("requestId", () => ID, { description: "The request." }) requestId: string,
    @Arg("comment", () => String, { nullable: true, description: "Why it is rejected (required)." }) comment?: string,
  ) {
    return ctx.services.registry.rejectTransition(ctx, requestId, comment);
  }

  @Authorized("viewer")
  @Query(() => StageTransitionRequest, { nullable: true, description: "A stage transition request by id." })
  stageTransitionRequest(@Ctx() ctx: RequestContext, @Arg("id", () => ID, { description: "Request id." }) id: string) {
    return ctx.services.registry.getRequest(ctx, id);
  }

  @Authorized("viewer")
  @Subscription(() => RegistryEvent, {
    description: "Registry changes (versions, aliases, stage transitions), optionally of one model.",
    subscribe: ({ args, context }) => (context as RequestContext).services.registry.subscribe(context as RequestContext, (args as { modelName?: string }).modelName),
  })
  registryEvents(
    @Root() event: RegistryEventPayload,
    @Arg("modelName", () => String, { nullable: true, description: "Only this model." }) _modelName?: string,
  ): RegistryEvent {
    return { ...event, occurredAt: new Date(event.occurredAt) };
  }

  @FieldResolver(() => ModelVersion, { description: "The version to move." })
  async modelVersion(@Root() request: StageTransitionRequest, @Ctx() ctx: RequestContext) {
    return ctx.loaders.modelVersionById.load(request.modelVersionId);
  }

  @FieldResolver(() => [ApprovalCheck], { description: "The approval policy's checks, run when the request was made." })
  checks(@Root() request: StageTransitionRequest): ApprovalCheck[] {
    return request.checks;
  }
}

@Resolver(() => Run)
export class RunModelVersionsResolver {
  @FieldResolver(() => [ModelVersion], { description: "Model versions registered from this run." })
  modelVersions(@Root() run: Run, @Ctx() ctx: RequestContext) {
    return ctx.loaders.modelVersionsOfRun.load(run.id);
  }
}
