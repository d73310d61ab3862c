import { Field, ID, InputType, Int, ObjectType, registerEnumType } from "type-graphql";
import { SafeIntResolver } from "graphql-scalars";
import { RegisteredModel } from "../../entities/registered-model.entity.js";
import { ModelStage, ModelVersion } from "../../entities/model-version.entity.js";
import { Dataset } from "../../entities/dataset.entity.js";
import { WebhookDelivery, WebhookEvent } from "../../entities/webhook.entity.js";
import { Connection, TagInput } from "./common.types.js";

export const RegisteredModelConnection = Connection(RegisteredModel, "RegisteredModel");
export const ModelVersionConnection = Connection(ModelVersion, "ModelVersion");
export const WebhookDeliveryConnection = Connection(WebhookDelivery, "WebhookDelivery");

// ---- artifacts ----

export enum ArtifactUploadKind {
  SINGLE = "SINGLE",
  MULTIPART = "MULTIPART",
}
registerEnumType(ArtifactUploadKind, { name: "ArtifactUploadKind", description: "One PUT of the whole file, or one PUT per part." });

@InputType({ description: "A file to upload into a run's artifacts." })
export class ArtifactUploadInput {
  @Field(() => ID, { description: "The run (task tokens: only their own run)." })
  runId: string;

  @Field({ description: "Relative path inside the run's artifacts, e.g. model/model.onnx; '..', absolute paths and control characters are refused." })
  path: string;

  @Field(() => SafeIntResolver, { description: "Exact size in bytes." })
  size: number;

  @Field({ description: "SHA-256 of the content (64 hex characters), verified on completion." })
  sha256: string;

  @Field(() => String, { nullable: true, description: "Media type stored with the object." })
  contentType?: string | null;
}

@InputType({ description: "A multipart part the client uploaded, with the ETag its PUT answered." })
export class UploadedPartInput {
  @Field(() => Int, { description: "1-based part number." })
  partNumber: number;

  @Field({ description: "ETag response header of the part's PUT." })
  etag: string;
}

@ObjectType({ description: "One presigned part URL of a multipart upload." })
export class ArtifactUploadPart {
  @Field(() => Int, { description: "1-based part number." })
  partNumber: number;

  @Field({ description: "Presigned PUT URL for exactly this part." })
  url: string;

  @Field(() => SafeIntResolver, { description: "Bytes this part must contain (bytes [(partNumber-1)*partSize, …) of the file)." })
  size: number;
}

@ObjectType({ description: "An HTTP header the client must send with each PUT." })
export class HttpHeader {
  @Field({ description: "Header name." })
  name: string;

  @Field({ description: "Header value." })
  value: string;
}

@ObjectType({ description: "Where to PUT an artifact's bytes; call completeArtifactUpload afterwards." })
export class ArtifactUpload {
  @Field(() => ID, { description: "Pass to completeArtifactUpload." })
  id: string;

  @Field(() => ArtifactUploadKind, { description: "SINGLE: PUT the file to url. MULTIPART: PUT each part to its url." })
  kind: ArtifactUploadKind;

  @Field(() => String, { nullable: true, description: "For SINGLE uploads." })
  url: string | null;

  @Field(() => [ArtifactUploadPart], { nullable: true, description: "For MULTIPART uploads." })
  parts: ArtifactUploadPart[] | null;

  @Field(() => SafeIntResolver, { nullable: true, description: "For MULTIPART uploads: size of every part but the last." })
  partSize: number | null;

  @Field({ description: "When the URLs stop working." })
  expiresAt: Date;

  @Field(() => [HttpHeader], { description: "Headers to send with every PUT." })
  headers: HttpHeader[];
}

@ObjectType({ description: "A file or folder in a run's artifacts." })
export class Artifact {
  @Field(() => ID, { description: "The run." })
  runId: string;

  @Field({ description: "Path inside the run's artifacts." })
  path: string;

  @Field({ description: "Last path segment." })
  name: string;

  @Field({ description: "True for folders." })
  isDir: boolean;

  @Field(() => SafeIntResolver, { description: "File size in bytes; for a folder the total of the files below it." })
  size: number;

  @Field(() => String, { nullable: true, description: "SHA-256 (hex) verified at upload; null for folders." })
  sha256: string | null;

  @Field(() => String, { nullable: true, description: "Media type given at upload." })
  contentType: string | null;

  @Field(() => Date, { nullable: true, description: "When the file was recorded; null for folders." })
  createdAt: Date | null;

  key: string;
}

// ---- registry ----

@ObjectType({ description: "An alias and the version it names." })
export class ModelAlias {
  @Field({ description: "Alias name, e.g. champion." })
  alias: string;

  @Field(() => Int, { description: "The version it names." })
  version: number;
}

@ObjectType({ description: "What requestStageTransition checks before a transition may be approved." })
export class ApprovalPolicyType {
  @Field(() => [String], { description: "Model card headings that must be present with text below them." })
  requiredModelCardSections: string[];

  @Field(() => [String], { description: "Run-filter expressions the source run must satisfy, e.g. \"metrics.fairness_gap <= 0.05\"." })
  metricThresholds: string[];

