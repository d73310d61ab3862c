import type { Logger } from "pino";
import type { Config } from "../config.js";
import { openMetricStore, type MetricStore } from "../stores/metric-store/index.js";
import { countClickHouseQuery } from "./query-counts.js";

/**
 * Opens the metric store the config names: ClickHouse over HTTP when CLICKHOUSE_URL is set,
 * otherwise the in-process engine under `<dataDir>/clickhouse`. The embedded engine is one
 * process's: several API replicas need CLICKHOUSE_URL (each would otherwise see only its own
 * metrics; live streams still cross replicas through Redis).
 */
export async function openConfiguredMetricStore(config: Config, log: Logger): Promise<MetricStore> {
  const { url, username, password, database, cluster } = config.clickhouse;
  const onQuery = config.debugQueryCounts ? countClickHouseQuery : undefined;
  const store = await openMetricStore(url ? { url, username, password, database, cluster, onQuery } : { dataDir: config.dataDir, cluster, onQuery });
  log.info({ backend: store.backend, cluster }, "metric store opened");
  return store;
}
