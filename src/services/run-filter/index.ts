/**
 * Run-search filter language (MLflow `search_runs` filters with OR and parentheses) and orderBy:
 * parse user text to an AST, then compile to parameterised PostgreSQL over `runs r`.
 *
 * ```ts
 * const where = await compileFilter(parseFilter(filter), { paramOffset: 1, resolveMetricTerm });
 * const order = await compileOrderBy(parseOrderBy(orderBy), { paramOffset: 1 + where.params.length, resolveMetricLastValues });
 * // SELECT r.* FROM runs r ${order.joins.join(" ")}
 * //  WHERE r.experiment_id = ANY($1) AND r.deleted_at IS NULL AND ${where.sql}
 * //  ORDER BY ${order.orderBy}
 * // params: [experimentIds, ...where.params, ...order.params]
 * ```
 */
export type {
  AndNode,
  AttributeKey,
  ComparisonNode,
  ComparisonOperator,
  FilterEntity,
  FilterNode,
  FilterValue,
  ListOperator,
  MetricOperator,
  MetricTerm,
  OrNode,
  OrderByTerm,
  ScalarOperator,
  SortDirection,
} from "./filter-ast.js";
export { parseFilter, MAX_FILTER_DEPTH, MAX_FILTER_TERMS, type ParseFilterOptions } from "./filter-parser.js";
export { printFilter, printOrderByTerm } from "./filter-printer.js";
export {
  compileFilter,
  METRICS_UNSUPPORTED_MESSAGE,
  type CompileFilterOptions,
  type CompiledSql,
  type MetricTermResolver,
} from "./filter-sql.js";
export {
  compileOrderBy,
  parseOrderBy,
  DEFAULT_RUN_ORDER_BY,
  MAX_ORDER_BY_TERMS,
  METRIC_ORDER_UNSUPPORTED_MESSAGE,
  type CompileOrderByOptions,
  type CompiledOrderBy,
  type CompiledSortKey,
  type SortKeyType,
  type MetricLastValuesResolver,
} from "./order-by.js";