  @Field(() => [ModelStage], { description: "Target stages the policy applies to." })
  appliesToStages: ModelStage[];
}

@InputType({ description: "A model's approval policy." })
export class ApprovalPolicyInput {
  @Field(() => [String], { nullable: true, description: "Model card headings that must be present with text below them." })
  requiredModelCardSections?: string[] | null;

  @Field(() => [String], { nullable: true, description: "Run-filter expressions on the source run, e.g. \"metrics.fairness_gap <= 0.05\"." })
  metricThresholds?: string[] | null;

  @Field(() => [ModelStage], { nullable: true, description: "Target stages the policy applies to (default PRODUCTION)." })
  appliesToStages?: ModelStage[] | null;
}

@InputType({ description: "A new registered model." })
export class CreateRegisteredModelInput {
  @Field({ description: "Unique name." })
  name: string;

  @Field(() => String, { nullable: true, description: "Free text." })
  description?: string | null;

  @Field(() => [TagInput], { nullable: true, description: "Initial tags." })
  tags?: TagInput[] | null;
}

@InputType({ description: "Rename or re-describe a registered model." })
export class UpdateRegisteredModelInput {
  @Field({ description: "Current name." })
  name: string;

  @Field(() => String, { nullable: true, description: "New unique name." })
  newName?: string | null;

  @Field(() => String, { nullable: true, description: "New description." })
  description?: string | null;
}

@InputType({ description: "Register an artifact of a run as a new model version." })
export class CreateModelVersionInput {
  @Field({ description: "The registered model." })
  modelName: string;

  @Field(() => ID, { description: "The run that produced the model." })
  runId: string;

  @Field({ description: "Path of the model file or folder in the run's artifacts; must exist." })
  artifactPath: string;

  @Field(() => String, { nullable: true, description: "Free text." })
  description?: string | null;

  @Field(() => String, { nullable: true, description: "Markdown model card." })
  modelCard?: string | null;

  @Field(() => [TagInput], { nullable: true, description: "Version tags." })
  tags?: TagInput[] | null;

  @Field(() => String, {
    nullable: true,
    description:
      "Client-chosen id of this call (1-250 characters), e.g. a UUID; makes a resend safe. A later createModelVersion of the same model with the same key and input registers nothing and returns the version the first call registered; the same key with different input is CONFLICT.",
  })
  idempotencyKey?: string | null;
}

@InputType({ description: "Ask to move a version to another stage." })
export class StageTransitionInput {
  @Field({ description: "The registered model." })
  modelName: string;

  @Field(() => Int, { description: "The version." })
  version: number;

  @Field(() => ModelStage, { description: "Target stage." })
  toStage: ModelStage;

  @Field(() => String, { nullable: true, description: "Why." })
  comment?: string | null;
}

@ObjectType({ description: "One approval policy check and its result." })
export class ApprovalCheck {
  @Field({ description: "What was checked." })
  name: string;

  @Field({ description: "Whether it passed." })
  passed: boolean;

  @Field({ description: "Details or the reason it failed." })
  detail: string;
}

@ObjectType({ description: "Where a model version came from." })
export class Lineage {
  sourceRunId: string;

  parentRunIds: string[];

  @Field(() => ID, { nullable: true, description: "The pipeline run that produced the source run (once pipelines record it)." })
  pipelineRunId: string | null;

  @Field(() => ID, { nullable: true, description: "The pipeline task run that produced the source run." })
  taskRunId: string | null;
}

@ObjectType({ description: "What was built from a dataset: the runs that consumed it (and their nested runs) and the model versions they registered." })
export class DatasetLineage {
  @Field(() => Dataset, { description: "The dataset." })
  dataset: Dataset;
}

@ObjectType({ description: "A change in the model registry." })
export class RegistryEvent {
  @Field(() => WebhookEvent, { description: "What happened." })
  type: WebhookEvent;

  @Field({ description: "The model." })
  modelName: string;

  @Field(() => Int, { nullable: true, description: "The version concerned." })
  version: number | null;

  @Field(() => String, { nullable: true, description: "The alias set or deleted." })
  alias: string | null;

  @Field(() => ModelStage, { nullable: true, description: "Target stage of a transition." })
  toStage: ModelStage | null;

  @Field(() => ID, { nullable: true, description: "The stage transition request." })
  requestId: string | null;

  @Field({ description: "When it happened." })
  occurredAt: Date;
}

// ---- webhooks ----

@InputType({ description: "A new webhook." })
export class CreateWebhookInput {
  @Field({ description: "http(s) URL; loopback, private and link-local destinations are refused unless allowlisted by the operator." })
  url: string;

  @Field(() => [WebhookEvent], { description: "Events to deliver." })
  events: WebhookEvent[];

  @Field({ description: "At least 16 characters; signs every delivery (HMAC-SHA256 over `${timestamp}.${body}`)." })
  secret: string;

  @Field(() => String, { nullable: true, description: "Only registry events of this model." })
  modelName?: string | null;

  @Field(() => String, { nullable: true, description: "Free text." })
  description?: string | null;
}
