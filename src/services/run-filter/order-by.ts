import { DomainError } from "../errors.js";
import type { AttributeKey, OrderByTerm, SortDirection } from "./filter-ast.js";
import { tokenize } from "./filter-lexer.js";
import { parseIdentifier, TokenCursor } from "./filter-parser.js";
import { isAttributeKey, isValidKey } from "./filter-rules.js";

/**
 * orderBy for run search: `"metrics.val_loss ASC"`, `"params.lr DESC"`, `"attributes.start_time"`,
 * `"start_time DESC"`. Direction defaults to ASC, as in MLflow. Missing values (a run without
 * the param, tag or metric, or a NULL end_time) always sort last, whatever the direction, so the
 * interesting runs come first.
 */

/** MLflow's default order for run search; not applied automatically (the caller decides). */
export const DEFAULT_RUN_ORDER_BY: readonly string[] = ["attributes.start_time DESC"];

/** Most orderBy terms accepted; each metric term costs one metric-store query. */
export const MAX_ORDER_BY_TERMS = 10;

/**
 * Parses orderBy strings. Errors are DomainError("BAD_USER_INPUT", "orderBy[i]: expected … at
 * position N, found …", "orderBy[i]").
 */
export function parseOrderBy(orderBy: readonly string[]): OrderByTerm[] {
  if (orderBy.length > MAX_ORDER_BY_TERMS) {
    throw new DomainError("BAD_USER_INPUT", `orderBy: at most ${MAX_ORDER_BY_TERMS} terms, got ${orderBy.length}`, "orderBy");
  }
  return orderBy.map((text, i) => {
    const field = `orderBy[${i}]`;
    const cursor = new TokenCursor(tokenize(text, field), field);
    const { entity, key } = parseIdentifier(cursor);
    let direction: SortDirection = "ASC";
    const explicit = cursor.atKeyword("asc") || cursor.atKeyword("desc");
    if (explicit) direction = cursor.next().text.toUpperCase() as SortDirection;
    if (cursor.peek().kind !== "eof") cursor.fail(explicit ? "end of input" : "ASC, DESC or end of input");
    return { entity, key, direction };
  });
}

/**
 * Metric-store hook for ordering: the LAST value of metric `key` per run id (runs without it are
 * simply absent), or "unsupported" when no metric store is configured.
 */
export type MetricLastValuesResolver = (key: string) => Promise<ReadonlyMap<string, number> | "unsupported">;

/** Options of {@link compileOrderBy}. */
export interface CompileOrderByOptions {
  /** Bind parameters already used by the surrounding query; the first one emitted is `$(paramOffset + 1)`. Default 0. */
  readonly paramOffset?: number;
  readonly resolveMetricLastValues?: MetricLastValuesResolver;
}

/** The SQL type of a sort key's values (what a keyset cursor's value is cast back to). */
export type SortKeyType = "text" | "timestamptz" | "uuid" | "float8";

/** One sort key, for callers that build keyset (seek) conditions themselves. */
export interface CompiledSortKey {
  readonly expression: string;
  readonly direction: SortDirection;
  readonly type: SortKeyType;
  /** False for a NOT NULL column: a seek needs no "or null" there, and can bound an index scan. */
  readonly nullable: boolean;
}

/**
 * Compiled orderBy. Put `joins` (each a `LEFT JOIN …`) right after `FROM runs r`, and
 * `ORDER BY ${orderBy}` at the end; `params` continue from `paramOffset`.
 */
export interface CompiledOrderBy {
  readonly joins: string[];
  /** Comma-separated ORDER BY list (without the keyword), always ending with the `r.id` tie-breaker. */
  readonly orderBy: string;
  /** The sort keys in order, tie-breaker included. */
  readonly keys: CompiledSortKey[];
  readonly params: unknown[];
}

const ATTRIBUTE_SORT_COLUMNS: Readonly<Record<AttributeKey, { column: string; type: SortKeyType; nullable: boolean }>> = {
  status: { column: "r.status", type: "text", nullable: false },
  name: { column: "r.name", type: "text", nullable: false },
  start_time: { column: "r.start_time", type: "timestamptz", nullable: false },
  end_time: { column: "r.end_time", type: "timestamptz", nullable: true },
  run_id: { column: "r.id", type: "uuid", nullable: false },
  experiment_id: { column: "r.experiment_id", type: "uuid", nullable: false },
};

