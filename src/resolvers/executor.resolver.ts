import { Arg, Authorized, Ctx, FieldResolver, ID, Int, Mutation, Query, Resolver, Root } from "type-graphql";
import { Executor } from "../entities/executor.entity.js";
import { TaskRun } from "../entities/task-run.entity.js";
import type { RequestContext } from "../services/context.js";
import { CompleteTaskInput, HeartbeatInput, Pool, RegisterExecutorInput, TaskAssignment, TaskHeartbeat } from "./types/pipeline.types.js";

@Resolver(() => Executor)
export class ExecutorResolver {
  @Authorized("viewer")
  @Query(() => [Executor], { description: "Registered executors, by pool (OFFLINE ones are deleted after the server's retention, 7 days by default)." })
  executors(
    @Ctx() ctx: RequestContext,
    @Arg("pool", () => String, { nullable: true, description: "Only this pool." }) pool?: string,
    @Arg("status", () => String, { nullable: true, description: "Only ONLINE or only OFFLINE executors." }) status?: string,
  ) {
    return ctx.services.pipelineRuns.executors(ctx, pool, status);
  }

  @Authorized("viewer")
  @Query(() => [Pool], { description: "Pools with their executors and queue depth." })
  pools(@Ctx() ctx: RequestContext) {
    return ctx.services.pipelineRuns.pools(ctx);
  }

  @Authorized(["executor", "admin"])
  @Mutation(() => Executor, { description: "An executor announces its pool, labels, CPU, memory and GPUs." })
  registerExecutor(@Ctx() ctx: RequestContext, @Arg("input", () => RegisterExecutorInput, { description: "The executor." }) input: RegisterExecutorInput) {
    return ctx.services.taskQueue.registerExecutor(ctx, input);
  }

  @Authorized(["executor", "admin"])
  @Mutation(() => TaskAssignment, {
    nullable: true,
    description: "Long-poll: returns a task that fits the executor's free resources as soon as one is queued, or null after waitSeconds.",
  })
  claimTask(
    @Ctx() ctx: RequestContext,
    @Arg("executorId", () => ID, { description: "The registered executor." }) executorId: string,
    @Arg("waitSeconds", () => Int, { nullable: true, description: "How long to wait for work (0–60, default 0)." }) waitSeconds?: number,
    @Arg("claimId", () => ID, {
      nullable: true,
      description:
        "The executor's own id for this call (a fresh UUID per call), sent again unchanged when it resends the call after a failure that may have lost the answer (network error, time-out, 5xx). A call whose id an earlier call already claimed tasks with is answered at once with those tasks that are still CLAIMED by this executor (not completed, not heartbeated, not reaped) under new lease and task tokens (the earlier ones stop working), instead of claiming more; of calls sharing an id only the latest is answered with tasks. Remembered for at least an hour (or two leases). Without it every call claims anew, as before.",
    })
    claimId?: string | null,
  ) {
    return ctx.services.taskQueue.claim(ctx, executorId, waitSeconds, claimId);
  }

  @Authorized(["executor", "admin"])
  @Mutation(() => [TaskAssignment], {
    description:
      "Long-poll for an executor with several free slots: up to maxTasks tasks that fit its free resources together, as soon as at least one is queued; an empty list after waitSeconds.",
  })
  claimTasks(
    @Ctx() ctx: RequestContext,
    @Arg("executorId", () => ID, { description: "The registered executor." }) executorId: string,
    @Arg("maxTasks", () => Int, { description: "At most this many tasks (1–100): the executor's free slots." }) maxTasks: number,
    @Arg("waitSeconds", () => Int, { nullable: true, description: "How long to wait for work (0–60, default 0)." }) waitSeconds?: number,
    @Arg("claimId", () => ID, {
      nullable: true,
      description:
        "The executor's own id for this call (a fresh UUID per call), sent again unchanged when it resends the call after a failure that may have lost the answer (network error, time-out, 5xx). A call whose id an earlier call already claimed tasks with is answered at once with those tasks that are still CLAIMED by this executor (not completed, not heartbeated, not reaped) under new lease and task tokens (the earlier ones stop working), instead of claiming more; of calls sharing an id only the latest is answered with tasks. Remembered for at least an hour (or two leases). Without it every call claims anew, as before.",
    })
    claimId?: string | null,
  ) {
    return ctx.services.taskQueue.claimMany(ctx, executorId, maxTasks, waitSeconds, claimId);
  }

  @Authorized(["executor", "admin"])
  @Mutation(() => TaskHeartbeat, { description: "Extends the lease, stores a checkpoint, and says whether cancellation was requested." })
  heartbeatTask(@Ctx() ctx: RequestContext, @Arg("input", () => HeartbeatInput, { description: "The attempt." }) input: HeartbeatInput) {
    return ctx.services.taskQueue.heartbeat(ctx, input);
  }

  @Authorized(["executor", "admin"])
  @Mutation(() => TaskRun, { description: "Ends an attempt. A stale lease token is refused with CONFLICT and changes nothing." })
  completeTask(@Ctx() ctx: RequestContext, @Arg("input", () => CompleteTaskInput, { description: "The outcome." }) input: CompleteTaskInput) {
    return ctx.services.taskQueue.complete(ctx, input);
  }

  @Authorized(["executor", "admin"])
  @Mutation(() => [TaskRun], {
    description:
      "Ends several attempts (at most 100) in one transaction, all or nothing: a stale lease refuses the whole call with CONFLICT, naming its index, and changes nothing.",
  })
  completeTasks(@Ctx() ctx: RequestContext, @Arg("inputs", () => [CompleteTaskInput], { description: "The outcomes." }) inputs: CompleteTaskInput[]) {
    return ctx.services.taskQueue.completeMany(ctx, inputs);
  }

  @Authorized(["executor", "admin"])
  @Mutation(() => Boolean, { description: "Appends stdout/stderr lines of a live attempt to the task run's log." })
  appendTaskLogs(
    @Ctx() ctx: RequestContext,
    @Arg("taskRunId", () => ID, { description: "The task run." }) taskRunId: string,
    @Arg("leaseToken", { description: "The attempt's lease token." }) leaseToken: string,
    @Arg("lines", () => [String], { description: "Lines, oldest first (at most 5,000)." }) lines: string[],
    @Arg("fromLine", () => Int, {
      nullable: true,
      description:
        "The task run's line number of the first line: its logLines when the attempt was claimed plus the lines sent since. Makes a resend after a lost answer store only the lines not stored yet; past the stored lines it is refused (BAD_USER_INPUT). Without it the lines are appended.",
    })
    fromLine?: number | null,
  ) {
    return ctx.services.taskQueue.appendLogs(ctx, taskRunId, leaseToken, lines, fromLine);
  }

  @FieldResolver(() => [TaskRun], { description: "Tasks it has claimed and not finished." })
  runningTasks(@Root() executor: Executor, @Ctx() ctx: RequestContext) {
    return ctx.loaders.runningTasksOfExecutor.load(executor.id);
  }
}
