import type { GraphQLResolveInfo } from "graphql";
import { Arg, Authorized, Ctx, Float, FieldResolver, ID, Info, Int, Mutation, Query, Resolver, Root, Subscription } from "type-graphql";
import { Run } from "../entities/run.entity.js";
import type { RequestContext } from "../services/context.js";
import type { MetricBatchEvent } from "../services/metrics.service.js";
import {
  LogMetricsResult,
  Metric,
  MetricBatch,
  MetricPoint,
  MetricPointInput,
  MetricSummary,
  RunComparison,
  SafeInt,
} from "./types/metric.types.js";
import { type Column, FloatColumn, SafeIntColumn, StringColumn } from "./types/column-scalars.js";
import { selectsField } from "./selection.js";

/** Metric fields of Run, metric ingest, comparison and the live metric stream. */
@Resolver(() => Run)
export class RunMetricsResolver {
  @FieldResolver(() => [String], { description: "Keys of the metrics this run logged, sorted." })
  metricKeys(@Root() run: Run, @Ctx() ctx: RequestContext): Promise<string[]> {
    return ctx.loaders.metricKeys.load(run.id);
  }

  @FieldResolver(() => Metric, { nullable: true, description: "One metric by key; null when the run never logged it." })
  async metric(@Root() run: Run, @Ctx() ctx: RequestContext, @Arg("key", { description: "Metric name." }) key: string): Promise<Metric | null> {
    return ctx.services.metrics.metricOf(ctx, run.id, key);
  }

  @FieldResolver(() => [Metric], { description: "Several metrics (all when keys is omitted), in the order of keys; keys the run never logged are left out." })
  async metrics(
    @Root() run: Run,
    @Ctx() ctx: RequestContext,
    @Arg("keys", () => [String], { nullable: true, description: "Metric names; omit for every metric of the run." }) keys?: string[] | null,
  ): Promise<Metric[]> {
    return ctx.services.metrics.metricsOf(ctx, run.id, keys);
  }

  @Authorized(["editor", "task"])
  @Mutation(() => LogMetricsResult, {
    description:
      "Logs up to 10,000 metric points to a run. Answered once they are stored (concurrent calls share one INSERT). " +
      "Retrying with the same idempotencyKey stores the batch once. Errors name the point, e.g. points[3].value.",
  })
  logMetrics(
    @Ctx() ctx: RequestContext,
    @Arg("runId", () => ID, { description: "A run that exists and is not deleted." }) runId: string,
    @Arg("points", () => [MetricPointInput], { description: "Up to 10,000 points." }) points: MetricPointInput[],
    @Arg("idempotencyKey", () => String, { nullable: true, description: "Client-chosen id of this batch (1-250 characters); a retry with the same key is stored once." })
    idempotencyKey?: string | null,
  ): Promise<LogMetricsResult> {
    return ctx.services.metrics.logMetrics(ctx, runId, points, idempotencyKey);
  }

  @Authorized(["editor", "task"])
  @Mutation(() => LogMetricsResult, {
    description:
      "Columnar logMetrics for large batches: parallel arrays (point i is keys[i], steps[i], values[i], timestamps[i]). " +
      "Same rules; errors name the array and index, e.g. values[3].",
  })
  logMetricColumns(
    @Ctx() ctx: RequestContext,
    @Arg("runId", () => ID, { description: "A run that exists and is not deleted." }) runId: string,
    @Arg("keys", () => StringColumn, { description: "Metric name of each point (up to 10,000 points)." }) keys: Column<string>,
    @Arg("steps", () => SafeIntColumn, { description: "Non-negative step of each point." }) steps: Column<number>,
    @Arg("values", () => FloatColumn, { description: "Finite value of each point." }) values: Column<number>,
    @Arg("timestamps", () => SafeIntColumn, { nullable: true, description: "Epoch milliseconds of each point; omitted: the time of the call." })
    timestamps?: Column<number> | null,
    @Arg("idempotencyKey", () => String, { nullable: true, description: "Client-chosen id of this batch; a retry with the same key is stored once." })
    idempotencyKey?: string | null,
  ): Promise<LogMetricsResult> {
    const columns = { keys: keys.items, steps: steps.items, values: values.items, timestamps: timestamps?.items };
    return ctx.services.metrics.logMetricColumns(ctx, runId, columns, idempotencyKey);
  }

  @Authorized("viewer")
  @Query(() => RunComparison, { description: "The seed's comparison flow: per run and metric min/max/last, and differences to a baseline." })
  compareRuns(
    @Ctx() ctx: RequestContext,
    @Arg("runIds", () => [ID], { description: "Up to 1,000 runs." }) runIds: string[],
    @Arg("metricKeys", () => [String], { nullable: true, description: "Metrics to compare (up to 100); omitted: every key any of the runs logged." })
    metricKeys?: string[] | null,
    @Arg("baselineRunId", () => ID, { nullable: true, description: "One of runIds; diffFromBaseline is relative to its last values." })
    baselineRunId?: string | null,
    @Info() info?: GraphQLResolveInfo,
  ): Promise<RunComparison> {
    const withRows = info ? selectsField(info, "rows") : true;
    return ctx.services.runComparison.compare(ctx, { runIds, metricKeys, baselineRunId, withRows });
  }

  @Authorized("viewer")
  @Subscription(() => MetricBatch, {
    description: "Replays points from fromStep (when given), then streams new ones live as they are committed, with no gap and no duplicate in between.",
    subscribe: ({ args, context }) =>
      (context as RequestContext).services.metricStreams.subscribe(context as RequestContext, args as { runId: string; keys?: string[]; fromStep?: number }),
  })
  metricsLogged(
    @Root() batch: MetricBatchEvent,
    @Arg("runId", () => ID, { description: "The run." }) _runId: string,
    @Arg("keys", () => [String], { nullable: true, description: "Only these metrics; omitted: all." }) _keys?: string[],
    @Arg("fromStep", () => SafeInt, { nullable: true, description: "Replay stored points from this step first; omitted: live points only." }) _fromStep?: number,
  ): MetricBatch {
    return batch;
  }
}

/** Summary and history of one run's metric, batched per request. */
@Resolver(() => Metric)
export class MetricResolver {
  @FieldResolver(() => MetricSummary, { description: "min, max, last, count (from the aggregate table, never the raw points)." })
  summary(@Root() metric: Metric, @Ctx() ctx: RequestContext): MetricSummary | Promise<MetricSummary> {
    if (metric.loadedSummary) return metric.loadedSummary;
    return ctx.loaders.metricSummary.load({ runId: metric.runId, key: metric.key }) as Promise<MetricSummary>;
  }

  @FieldResolver(() => [MetricPoint], { description: "At most maxPoints points, downsampled in the store (largest-triangle-three-buckets) when the series is longer." })
  history(
    @Root() metric: Metric,
    @Ctx() ctx: RequestContext,
    @Arg("minStep", () => SafeInt, { nullable: true, description: "First step (inclusive)." }) minStep?: number | null,
    @Arg("maxStep", () => SafeInt, { nullable: true, description: "Last step (inclusive)." }) maxStep?: number | null,
    @Arg("maxPoints", () => Int, { defaultValue: 1000, description: "At most this many points (1 to 100,000)." }) maxPoints?: number,
  ): Promise<MetricPoint[]> {
    const knownCount = metric.loadedSummary?.count;
    const request = ctx.services.metrics.historyRequest(metric.runId, metric.key, { minStep, maxStep, maxPoints, knownCount, countAtLeast: metric.countAtLeast });
    return ctx.loaders.metricHistory.load(request);
  }
}
