import DataLoader from "dataloader";
import type { RegisteredModel } from "../entities/registered-model.entity.js";
import type { ModelVersion } from "../entities/model-version.entity.js";
import type { StageTransitionRequest } from "../entities/stage-transition-request.entity.js";
import type { WebhookDelivery, WebhookDeliveryAttempt, WebhookDeliveryStatus } from "../entities/webhook.entity.js";
import { EMPTY_PAGE, type Page, type PageArgs } from "./pagination.js";
import { loaderByArgs } from "./grouped-loader.js";
import type { KeyValue } from "./validation.js";
import type { ModelLineage } from "./lineage.service.js";
import type { AppServices } from "./app-services.js";

function byKey<T>(keys: readonly string[], rows: T[], key: (row: T) => string): (T | null)[] {
  const map = new Map(rows.map((r) => [key(r), r]));
  return keys.map((k) => map.get(k) ?? null);
}

function listsFor<T>(keys: readonly string[], map: Map<string, T[]>): T[][] {
  return keys.map((k) => map.get(k) ?? []);
}

/** Per-request loaders of the registry and webhook types (spread into createLoaders). */
export function createRegistryLoaders(services: AppServices) {
  const registry = services.registry;
  return {
    registeredModelById: new DataLoader<string, RegisteredModel | null>(async (ids) => byKey(ids, await registry.modelsByIds(ids), (m) => m.id)),
    registeredModelTags: new DataLoader<string, KeyValue[]>(async (ids) => listsFor(ids, await registry.modelTagsFor(ids))),
    registeredModelAliases: new DataLoader<string, { alias: string; version: number }[]>(async (ids) => listsFor(ids, await registry.aliasesOfModels(ids))),
    latestModelVersion: new DataLoader<string, ModelVersion | null>(async (ids) => byKey(ids, await registry.latestVersionsOf(ids), (v) => v.modelId)),
    modelVersionById: new DataLoader<string, ModelVersion | null>(async (ids) => byKey(ids, await registry.versionsByIds(ids), (v) => v.id)),
    /** Key: `${version}\u0000${modelName}` (a pipeline run records what it registered by name and number). */
    modelVersionByNumber: new DataLoader<string, ModelVersion | null>(async (keys) => {
      const pairs = keys.map((k) => {
        const at = k.indexOf("\u0000");
        return { version: Number(k.slice(0, at)), name: k.slice(at + 1) };
      });
      const rows = await registry.versionsByNumbers(pairs);
      return byKey(keys, rows, (r) => `${r.version}\u0000${r.modelName}`).map((r) => r?.modelVersion ?? null);
    }),
    modelVersionAliases: new DataLoader<string, string[]>(async (ids) => listsFor(ids, await registry.aliasesOfVersions(ids))),
    modelVersionTags: new DataLoader<string, KeyValue[]>(async (ids) => listsFor(ids, await registry.versionTagsFor(ids))),
    modelVersionsOfRun: new DataLoader<string, ModelVersion[]>(async (ids) => listsFor(ids, await registry.versionsByRuns(ids))),
    transitionRequestsOfVersion: new DataLoader<string, StageTransitionRequest[]>(async (ids) => listsFor(ids, await registry.requestsOfVersions(ids))),
    /** Key: `${limit}\u0000${modelId}`, the first page of a model's versions (later pages are read one by one). */
    modelVersionsFirstPage: new DataLoader<string, ModelVersion[]>(async (keys) => {
      const byLimit = new Map<number, string[]>();
      for (const key of keys) {
        const [limit, modelId] = key.split("\u0000") as [string, string];
        byLimit.set(Number(limit), [...(byLimit.get(Number(limit)) ?? []), modelId]);
      }
      const pages = new Map<string, ModelVersion[]>();
      for (const [limit, modelIds] of byLimit) {
        for (const [modelId, rows] of await registry.firstVersionsOf(modelIds, limit)) pages.set(`${limit}\u0000${modelId}`, rows);
      }
      return keys.map((k) => pages.get(k) ?? []);
    }),
    lineageOfRun: new DataLoader<string, ModelLineage>(async (runIds) => {
      const lineages = await services.lineage.ofRuns(runIds);
      return runIds.map((id) => lineages.get(id)!);
    }),
    /** Webhook.deliveries: one statement per distinct page request, a window per webhook. */
    webhookDeliveries: loaderByArgs<PageArgs & { status: WebhookDeliveryStatus | null }, Page<WebhookDelivery>>(
      (ids, args) => services.webhooks.deliveriesOf(ids, args),
      EMPTY_PAGE,
    ),
    webhookDeliveryAttempts: new DataLoader<string, WebhookDeliveryAttempt[]>(async (ids) => listsFor(ids, await services.webhooks.attemptsFor(ids))),
  };
}
