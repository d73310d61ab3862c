import { DomainError } from "../errors.js";
import type { AttributeKey, ComparisonNode, ComparisonOperator, FilterNode, MetricOperator, MetricTerm } from "./filter-ast.js";
import { checkComparison, toIsoInstant } from "./filter-rules.js";

/**
 * Compiles a filter AST to a parameterised PostgreSQL boolean expression over `runs r`.
 *
 * Safety rules: every value, key and list is a bind parameter; every identifier and operator in
 * the SQL text comes from the fixed tables below, never from the AST's strings. The compiler
 * re-checks each term's typing, so a hand-built AST cannot smuggle in an unknown attribute or
 * operator either.
 */

/**
 * Metric-store hook: the ids of the runs whose LAST value of `term.key` satisfies
 * `term.op term.value`, or "unsupported" when no metric store is configured.
 */
export type MetricTermResolver = (term: MetricTerm) => Promise<readonly string[] | "unsupported">;

/** Options of {@link compileFilter}. */
export interface CompileFilterOptions {
  /** Bind parameters already used by the surrounding query; the first one emitted is `$(paramOffset + 1)`. Default 0. */
  readonly paramOffset?: number;
  /** Resolves metric terms (they live in the metric store, not in Postgres). */
  readonly resolveMetricTerm?: MetricTermResolver;
}

/** A SQL fragment and the values of its bind parameters, in order from `$(paramOffset + 1)`. */
export interface CompiledSql {
  readonly sql: string;
  readonly params: unknown[];
}

/** Message when a filter uses metrics but no metric store answers. */
export const METRICS_UNSUPPORTED_MESSAGE = "filter: metrics.* terms are not supported yet: the metric store is not configured";

const SCALAR_SQL_OPERATORS: Readonly<Record<Exclude<ComparisonOperator, "IN" | "NOT IN">, string>> = {
  "=": "=",
  "!=": "<>",
  "<": "<",
  ">": ">",
  "<=": "<=",
  ">=": ">=",
  LIKE: "LIKE",
  ILIKE: "ILIKE",
};

interface AttributeColumn {
  readonly column: string;
  /** Cast applied to the bind parameter so Postgres compares in the column's type. */
  readonly cast: "text" | "uuid" | "timestamptz";
}

const ATTRIBUTE_COLUMNS: Readonly<Record<AttributeKey, AttributeColumn>> = {
  status: { column: "r.status", cast: "text" },
  name: { column: "r.name", cast: "text" },
  start_time: { column: "r.start_time", cast: "timestamptz" },
  end_time: { column: "r.end_time", cast: "timestamptz" },
  run_id: { column: "r.id", cast: "uuid" },
  experiment_id: { column: "r.experiment_id", cast: "uuid" },
};

/** Key/value tables, aliased inside their EXISTS so they never clash with the outer query. */
const KEY_VALUE_TABLES = {
  params: { table: "run_params", alias: "p" },
  tags: { table: "run_tags", alias: "t" },
} as const;

/**
 * Compiles `ast` (from `parseFilter`) to a boolean SQL expression over the outer alias `r`
 * (`runs r`). A null AST (empty filter) compiles to `TRUE`. Metric terms are resolved through
 * `options.resolveMetricTerm` (concurrently, identical terms once) and become
 * `r.id = ANY($n::uuid[])`. Soft-deleted runs are NOT excluded here: the caller adds
 * `r.deleted_at IS NULL`.
 *
 * @throws DomainError BAD_USER_INPUT (field `filter`) for metric terms without a metric store,
 *   or an ill-typed hand-built AST.
 */
