import { Field, Float, ID, InputType, Int, ObjectType, registerEnumType } from "type-graphql";
import { GraphQLJSON } from "graphql-scalars";
import { Pipeline } from "../../entities/pipeline.entity.js";
import { PipelineRun } from "../../entities/pipeline-run.entity.js";
import { TaskRun } from "../../entities/task-run.entity.js";
import { Connection } from "./common.types.js";

export const PipelineConnection = Connection(Pipeline, "Pipeline");
export const PipelineRunConnection = Connection(PipelineRun, "PipelineRun");

export enum TaskOutcome {
  SUCCEEDED = "SUCCEEDED",
  FAILED = "FAILED",
  TIMED_OUT = "TIMED_OUT",
  CANCELLED = "CANCELLED",
  NOT_STARTED = "NOT_STARTED",
}
registerEnumType(TaskOutcome, {
  name: "TaskOutcome",
  description: "How an attempt ended, as its executor reports it.",
  valuesConfig: {
    SUCCEEDED: { description: "The task ran and succeeded (exit code 0)." },
    FAILED: { description: "The task ran and failed; the retry policy decides whether it runs again." },
    TIMED_OUT: { description: "The task ran past its timeout and was stopped; counts as a failed attempt." },
    CANCELLED: { description: "The task was stopped because its cancellation was requested; never retried." },
    NOT_STARTED: {
      description:
        "The executor could not set the attempt up on its side (a local executor's work directory could not be created: a full disk, a read-only or missing work base; a Kubernetes executor's cluster could not be reached, answered 5xx/429 or refused the Job for a ResourceQuota), so the task never ran. The task goes back to the queue at once, in its place, without using a retry (TaskRun.uncountedAttempts); after 10 such attempts of one task further ones count as FAILED, so a task no executor can set up still ends. The executor should stop claiming until its own problem is gone.",
    },
  },
});

@InputType({ description: "A pipeline spec, as YAML/JSON text or as a JSON object (exactly one)." })
export class CreatePipelineInput {
  @Field(() => String, { nullable: true, description: "The spec as YAML (or JSON) text." })
  specYaml?: string | null;

  @Field(() => GraphQLJSON, { nullable: true, description: "The spec as a JSON object: {pipeline: {name, params, tasks, on_success}}." })
  spec?: unknown;
}

@InputType({ description: "Starts a run of a pipeline version." })
export class SubmitPipelineRunInput {
  @Field({ description: "The pipeline's name." })
  pipelineName: string;

  @Field(() => Int, { nullable: true, description: "Version number; the latest when absent." })
  version?: number | null;

  @Field(() => GraphQLJSON, { nullable: true, description: "Parameter values by name; coerced to their declared types, defaults filled in." })
  params?: unknown;

  @Field(() => Int, { nullable: true, description: "Higher is claimed first (default 0)." })
  priority?: number | null;

  @Field(() => String, {
    nullable: true,
    description:
      "Client-chosen id of this call (1-250 characters), e.g. a UUID; makes a resend safe. A later submission to the same pipeline with the same key and input starts nothing and returns the run the first call started; the same key with different input is CONFLICT.",
  })
  idempotencyKey?: string | null;
}

@InputType({ description: "A GPU the executor offers." })
export class GpuInput {
  @Field(() => Int, { description: "Device index (CUDA_VISIBLE_DEVICES numbering)." })
  index: number;

  @Field(() => String, { nullable: true, description: "Product name from nvidia-smi." })
  model?: string | null;

  @Field(() => Int, { nullable: true, description: "Total memory in MiB." })
  memoryMb?: number | null;
}

@InputType({ description: "An executor announcing itself and its resources." })
export class RegisterExecutorInput {
  @Field(() => String, { nullable: true, description: "Display name; the server's host name for it when absent." })
  name?: string | null;

  @Field({ description: "Pool to claim from (an executor token may only name its own pool)." })
  pool: string;

  @Field(() => GraphQLJSON, { nullable: true, description: "Free-form string labels." })
  labels?: Record<string, unknown> | null;

  @Field(() => Float, { description: "CPU cores offered to tasks." })
  cpu: number;

  @Field(() => Int, { description: "Memory offered to tasks, in MiB." })
  memoryMb: number;

  @Field(() => [GpuInput], { nullable: true, description: "GPUs offered to tasks." })
  gpus?: GpuInput[] | null;
}

@InputType({ description: "Keeps an attempt's lease alive." })
export class HeartbeatInput {
  @Field(() => ID, { description: "The task run." })
  taskRunId: string;

  @Field({ description: "The lease token from claimTask." })
  leaseToken: string;

  @Field(() => GraphQLJSON, { nullable: true, description: "Progress to resume from; a retry receives the last one." })
  checkpoint?: unknown;
}

@InputType({ description: "The end of an attempt." })
export class CompleteTaskInput {
  @Field(() => ID, { description: "The task run." })
  taskRunId: string;

  @Field({ description: "The lease token from claimTask; a stale one is refused (CONFLICT)." })
  leaseToken: string;

  @Field(() => TaskOutcome, { description: "How the attempt ended." })
  outcome: TaskOutcome;

  @Field(() => Int, { nullable: true, description: "Exit code of the process." })
  exitCode?: number | null;

  @Field(() => String, { nullable: true, description: "Why it failed (e.g. the last lines of stderr)." })
  error?: string | null;

