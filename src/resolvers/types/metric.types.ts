import { Field, Float, ID, InputType, ObjectType } from "type-graphql";
import { SafeIntResolver } from "graphql-scalars";
import { Run } from "../../entities/run.entity.js";
import { FloatMatrix } from "./column-scalars.js";

/** 53-bit integers (steps, counts): JSON numbers beyond 2^53 would silently lose precision. */
export const SafeInt = SafeIntResolver;

@InputType({ description: "One metric observation." })
export class MetricPointInput {
  @Field({ description: "Metric name: 1-250 characters of letters, digits, '_', '.', '-', '/' or space." })
  key: string;

  @Field(() => Float, { description: "A finite number." })
  value: number;

  @Field(() => SafeInt, { nullable: true, description: "Non-negative training step; defaults to 0." })
  step?: number | null;

  @Field(() => Date, { nullable: true, description: "When it was observed; defaults to the time of the call." })
  timestamp?: Date | null;
}

// Metric types are plain data read in bulk (a 1,000-run comparison has ~60,000 fields), so their
// fields use graphql-js's default resolver (`simpleResolvers`) instead of type-graphql's per-field
// wrapper; none of them has field-level auth or middleware, which that option would skip.
@ObjectType({ simpleResolvers: true, description: "What logMetrics stored." })
export class LogMetricsResult {
  @Field(() => SafeInt, { description: "Points stored by this call (0 when the batch had already been stored under its idempotency key)." })
  accepted: number;

  @Field({ description: "True when this idempotency key had already been used for the run: the retry stored nothing new." })
  deduplicated: boolean;
}

@ObjectType({ simpleResolvers: true, description: "Aggregates of one metric of one run, kept by ClickHouse as points arrive." })
export class MetricSummary {
  @Field(() => Float, { description: "Smallest value." })
  min: number;

  @Field(() => Float, { description: "Largest value." })
  max: number;

  @Field(() => Float, { description: "Value at the highest step (ties: latest timestamp)." })
  last: number;

  @Field(() => SafeInt, { description: "Step of the last value." })
  lastStep: number;

  @Field(() => SafeInt, { description: "Number of points logged." })
  count: number;

  @Field(() => Date, { description: "Timestamp of the last value." })
  lastTimestamp: number;
}

@ObjectType({ simpleResolvers: true, description: "One point of a metric's history." })
export class MetricPoint {
  @Field(() => SafeInt, { description: "Training step." })
  step: number;

  @Field(() => Float, { description: "Value." })
  value: number;

  @Field(() => Date, { description: "When it was observed." })
  timestamp: number;
}

@ObjectType({ simpleResolvers: true, description: "A logged point with its metric key (live streams)." })
export class KeyedMetricPoint extends MetricPoint {
  @Field({ description: "Metric name." })
  key: string;
}

@ObjectType({ simpleResolvers: true, description: "Points of one run, replayed or just committed." })
export class MetricBatch {
  @Field(() => ID, { description: "The run." })
  runId: string;

  @Field(() => [KeyedMetricPoint], { description: "The points, in the order they were logged (replay: by step)." })
  points: KeyedMetricPoint[];
}

/** A metric of a run; summary and history are loaded through per-request DataLoaders. */
@ObjectType({ simpleResolvers: true, description: "One metric of one run." })
export class Metric {
  @Field({ description: "Metric name." })
  key: string;

  runId: string;
  /** Present when the summary was already loaded (Run.metric checks existence with it). */
  loadedSummary?: MetricSummary;
  /** Otherwise a lower bound of the point count, when the series was seen before. */
  countAtLeast?: number;
}

@ObjectType({ simpleResolvers: true, description: "One metric of one run in a comparison." })
export class ComparedMetric {
  @Field({ description: "Metric name." })
  key: string;

  @Field(() => MetricSummary, { nullable: true, description: "Null when the run has no such metric." })
  summary: MetricSummary | null;

  @Field(() => Float, { nullable: true, description: "This run's last value minus the baseline run's last value; null without a baseline or a value." })
  diffFromBaseline: number | null;
}

@ObjectType({ simpleResolvers: true, description: "One run's row of a comparison." })
export class RunComparisonRow {
  @Field(() => Run, { description: "The run." })
  run: Run;

  @Field(() => [ComparedMetric], { description: "One entry per compared metric key, in the order of metricKeys." })
  metrics: ComparedMetric[];
}

@ObjectType({
  simpleResolvers: true,
  description:
    "The comparison as matrices, for wide tables and charts: row i is runIds[i], column j is metricKeys[j], null where the run has no such metric. " +
    "One JSON value per matrix instead of a GraphQL object per cell (a 1,000 x 10 comparison is ~60,000 fields as rows).",
})
export class ComparisonColumns {
  @Field(() => [ID], { description: "Row order: the compared runs, in the order asked." })
  runIds: string[];

  @Field(() => [String], { description: "Column order: the compared metric keys." })
  metricKeys: string[];

  @Field(() => FloatMatrix, { description: "Smallest value per run and metric." })
  min: (number | null)[][];

  @Field(() => FloatMatrix, { description: "Largest value per run and metric." })
  max: (number | null)[][];

  @Field(() => FloatMatrix, { description: "Value at the highest step per run and metric." })
  last: (number | null)[][];

  @Field(() => FloatMatrix, { description: "last minus the baseline run's last; null without a baseline or a value." })
  diffFromBaseline: (number | null)[][];
}

@ObjectType({ simpleResolvers: true, description: "Runs side by side: per run and metric min/max/last, differences to a baseline, and the params that differ." })
export class RunComparison {
  @Field(() => [Run], { description: "The compared runs, in the order asked." })
  runs: Run[];

  @Field(() => [String], { description: "The compared metric keys (the ones asked, or every key any of the runs logged)." })
  metricKeys: string[];

  @Field(() => [String], { description: "Param keys whose values are not the same in every run (missing counts as different)." })
  differingParams: string[];

  @Field(() => [RunComparisonRow], { description: "One row per run, in the order of runs." })
  rows: RunComparisonRow[];

  @Field(() => ComparisonColumns, { description: "The same figures as matrices (cheaper to fetch for wide comparisons)." })
  columns: ComparisonColumns;
}
