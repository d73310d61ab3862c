import type { Logger } from "pino";
import type { Config } from "../config.js";
import type { AppServices, BackgroundWorker, Stores } from "./app-services.js";
import type { RequestContext } from "./context.js";
import type { ExperimentsService } from "./experiments.service.js";
import type { TokensService } from "./tokens.service.js";
import { createLoaders } from "./loaders.js";
import { PipelinesService } from "./pipelines.service.js";
import { PipelineRunsService, type PipelineModelRegistrar } from "./pipeline-runs.service.js";
import { announceWebhookEvents, enqueueWebhookEvent } from "./webhooks.service.js";
import { CHAMPION_ALIAS } from "./registry.service.js";
import { DomainError } from "./errors.js";
import { TaskQueue } from "../scheduler/task-queue.js";
import { SchedulerLoop } from "../scheduler/scheduler-loop.js";

/** The pipeline part of the service container. */
export interface PipelineServices {
  pipelines: PipelinesService;
  pipelineRuns: PipelineRunsService;
  taskQueue: TaskQueue;
  scheduler: SchedulerLoop;
}

/** The scheduler's own identity, for work no request asked for (reaping, on_success). */
export function systemContext(services: AppServices, log: Logger): RequestContext {
  return {
    principal: { kind: "anonymous", id: "scheduler", name: "scheduler", role: "admin", scope: {} },
    services,
    loaders: createLoaders(services),
    log,
  };
}

/**
 * Builds pipelines, runs, the task queue and the scheduler loop. `getServices` is read lazily:
 * on_success and the reaper act with a system context over the finished container.
 */
export function createPipelineServices(
  config: Config,
  log: Logger,
  stores: Stores,
  deps: { experiments: ExperimentsService; tokens: TokensService },
  workers: BackgroundWorker[],
  getServices: () => AppServices,
): PipelineServices {
  const schedulerLog = log.child({ component: "scheduler" });
  const pipelines = new PipelinesService(stores.db);
  const taskQueue = new TaskQueue(stores.db, stores.bus, config, schedulerLog);
  const pipelineRuns = new PipelineRunsService(stores.db, stores.bus, pipelines, deps.experiments, taskQueue, schedulerLog);
  const system = () => systemContext(getServices(), schedulerLog);
  taskQueue.onPipelineSucceeded = (pipelineRunId) => pipelineRuns.runOnSuccess(system(), modelRegistrar(getServices()), pipelineRunId);
  // PIPELINE_RUN_FINISHED goes to the webhook outbox in the transaction that finishes the run.
  // The run's on_success action is marked due in the same transaction (see runOnSuccess).
  taskQueue.onPipelineFinishedTx = async (em, pipelineRunId, status) => {
    const rows: { name: string }[] = await em.query("SELECT p.name FROM pipeline_runs r JOIN pipelines p ON p.id = r.pipeline_id WHERE r.id = $1", [pipelineRunId]);
    await enqueueWebhookEvent(em, "PIPELINE_RUN_FINISHED", { pipelineRunId, pipelineName: rows[0]?.name ?? null, status });
    if (status === "SUCCEEDED") {
      await em.query(
        `UPDATE pipeline_runs r SET on_success_due = true FROM pipeline_versions v
          WHERE r.id = $1 AND v.id = r.pipeline_version_id AND v.spec -> 'pipeline' -> 'on_success' -> 'register_model' IS NOT NULL`,
        [pipelineRunId],
      );
    }
  };
  taskQueue.onPipelinesFinished = () => announceWebhookEvents(stores.bus);
  const scheduler = new SchedulerLoop(stores.db, stores.bus, taskQueue, config, schedulerLog, system);
  // Actions a crash or an outage left due; the finishing request normally ran them at once.
  scheduler.onSuccessSweep = () => pipelineRuns.runDueOnSuccessActions(system(), modelRegistrar(getServices()), ON_SUCCESS_RETRY_AFTER_SECONDS);
  workers.push(scheduler, { name: "task queue waiters", start: () => undefined, stop: () => taskQueue.close() });
  return { pipelines, pipelineRuns, taskQueue, scheduler };
}

/** How long after a run finished the scheduler takes over an on_success action still due. */
const ON_SUCCESS_RETRY_AFTER_SECONDS = 10;

/**
 * The registry's `registerFromPipeline` when it offers one; otherwise the same built from its
 * public operations (create the model when missing, create the version, point the alias).
 */
function modelRegistrar(services: AppServices): PipelineModelRegistrar | undefined {
  const registry = (services as { registry?: unknown }).registry as
    | (Partial<PipelineModelRegistrar> & {
        getModel?: (ctx: RequestContext, name: string) => Promise<unknown>;
        createModel?: (ctx: RequestContext, input: { name: string; description?: string | null }) => Promise<unknown>;
        createVersion?: (
          ctx: RequestContext,
          input: { modelName: string; runId: string; artifactPath: string; description?: string | null },
          options: { reuseSameArtifact: boolean },
        ) => Promise<{ version: number }>;
        setAlias?: (ctx: RequestContext, modelName: string, alias: string, version: number) => Promise<unknown>;
      })
    | undefined;
  if (!registry) return undefined;
  if (typeof registry.registerFromPipeline === "function") return registry as PipelineModelRegistrar;
  const { getModel, createModel, createVersion, setAlias } = registry;
  if (!getModel || !createModel || !createVersion || !setAlias) return undefined;
  return {
    async registerFromPipeline(ctx, input) {
      const model = (await getModel.call(registry, ctx, input.modelName)) as { id: string } | null;
      if (!model) {
        try {
          await createModel.call(registry, ctx, { name: input.modelName, description: null });
        } catch (err) {
          // A concurrent pipeline run may have created it meanwhile.
          if ((err as { code?: string }).code !== "CONFLICT") throw err;
        }
      }
      // A try interrupted after registering (a crash before the pipeline run recorded it), or one
      // still running past its claim while the scheduler tries again, made the version already:
      // reuse it rather than register the same artifact twice.
      const version = await createVersion.call(
        registry,
        ctx,
        { modelName: input.modelName, runId: input.runId, artifactPath: input.artifactPath, description: input.description ?? null },
        { reuseSameArtifact: true },
      );
      if (input.alias) {
        // The scheduler acts as admin: never let it move @champion for whoever submitted the run
        // (specs refuse that alias when saved; this covers versions saved before that check).
        if (input.alias.replace(/^@/, "").toLowerCase() === CHAMPION_ALIAS) {
          throw new DomainError("FORBIDDEN", "on_success.register_model.alias: @champion moves only with an approved Production transition", "alias");
        }
        await setAlias.call(registry, ctx, input.modelName, input.alias, version.version);
      }
      return { version: version.version };
    },
  };
}
