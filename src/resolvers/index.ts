import type { NonEmptyArray } from "type-graphql";
import { ExperimentResolver } from "./experiment.resolver.js";
import { RunResolver } from "./run.resolver.js";
import { TokenResolver } from "./token.resolver.js";
import { MetricResolver, RunMetricsResolver } from "./metric.resolver.js";
import { PipelineResolver, PipelineVersionResolver } from "./pipeline.resolver.js";
import { PipelineRunResolver, RunTaskRunResolver, TaskRunResolver } from "./pipeline-run.resolver.js";
import { ExecutorResolver } from "./executor.resolver.js";
import { ArtifactResolver, RunArtifactsResolver } from "./artifact.resolver.js";
import { DatasetLineageResolver, LineageResolver, ModelVersionResolver, RegisteredModelResolver, RunModelVersionsResolver, StageTransitionResolver } from "./registry.resolver.js";
import { WebhookDeliveryResolver, WebhookResolver } from "./webhook.resolver.js";

/** Every resolver class; features append theirs here. */
// eslint-disable-next-line @typescript-eslint/no-unsafe-function-type
export const resolvers: NonEmptyArray<Function> = [TokenResolver, ExperimentResolver, RunResolver, RunMetricsResolver, MetricResolver, PipelineResolver, PipelineVersionResolver, PipelineRunResolver, TaskRunResolver, RunTaskRunResolver, ExecutorResolver, ArtifactResolver, RunArtifactsResolver, RegisteredModelResolver, ModelVersionResolver, LineageResolver, DatasetLineageResolver, StageTransitionResolver, RunModelVersionsResolver, WebhookResolver, WebhookDeliveryResolver];
