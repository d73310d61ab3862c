import { Field, ID, InputType, ObjectType } from "type-graphql";
import { Experiment } from "../../entities/experiment.entity.js";
import { Run, RunStatus } from "../../entities/run.entity.js";
import { Dataset } from "../../entities/dataset.entity.js";
import { Connection, ParamInput, TagInput } from "./common.types.js";

export const ExperimentConnection = Connection(Experiment, "Experiment");
export const RunConnection = Connection(Run, "Run");

@InputType({ description: "A new experiment." })
export class CreateExperimentInput {
  @Field({ description: "Unique name." })
  name: string;

  @Field(() => String, { nullable: true, description: "Free text." })
  description?: string | null;

  @Field(() => [TagInput], { nullable: true, description: "Initial tags." })
  tags?: TagInput[] | null;
}

@InputType({ description: "Rename or re-describe an experiment." })
export class UpdateExperimentInput {
  @Field(() => ID, { description: "The experiment." })
  id: string;

  @Field(() => String, { nullable: true, description: "New unique name." })
  name?: string | null;

  @Field(() => String, { nullable: true, description: "New description." })
  description?: string | null;
}

@InputType({ description: "A new run." })
export class CreateRunInput {
  @Field(() => ID, { description: "The experiment the run belongs to." })
  experimentId: string;

  @Field(() => String, { nullable: true, description: "Display name; generated when absent." })
  name?: string | null;

  @Field(() => [ParamInput], { nullable: true, description: "Params logged at creation." })
  params?: ParamInput[] | null;

  @Field(() => [TagInput], { nullable: true, description: "Tags set at creation." })
  tags?: TagInput[] | null;

  @Field(() => ID, { nullable: true, description: "Parent run, for nested runs (e.g. a sweep)." })
  parentRunId?: string | null;

  @Field(() => Date, { nullable: true, description: "Defaults to now." })
  startTime?: Date | null;

  @Field(() => String, {
    nullable: true,
    description:
      "Client-chosen id of this call (1-250 characters), e.g. a UUID; makes a resend safe. A later createRun in the same experiment with the same key and input creates nothing and returns the run the first call created; the same key with different input is CONFLICT.",
  })
  idempotencyKey?: string | null;
}

@InputType({ description: "Change a run's status, end time or name." })
export class UpdateRunInput {
  @Field(() => ID, { description: "The run." })
  runId: string;

  @Field(() => RunStatus, { nullable: true, description: "FINISHED, FAILED or KILLED end the run (endTime defaults to now)." })
  status?: RunStatus | null;

  @Field(() => Date, { nullable: true, description: "When the run ended." })
  endTime?: Date | null;

  @Field(() => String, { nullable: true, description: "New display name." })
  name?: string | null;
}

@InputType({ description: "A dataset a run consumed." })
export class DatasetInput {
  @Field({ description: "Dataset name." })
  name: string;

  @Field({ description: "Content digest pinning the exact data." })
  digest: string;

  @Field(() => String, { nullable: true, description: "Where the data lives." })
  sourceUri?: string | null;

  @Field(() => String, { nullable: true, description: "How the run used it, e.g. training or validation." })
  context?: string | null;
}

@ObjectType("RunInput", { description: "A dataset consumed by a run." })
export class RunInputType {
  @Field(() => Dataset, { description: "The dataset." })
  dataset: Dataset;

  @Field(() => String, { nullable: true, description: "How the run used it." })
  context: string | null;
}
