import { createHash } from "node:crypto";
import { DomainError } from "./errors.js";
import { CURSOR_UUID_PATTERN, cursorTimeSql, decodeKeyCursor, encodeKeyCursor, isCursorTime } from "./pagination.js";
import type { CompiledSortKey, OrderByTerm, SortKeyType } from "./run-filter/index.js";

/**
 * Keyset cursors for run search: a cursor holds the sort-key values of the last run seen, and the
 * next page starts after them. Runs arrive at the front of the default order (newest first) all
 * through a sweep; with offsets, each run added between two pages made the next page repeat the
 * last run seen. A cursor also names its ordering (a hash of the orderBy terms): its values mean
 * nothing under another one, so such a cursor is refused instead of skipping runs.
 */

const PREFIX = "runs:";

const UUID = new RegExp(`^${CURSOR_UUID_PATTERN}$`);
const FLOAT = /^-?(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?$/i;

/** Identifies an ordering; the same terms give the same signature on every replica and release. */
export function orderSignature(terms: readonly OrderByTerm[]): string {
  const canonical = JSON.stringify(terms.map((t) => [t.entity, t.key, t.direction === "DESC" ? "DESC" : "ASC"]));
  return createHash("sha256").update(canonical).digest("base64url").slice(0, 16);
}

/** Where a key cursor continues: after `values`, in the ordering `signature`; `experimentId` is the last run's experiment. */
export interface RunCursor {
  experimentId: string;
  values: (string | null)[];
}

export function encodeRunCursor(signature: string, experimentId: string, values: readonly (string | null)[]): string {
  return encodeKeyCursor(`${PREFIX}${signature}:${experimentId}:${JSON.stringify(values)}`);
}

/**
 * The sort-key values a key cursor holds; undefined without `after` or for an offset cursor (as
 * handed out before run search paged by key), which still pages by offset.
 */
export function decodeRunCursor(after: string | null | undefined, signature: string, keys: readonly CompiledSortKey[]): RunCursor | undefined {
  const key = decodeKeyCursor(after);
  if (key === undefined) return undefined;
  const refuse = (why: string) => new DomainError("BAD_USER_INPUT", `after: ${why}`, "after");
  if (!key.startsWith(PREFIX)) throw refuse("not a cursor returned by run search");
  const rest = key.slice(PREFIX.length);
  const colon = rest.indexOf(":");
  if (colon < 0 || rest.slice(0, colon) !== signature) {
    throw refuse("this cursor comes from a search with another orderBy; page with the orderBy it came from, or start again without after");
  }
  const experimentId = rest.slice(colon + 1, colon + 37);
  let values: unknown;
  try {
    if (!UUID.test(experimentId) || rest[colon + 37] !== ":") throw new Error("no experiment");
    values = JSON.parse(rest.slice(colon + 38));
  } catch {
    throw refuse("not a cursor returned by run search");
  }
  const valid = Array.isArray(values) && values.length === keys.length && values.every((v, i) => v === null || (typeof v === "string" && isValidValue(keys[i].type, v)));
  if (!valid) throw refuse("not a cursor returned by run search");
  return { experimentId, values: values as (string | null)[] };
}

/** Whether a cursor value casts back to its key's type (a failed cast would be answered as a storage error, not naming after). */
function isValidValue(type: SortKeyType, value: string): boolean {
  switch (type) {
    case "text":
      return value.length <= 100_000 && !value.includes("\u0000");
    case "timestamptz":
      return isCursorTime(value);
    case "uuid":
      return UUID.test(value);
    case "float8":
      return FLOAT.test(value) && Number.isFinite(Number(value));
  }
}

/** SQL selecting a sort key's value as a cursor holds it (timestamps in UTC to the microsecond, floats exactly). */
export function sortKeyCursorSql(key: CompiledSortKey): string {
  return key.type === "timestamptz" ? cursorTimeSql(key.expression) : `(${key.expression})::text`;
}

/**
 * SQL true for the runs that sort after `values` under `keys` (each ASC or DESC, NULLS LAST), the
 * lexicographic "after" of the whole key: equal on the keys before one, and after on that one.
 * `bind` adds a parameter and returns its placeholder.
 */
export function seekCondition(keys: readonly CompiledSortKey[], values: readonly (string | null)[], bind: (value: string) => string): string {
  // One parameter per non-null value; each is used by its key's "after" alternative below.
  const typed = values.map((value, i) => {
    if (value === null) return null;
    const placeholder = bind(value);
    return keys[i].type === "timestamptz" ? `(CAST(${placeholder} AS timestamp) AT TIME ZONE 'UTC')` : `CAST(${placeholder} AS ${keys[i].type})`;
  });
  const cast = (i: number) => typed[i] as string;
  const equalTo = keys.map((k, i) => (values[i] === null ? `${k.expression} IS NULL` : `${k.expression} = ${cast(i)}`));
  const alternatives: string[] = [];
  keys.forEach((k, i) => {
    // Nulls sort last: nothing comes after a null in this key but more nulls (ties, left to the next key).
    if (values[i] === null) return;
    const beyond = `${k.expression} ${k.direction === "DESC" ? "<" : ">"} ${cast(i)}`;
    alternatives.push([...equalTo.slice(0, i), k.nullable ? `(${beyond} OR ${k.expression} IS NULL)` : beyond].join(" AND "));
  });
  // PostgreSQL answers each alternative from an index where one fits (a BitmapOr over runs'
  // (experiment_id, start_time DESC, id) for the default order): only runs after the cursor are
  // read, where an offset read and dropped every run before it.
  return alternatives.length ? `(${alternatives.map((a) => `(${a})`).join(" OR ")})` : "FALSE";
}
