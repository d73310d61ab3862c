import type { DataSource } from "typeorm";
import type { Logger } from "pino";
import type { Config } from "../config.js";
import type { Principal } from "./principal.js";
import type { EventBus } from "../stores/event-bus/event-bus.js";
import { ExperimentsService } from "./experiments.service.js";
import { RunsService } from "./runs.service.js";
import { RunSearch } from "./run-search.js";
import { TokensService } from "./tokens.service.js";
import { RunUpdatesService } from "./run-updates.service.js";
import type { MetricStore } from "../stores/metric-store/index.js";
import { MetricsService } from "./metrics.service.js";
import { MetricStreamService } from "./metric-stream.service.js";
import { RunComparisonService } from "./run-comparison.service.js";
import type { ArtifactStore } from "../stores/artifact-store/artifact-store.js";
import { ArtifactsService } from "./artifacts.service.js";
import { RegistryService } from "./registry.service.js";
import { LineageService } from "./lineage.service.js";
import { WebhooksService } from "./webhooks.service.js";
import { WebhookDispatcher } from "./webhook-dispatcher.js";
import { AbandonedUploadsSweeper } from "./abandoned-uploads-sweeper.js";
import { createPipelineServices, type PipelineServices } from "./pipeline-services.js";

/** The service container, built once per process from the opened stores. */
export interface AppServices {
  config: Config;
  log: Logger;
  db: DataSource;
  bus: EventBus;
  experiments: ExperimentsService;
  runs: RunsService;
  tokens: TokensService;
  runUpdates: RunUpdatesService;
  /** Metric ingest and batched reads (ClickHouse), `metricsLogged` streams, `compareRuns`. */
  metrics: MetricsService;
  metricStreams: MetricStreamService;
  runComparison: RunComparisonService;
  /** Run artifacts (presigned uploads verified by size and SHA-256), model registry, lineage, webhooks. */
  artifacts: ArtifactsService;
  registry: RegistryService;
  lineage: LineageService;
  webhooks: WebhooksService;
  /** Pipelines, their runs, the task queue (claims, leases) and the scheduler loop. */
  pipelines: PipelineServices["pipelines"];
  pipelineRuns: PipelineServices["pipelineRuns"];
  taskQueue: PipelineServices["taskQueue"];
  scheduler: PipelineServices["scheduler"];
  /**
   * Loops that run beside the API (scheduler, webhook dispatcher, ...): started after the server
   * listens, stopped first on shutdown. Features push theirs in createServices.
   */
  workers: BackgroundWorker[];
  /** Set when OIDC is configured: verifies Bearer JWTs. */
  oidc?: { verify(jwt: string): Promise<Principal> };
}

export interface BackgroundWorker {
  name: string;
  start(): Promise<void> | void;
  stop(): Promise<void>;
}

export interface Stores {
  db: DataSource;
  bus: EventBus;
  metrics: MetricStore;
  /** S3 or local directory, chosen at startup (src/services/artifact-storage.ts). */
  artifacts?: ArtifactStore;
}

export function createServices(config: Config, log: Logger, stores: Stores): AppServices {
  const experiments = new ExperimentsService(stores.db);
  const runSearch = new RunSearch(stores.db);
  const runs = new RunsService(stores.db, stores.bus, runSearch);
  const tokens = new TokensService(stores.db);
  const metrics = new MetricsService(stores.metrics, stores.bus, runs, log);
  runSearch.useMetrics(metrics.searchHooks());
  const workers: BackgroundWorker[] = [];
  const webhooks = new WebhooksService(stores.db, stores.bus, config.webhookAllowlist);
  const webhookDispatcher = new WebhookDispatcher(stores.db, stores.bus, log, { ...config.webhookDelivery, allowlist: config.webhookAllowlist });
  webhooks.useDispatcher(webhookDispatcher);
  workers.push(webhookDispatcher);
  const artifacts = new ArtifactsService(stores.db, stores.artifacts);
  workers.push(new AbandonedUploadsSweeper(artifacts, config.artifactUploads, log));
  const registryServices = {
    artifacts,
    registry: new RegistryService(stores.db, stores.bus, config),
    lineage: new LineageService(stores.db),
    webhooks,
  };
  let services: AppServices | undefined;
  const pipelineServices = createPipelineServices(config, log, stores, { experiments, tokens }, workers, () => services!);
  services = { config, log, db: stores.db, bus: stores.bus, experiments, runs, tokens, runUpdates: new RunUpdatesService(), metrics, metricStreams: new MetricStreamService(), runComparison: new RunComparisonService(), ...registryServices, ...pipelineServices, workers };
  return services;
}