export async function compileFilter(ast: FilterNode | null, options: CompileFilterOptions = {}): Promise<CompiledSql> {
  const params: unknown[] = [];
  const offset = options.paramOffset ?? 0;
  if (ast === null) return { sql: "TRUE", params };
  const metricRunIds = await resolveMetricTerms(ast, options.resolveMetricTerm);
  const bind = (value: unknown, cast?: string): string => {
    params.push(value);
    return `$${offset + params.length}${cast === undefined ? "" : `::${cast}`}`;
  };

  const compile = (node: FilterNode): string => {
    switch (node.kind) {
      case "and":
      case "or":
        if (node.operands.length === 0) throw invalidAst(`an empty ${node.kind.toUpperCase()}`);
        return `(${node.operands.map(compile).join(node.kind === "and" ? " AND " : " OR ")})`;
      case "comparison":
        return compileComparison(node, bind, metricRunIds);
    }
  };
  return { sql: compile(ast), params };
}

type Bind = (value: unknown, cast?: string) => string;

function compileComparison(node: ComparisonNode, bind: Bind, metricRunIds: ReadonlyMap<string, readonly string[]>): string {
  const problem = checkComparison(node.entity, node.key, node.op, node.value);
  if (problem !== undefined) throw invalidAst(problem);
  switch (node.entity) {
    case "params":
    case "tags": {
      const { table, alias } = KEY_VALUE_TABLES[node.entity];
      // MLflow semantics: every operator, `!=` and NOT IN included, requires the key to exist.
      const keyCondition = `${alias}.run_id = r.id AND ${alias}.key = ${bind(node.key)}`;
      return `EXISTS (SELECT 1 FROM ${table} ${alias} WHERE ${keyCondition} AND ${valueCondition(`${alias}.value`, "text", node, bind)})`;
    }
    case "attributes": {
      const { column, cast } = ATTRIBUTE_COLUMNS[node.key as AttributeKey];
      return valueCondition(column, cast, node, bind);
    }
    case "metrics": {
      const ids = metricRunIds.get(metricTermKey(node));
      // resolveMetricTerms visited every metric term of this AST.
      return `r.id = ANY(${bind(ids ?? [], "uuid[]")})`;
    }
  }
}

function valueCondition(column: string, cast: AttributeColumn["cast"], node: ComparisonNode, bind: Bind): string {
  const toParam = (v: string | number): string | number => (cast === "timestamptz" ? (toIsoInstant(v) as string) : v);
  if (node.op === "IN") return `${column} = ANY(${bind((node.value as readonly string[]).map(toParam), `${cast}[]`)})`;
  if (node.op === "NOT IN") return `${column} <> ALL(${bind((node.value as readonly string[]).map(toParam), `${cast}[]`)})`;
  return `${column} ${SCALAR_SQL_OPERATORS[node.op]} ${bind(toParam(node.value as string | number), cast)}`;
}

function metricTermKey(node: ComparisonNode): string {
  return JSON.stringify([node.key, node.op, node.value]);
}

async function resolveMetricTerms(ast: FilterNode, resolve: MetricTermResolver | undefined): Promise<Map<string, readonly string[]>> {
  const terms = new Map<string, MetricTerm>();
  const visit = (node: FilterNode): void => {
    if (node.kind !== "comparison") {
      node.operands.forEach(visit);
      return;
    }
    if (node.entity !== "metrics") return;
    const problem = checkComparison(node.entity, node.key, node.op, node.value);
    if (problem !== undefined) throw invalidAst(problem);
    terms.set(metricTermKey(node), { key: node.key, op: node.op as MetricOperator, value: node.value as number });
  };
  visit(ast);
  const resolved = new Map<string, readonly string[]>();
  if (terms.size === 0) return resolved;
  if (resolve === undefined) throw new DomainError("BAD_USER_INPUT", METRICS_UNSUPPORTED_MESSAGE, "filter");
  const entries = [...terms.entries()];
  const answers = await Promise.all(entries.map(([, term]) => resolve(term)));
  answers.forEach((answer, i) => {
    if (answer === "unsupported") throw new DomainError("BAD_USER_INPUT", METRICS_UNSUPPORTED_MESSAGE, "filter");
    resolved.set(entries[i][0], answer);
  });
  return resolved;
}

function invalidAst(problem: string): DomainError {
  return new DomainError("BAD_USER_INPUT", `filter: ${problem}`, "filter");
}