/** Message when an orderBy term uses metrics but no metric store answers. */
export const METRIC_ORDER_UNSUPPORTED_MESSAGE = "metrics.* ordering is not supported yet: the metric store is not configured";

/**
 * Compiles parsed orderBy terms. Attributes sort on their column; params and tags on a scalar
 * subquery (as text); metrics on a `LEFT JOIN unnest($a::uuid[], $b::float8[]) AS mN(run_id, v)`
 * of the last values the hook returns. `r.id ASC` is appended as the final tie-breaker (unless
 * the run id is already a key) so offset and keyset pagination are stable.
 *
 * @throws DomainError BAD_USER_INPUT (field `orderBy[i]`) for a metric term without a metric store.
 */
export async function compileOrderBy(terms: readonly OrderByTerm[], options: CompileOrderByOptions = {}): Promise<CompiledOrderBy> {
  const params: unknown[] = [];
  const offset = options.paramOffset ?? 0;
  const bind = (value: unknown, cast: string): string => {
    params.push(value);
    return `$${offset + params.length}::${cast}`;
  };
  const lastValues = await resolveMetricOrderTerms(terms, options.resolveMetricLastValues);

  const joins: string[] = [];
  const keys: CompiledSortKey[] = [];
  let metricJoins = 0;
  terms.forEach((term, i) => {
    const field = `orderBy[${i}]`;
    const direction: SortDirection = term.direction === "DESC" ? "DESC" : "ASC";
    switch (term.entity) {
      case "attributes":
        if (!isAttributeKey(term.key)) throw badTerm(field, `unknown attribute ${JSON.stringify(term.key)}`);
        const { column, type, nullable } = ATTRIBUTE_SORT_COLUMNS[term.key];
        keys.push({ expression: column, direction, type, nullable });
        return;
      case "params":
      case "tags": {
        if (!isValidKey(term.key)) throw badTerm(field, `invalid key ${JSON.stringify(term.key)}`);
        const [table, alias] = term.entity === "params" ? ["run_params", "p"] : ["run_tags", "t"];
        keys.push({
          expression: `(SELECT ${alias}.value FROM ${table} ${alias} WHERE ${alias}.run_id = r.id AND ${alias}.key = ${bind(term.key, "text")})`,
          direction,
          type: "text",
          nullable: true,
        });
        return;
      }
      case "metrics": {
        if (!isValidKey(term.key)) throw badTerm(field, `invalid key ${JSON.stringify(term.key)}`);
        const values = lastValues.get(i) as ReadonlyMap<string, number>;
        const alias = `m${metricJoins}`;
        metricJoins += 1;
        const ids = [...values.keys()];
        const numbers = ids.map((id) => values.get(id) as number);
        joins.push(`LEFT JOIN unnest(${bind(ids, "uuid[]")}, ${bind(numbers, "float8[]")}) AS ${alias}(run_id, v) ON ${alias}.run_id = r.id`);
        keys.push({ expression: `${alias}.v`, direction, type: "float8", nullable: true });
        return;
      }
    }
  });
  if (!keys.some((k) => k.expression === "r.id")) keys.push({ expression: "r.id", direction: "ASC", type: "uuid", nullable: false });
  const orderBy = keys.map((k) => `${k.expression} ${k.direction} NULLS LAST`).join(", ");
  return { joins, orderBy, keys, params };
}

async function resolveMetricOrderTerms(terms: readonly OrderByTerm[], resolve: MetricLastValuesResolver | undefined): Promise<Map<number, ReadonlyMap<string, number>>> {
  const resolved = new Map<number, ReadonlyMap<string, number>>();
  const metricTerms = terms.map((term, i) => ({ term, i })).filter(({ term }) => term.entity === "metrics");
  if (metricTerms.length === 0) return resolved;
  if (resolve === undefined) throw badTerm(`orderBy[${metricTerms[0].i}]`, METRIC_ORDER_UNSUPPORTED_MESSAGE);
  const answers = await Promise.all(metricTerms.map(({ term }) => resolve(term.key)));
  answers.forEach((answer, j) => {
    if (answer === "unsupported") throw badTerm(`orderBy[${metricTerms[j].i}]`, METRIC_ORDER_UNSUPPORTED_MESSAGE);
    resolved.set(metricTerms[j].i, answer);
  });
  return resolved;
}

function badTerm(field: string, problem: string): DomainError {
  return new DomainError("BAD_USER_INPUT", `${field}: ${problem}`, field);
}