  @Field(() => GraphQLJSON, { nullable: true, description: "A final checkpoint to store." })
  checkpoint?: unknown;
}

@ObjectType({ description: "Progress an attempt saved; the next attempt starts from it." })
export class Checkpoint {
  @Field(() => GraphQLJSON, { description: "Whatever the task stored." })
  data: unknown;

  @Field(() => Int, { description: "The attempt that stored it." })
  attempt: number;

  @Field({ description: "When it was stored." })
  updatedAt: Date;
}

@ObjectType({ description: "What a claimed attempt asked for: a Kubernetes executor requests it for the attempt's pod." })
export class TaskAssignmentResources {
  @Field(() => Float, { description: "CPU cores." })
  cpu: number;

  @Field(() => Int, { description: "Memory in MiB." })
  memoryMb: number;

  @Field(() => Int, { description: "Number of GPUs." })
  gpus: number;

  @Field(() => String, { nullable: true, description: "GPU type asked for (e.g. NVIDIA-H100-80GB-HBM3), if any." })
  gpuType: string | null;
}

@ObjectType({ description: "A claimed task: what to run, with which credentials, until when." })
export class TaskAssignment {
  @Field(() => TaskRun, { description: "The task run claimed." })
  taskRun: TaskRun;

  @Field({ description: "Proves this attempt owns the task; send it with heartbeats, logs and completion." })
  leaseToken: string;

  @Field({ description: "When the lease runs out unless a heartbeat extends it." })
  leaseExpiresAt: Date;

  @Field(() => Int, { description: "Seconds a lease lasts from each heartbeat the server answers: executors time their own deadline with it rather than with leaseExpiresAt and their clock." })
  leaseSeconds: number;

  @Field(() => [String], { description: "argv to run (for operator shell: sh -c <command>)." })
  command: string[];

  @Field({ description: "python, shell or command." })
  operator: string;

  @Field(() => GraphQLJSON, {
    description:
      "Environment for the process: MLGRAPH_TOKEN (task-scoped), MLGRAPH_RUN_ID, MLGRAPH_TASK_RUN_ID, MLGRAPH_CHECKPOINT, CUDA_VISIBLE_DEVICES, MLGRAPH_PARAMS and MLGRAPH_PARAM_<NAME>, plus the task's env. The executor adds MLGRAPH_URL.",
  })
  env: Record<string, string>;

  @Field(() => [Int], { description: "GPU indices given to this attempt." })
  gpus: number[];

  @Field(() => ID, { description: "The tracking run of this attempt." })
  runId: string;

  @Field(() => Checkpoint, { nullable: true, description: "The last checkpoint of an earlier attempt." })
  checkpoint: Checkpoint | null;

  @Field(() => Int, { description: "Stop the process after this many seconds and report TIMED_OUT." })
  timeoutSeconds: number;

  @Field(() => String, { nullable: true, description: "The task's container image (spec `image`); Kubernetes executors need one, local executors ignore it." })
  image: string | null;

  @Field(() => TaskAssignmentResources, { description: "The task's resources (spec `resources`)." })
  resources: TaskAssignmentResources;
}

@ObjectType({ description: "Answer to a heartbeat." })
export class TaskHeartbeat {
  @Field({ description: "Stop the process (SIGTERM, then SIGKILL) and report CANCELLED." })
  cancelRequested: boolean;

  @Field({ description: "The extended lease expiry." })
  leaseExpiresAt: Date;

  @Field(() => TaskRun, { description: "The task run now." })
  taskRun: TaskRun;
}

@ObjectType({ description: "Consecutive log lines of a task run." })
export class TaskLogBatch {
  @Field(() => ID, { description: "The task run." })
  taskRunId: string;

  @Field(() => Int, { description: "Number (0-based) of the first line in this batch." })
  fromLine: number;

  @Field(() => [String], { description: "The lines." })
  lines: string[];
}

@ObjectType({ description: "An executor pool and its load." })
export class Pool {
  @Field({ description: "Pool name." })
  name: string;

  @Field(() => Int, { description: "Executors registered." })
  executors: number;

  @Field(() => Int, { description: "Executors ONLINE." })
  onlineExecutors: number;

  @Field(() => Int, { description: "Tasks waiting to be claimed." })
  queuedTasks: number;

  @Field(() => Int, { description: "Tasks claimed or running." })
  runningTasks: number;
}

@ObjectType({ description: "One attempt of a task run." })
export class TaskAttempt {
  @Field(() => Int, { description: "1-based." })
  attempt: number;

  @Field(() => ID, { description: "Its tracking run." })
  runId: string;

  @Field(() => ID, { nullable: true, description: "Executor that ran it." })
  executorId: string | null;

  @Field(() => [Int], { description: "GPUs it had." })
  assignedGpus: number[];

  @Field(() => String, {
    nullable: true,
    description: "SUCCEEDED, FAILED, EXECUTOR_LOST, TIMED_OUT, CANCELLED or NOT_STARTED (its executor could not set it up; see TaskOutcome); null while live.",
  })
  outcome: string | null;

  @Field(() => String, { nullable: true, description: "Why it failed." })
  error: string | null;

  @Field({ description: "When it was claimed." })
  claimedAt: Date;

  @Field(() => Date, { nullable: true, description: "When it ended." })
  finishedAt: Date | null;
}
