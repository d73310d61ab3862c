import { Gauge } from "prom-client";
import type { AppServices } from "../services/app-services.js";
import { rows } from "../scheduler/sql.js";
import { addScrapeCollector, executorsOnline, metricsRegistry, queueDepth } from "./observability.js";

export const schedulerLeader = new Gauge({
  name: "mlgraph_scheduler_leader",
  help: "1 on the replica that holds the scheduler leader lock, else 0",
  registers: [metricsRegistry],
});

/**
 * Sets a per-pool gauge from fresh counts. A pool that was reported before and has no rows now
 * is set to 0 rather than dropped, so dashboards see the queue drain instead of a gap.
 */
function setPerPool(gauge: Gauge<"pool">, known: Set<string>, counts: { pool: string; n: string | number }[]): void {
  const seen = new Set<string>();
  for (const { pool, n } of counts) {
    gauge.set({ pool }, Number(n));
    seen.add(pool);
    known.add(pool);
  }
  for (const pool of known) if (!seen.has(pool)) gauge.set({ pool }, 0);
}

/**
 * Registers the scrape-time collectors of the database-backed gauges: queue depth and online
 * executors per pool (one grouped query each, both served by partial/pool indexes), and whether
 * this replica leads the scheduler (an in-memory flag, no query). Call once per process.
 */
export function registerScrapeCollectors(services: AppServices): void {
  const queuePools = new Set<string>();
  const executorPools = new Set<string>();
  const log = services.log.child({ component: "metrics" });
  // A failed refresh keeps the last values; it is logged here because renderMetrics settles all collectors.
  const logged = (what: string, collect: () => Promise<void>) => async () => {
    try {
      await collect();
    } catch (err) {
      log.warn({ err: (err as Error).message, gauge: what }, "could not refresh a /metrics gauge");
      throw err;
    }
  };
  addScrapeCollector(
    logged("mlgraph_task_queue_depth", async () => {
      const counts = await rows<{ pool: string; n: string }>(services.db, "SELECT pool, count(*) AS n FROM task_runs WHERE status = 'QUEUED' GROUP BY pool");
      setPerPool(queueDepth, queuePools, counts);
    }),
  );
  addScrapeCollector(
    logged("mlgraph_executors_online", async () => {
      // Same rule as the scheduler's OFFLINE marking, so the gauge is right even between its passes.
      const counts = await rows<{ pool: string; n: string }>(
        services.db,
        "SELECT pool, count(*) AS n FROM executors WHERE status = 'ONLINE' AND last_seen_at >= now() - $1 * interval '1 second' GROUP BY pool",
        [services.config.executorOfflineSeconds],
      );
      setPerPool(executorsOnline, executorPools, counts);
    }),
  );
  addScrapeCollector(async () => {
    schedulerLeader.set(services.scheduler.isLeader ? 1 : 0);
  });
}
