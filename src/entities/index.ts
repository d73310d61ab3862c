import { Experiment } from "./experiment.entity.js";
import { ExperimentTag } from "./experiment-tag.entity.js";
import { Run } from "./run.entity.js";
import { RunParam } from "./run-param.entity.js";
import { RunTag } from "./run-tag.entity.js";
import { Dataset } from "./dataset.entity.js";
import { RunInputRecord } from "./run-input.entity.js";
import { ApiToken } from "./api-token.entity.js";
import { ArtifactRecord, ArtifactUploadRecord } from "./artifact.entity.js";
import { RegisteredModel } from "./registered-model.entity.js";
import { ModelVersion } from "./model-version.entity.js";
import { StageTransitionRequest } from "./stage-transition-request.entity.js";
import { Webhook, WebhookDelivery, WebhookDeliveryAttempt } from "./webhook.entity.js";
import { Pipeline } from "./pipeline.entity.js";
import { PipelineVersion } from "./pipeline-version.entity.js";
import { PipelineRun } from "./pipeline-run.entity.js";
import { TaskRun } from "./task-run.entity.js";
import { Executor } from "./executor.entity.js";
import { TaskLogLine } from "./task-log.entity.js";

/** Every typeorm entity; features append theirs here. */
export const entities = [Experiment, ExperimentTag, Run, RunParam, RunTag, Dataset, RunInputRecord, ApiToken, ArtifactUploadRecord, ArtifactRecord, RegisteredModel, ModelVersion, StageTransitionRequest, Webhook, WebhookDelivery, WebhookDeliveryAttempt, Pipeline, PipelineVersion, PipelineRun, TaskRun, Executor, TaskLogLine];
