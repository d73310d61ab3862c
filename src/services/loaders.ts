import DataLoader from "dataloader";
import type { Experiment } from "../entities/experiment.entity.js";
import type { Run } from "../entities/run.entity.js";
import type { ArtifactRecord } from "../entities/artifact.entity.js";
import type { KeyValue } from "./validation.js";
import { EMPTY_PAGE, type Page, type PageArgs } from "./pagination.js";
import { loaderByArgs } from "./grouped-loader.js";
import type { RunInputView } from "./runs.service.js";
import type { AppServices } from "./app-services.js";
import { createRegistryLoaders } from "./registry-loaders.js";
import { createPipelineLoaders } from "./pipeline-loaders.js";
import type { HistoryRequest, MetricPoint, MetricSummary } from "../stores/metric-store/index.js";
import type { MetricRef } from "./metrics.service.js";

function byKey<T>(keys: readonly string[], rows: T[], key: (row: T) => string): (T | null)[] {
  const map = new Map(rows.map((r) => [key(r), r]));
  return keys.map((k) => map.get(k) ?? null);
}

function listsFor<T>(keys: readonly string[], map: Map<string, T[]>): T[][] {
  return keys.map((k) => map.get(k) ?? []);
}

/**
 * Per-request DataLoaders (and per graphql-ws operation): every list that can fan out is read in
 * one batched query, and nothing is cached across requests.
 */
export function createLoaders(services: AppServices) {
  return {
    experimentById: new DataLoader<string, Experiment | null>(async (ids) => byKey(ids, await services.experiments.byIds(ids), (e) => e.id)),
    experimentTags: new DataLoader<string, KeyValue[]>(async (ids) => listsFor(ids, await services.experiments.tagsFor(ids))),
    /** Experiment.runs: one search per distinct arguments, a window per experiment. */
    experimentRuns: loaderByArgs<{ filter: string | null; orderBy: string[] | null } & PageArgs, Page<Run>>(
      (experimentIds, args) => services.runs.searchRunsPerExperiment(args, experimentIds),
      EMPTY_PAGE,
    ),
    runById: new DataLoader<string, Run | null>(async (ids) => byKey(ids, await services.runs.byIds(ids), (r) => r.id)),
    runParams: new DataLoader<string, KeyValue[]>(async (ids) => listsFor(ids, await services.runs.paramsFor(ids))),
    runTags: new DataLoader<string, KeyValue[]>(async (ids) => listsFor(ids, await services.runs.tagsFor(ids))),
    runInputs: new DataLoader<string, RunInputView[]>(async (ids) => listsFor(ids, await services.runs.inputsFor(ids))),
    // Run.artifacts of every run in one statement per folder asked for.
    runArtifacts: loaderByArgs<{ prefix: string }, ArtifactRecord[]>((runIds, { prefix }) => services.artifacts.recordsUnder(runIds, prefix), []),
    // Metric reads: every summary/history/key lookup of one request is one ClickHouse query per kind.
    metricKeys: new DataLoader<string, string[]>(async (ids) => listsFor(ids, await services.metrics.metricKeys(null, ids))),
    metricSummary: new DataLoader<MetricRef, MetricSummary | null, string>(
      async (refs) => {
        const found = await services.metrics.summaries(null, refs);
        return refs.map((r) => found.get(r.runId)?.get(r.key) ?? null);
      },
      { cacheKeyFn: (r) => `${r.runId}\u0000${r.key}` },
    ),
    metricHistory: new DataLoader<HistoryRequest, MetricPoint[], string>((requests) => services.metrics.history(null, requests), {
      cacheKeyFn: (r) => JSON.stringify([r.runId, r.key, r.minStep ?? null, r.maxStep ?? null, r.maxPoints]),
    }),
    ...createRegistryLoaders(services),
    ...createPipelineLoaders(services),
  };
}

export type Loaders = ReturnType<typeof createLoaders>;
