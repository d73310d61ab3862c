import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { defaultFieldResolver, type GraphQLSchema } from "graphql";

/**
 * Prometheus metrics served at /metrics. One registry per process; services increment the
 * counters below, gauges that reflect database state are refreshed at scrape time by collectors
 * registered with `addScrapeCollector`.
 */
export const metricsRegistry = new Registry();
collectDefaultMetrics({ register: metricsRegistry, prefix: "mlgraph_process_" });

export const requestDuration = new Histogram({
  name: "mlgraph_graphql_request_duration_seconds",
  help: "GraphQL request duration by operation name and type",
  labelNames: ["operation", "type", "outcome"],
  buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  registers: [metricsRegistry],
});

export const resolverDuration = new Histogram({
  name: "mlgraph_graphql_resolver_duration_seconds",
  help: "Duration of root-field resolvers by field",
  labelNames: ["field"],
  buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  registers: [metricsRegistry],
});

export const ingestedPoints = new Counter({ name: "mlgraph_metric_points_ingested_total", help: "Metric points stored", registers: [metricsRegistry] });
export const rateLimitRefusals = new Counter({ name: "mlgraph_rate_limit_refusals_total", help: "Requests refused with RATE_LIMITED", registers: [metricsRegistry] });
export const webhookFailures = new Counter({ name: "mlgraph_webhook_delivery_failures_total", help: "Failed webhook delivery attempts", registers: [metricsRegistry] });
export const queueDepth = new Gauge({ name: "mlgraph_task_queue_depth", help: "Queued tasks per pool", labelNames: ["pool"], registers: [metricsRegistry] });
export const executorsOnline = new Gauge({ name: "mlgraph_executors_online", help: "Executors online per pool", labelNames: ["pool"], registers: [metricsRegistry] });

const scrapeCollectors: (() => Promise<void>)[] = [];

/** Registers a function that refreshes gauges just before each scrape. */
export function addScrapeCollector(collect: () => Promise<void>): void {
  scrapeCollectors.push(collect);
}

export async function renderMetrics(): Promise<string> {
  await Promise.allSettled(scrapeCollectors.map((c) => c()));
  return metricsRegistry.metrics();
}

/**
 * Times root-field resolvers (Query.x, Mutation.y) into `resolverDuration`. Only root fields are
 * wrapped, once, at startup: a per-field hook would instrument every field of wide answers.
 */
export function instrumentRootResolvers(schema: GraphQLSchema): GraphQLSchema {
  for (const type of [schema.getQueryType(), schema.getMutationType()]) {
    if (!type) continue;
    for (const field of Object.values(type.getFields())) {
      const resolve = field.resolve ?? defaultFieldResolver;
      const label = { field: `${type.name}.${field.name}` };
      field.resolve = async (source, args, context, info) => {
        const end = resolverDuration.startTimer(label);
        try {
          return await resolve(source, args, context, info);
        } finally {
          end();
        }
      };
    }
  }
  return schema;
}
