/**
 * AST of the run-search filter language (MLflow's `search_runs` filter, extended with OR and
 * parentheses) and of `orderBy` terms. The parser produces it in canonical form — entity aliases
 * (`param.`, `metric.` …), attribute aliases (`run_name`, `id`) and keyword case are normalised —
 * so two spellings of the same filter give equal ASTs.
 */

/** Which store a term reads: run parameters, run tags, metric last values, or run columns. */
export type FilterEntity = "params" | "tags" | "metrics" | "attributes";

/** Canonical run attribute names (`run_name` → `name`, `id` → `run_id`). */
export type AttributeKey = "status" | "name" | "start_time" | "end_time" | "run_id" | "experiment_id";

/** Operators that compare with a single value. */
export type ScalarOperator = "=" | "!=" | "<" | ">" | "<=" | ">=" | "LIKE" | "ILIKE";

/** Operators that compare with a parenthesised list of values. */
export type ListOperator = "IN" | "NOT IN";

/** Every comparison operator of the language (keywords upper-case, canonical). */
export type ComparisonOperator = ScalarOperator | ListOperator;

/** Operators a metric term may use (metrics compare with numbers only). */
export type MetricOperator = "=" | "!=" | "<" | ">" | "<=" | ">=";

/**
 * A literal: a string, a finite number, or (for IN / NOT IN) a non-empty list of strings.
 * Time attributes accept a number (epoch milliseconds, as in MLflow) or a date string.
 */
export type FilterValue = string | number | readonly string[];

/** One `<entity>.<key> <op> <value>` term. */
export interface ComparisonNode {
  readonly kind: "comparison";
  readonly entity: FilterEntity;
  /** The param/tag/metric key, or an {@link AttributeKey} when `entity` is `attributes`. */
  readonly key: string;
  readonly op: ComparisonOperator;
  readonly value: FilterValue;
}

/** Conjunction of two or more sub-filters (`a AND b AND c` is one node with three operands). */
export interface AndNode {
  readonly kind: "and";
  readonly operands: readonly FilterNode[];
}

/** Disjunction of two or more sub-filters. */
export interface OrNode {
  readonly kind: "or";
  readonly operands: readonly FilterNode[];
}

/** A parsed filter. A parenthesised group keeps its own node, so the tree mirrors the text. */
export type FilterNode = ComparisonNode | AndNode | OrNode;

/** Sort direction of an orderBy term. */
export type SortDirection = "ASC" | "DESC";

/** One parsed orderBy term, e.g. `metrics.val_loss ASC`. */
export interface OrderByTerm {
  readonly entity: FilterEntity;
  readonly key: string;
  readonly direction: SortDirection;
}

/** A metric comparison handed to the metric store hook (see `compileFilter`). */
export interface MetricTerm {
  readonly key: string;
  readonly op: MetricOperator;
  readonly value: number;
}
