import path from "node:path";
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
  const onRepair = (event: { runs: number; reason: string; error?: unknown }) =>
    event.error
      ? log.error(
          { runs: event.runs, reason: event.reason, err: (event.error as Error).message },
          event.reason === "journal unwritable"
            ? "cannot write the metric insert journal: a crash now could leave summaries short of their raw points"
            : "metric summaries of these runs are not repaired yet; retried between inserts (with backoff) and at the next start",
        )
      : log.warn({ runs: event.runs, reason: event.reason }, "repaired metric summaries and rollups of runs an insert was cut short for");
  // The journal lives in this server's data dir in both modes (one server process per data dir).
  const insertJournalFile = path.join(config.dataDir, "clickhouse-insert-journal.json");
  const store = await openMetricStore(
    url ? { url, username, password, database, cluster, onQuery, onRepair, insertJournalFile } : { dataDir: config.dataDir, cluster, onQuery, onRepair, insertJournalFile },
  );
  log.info({ backend: store.backend, cluster }, "metric store opened");
  return store;
}
