export { openMetricStore, MetricStore, MAX_HISTORY_POINTS } from "./metric-store.js";
export type {
  MetricStoreOptions,
  MetricQueryEvent,
  MetricSummary,
  MetricFigures,
  MetricPoint,
  KeyedMetricPoint,
  StoredMetricPoint,
  HistoryRequest,
  ComparisonOperator,
} from "./metric-store.js";
export { createClickHouseConnection } from "./clickhouse-connection.js";
export type { ClickHouseConnectionOptions, ClickHouseHandle } from "./clickhouse-connection.js";
export { metricStoreMigrations, migrationsTableStatement, applyMetricMigrations } from "./metric-migrations.js";
export type { MetricMigration, MetricSchemaOptions } from "./metric-migrations.js";
export {
  validateMetricPoints,
  validateMetricColumns,
  validateRunId,
  validateIdempotencyKey,
  MAX_POINTS_PER_CALL,
  METRIC_KEY_PATTERN,
} from "./metric-validation.js";
export type { MetricPointInput, MetricColumnsInput, MetricColumns } from "./metric-validation.js";
export type { LogPointsResult, GroupCommitOptions } from "./metric-writer.js";
