import type { AttributeKey, ComparisonOperator, FilterEntity, FilterValue } from "./filter-ast.js";

/**
 * The typing rules of the language, in one place so the parser (which reports positions) and the
 * SQL compiler (which may receive a hand-built AST) enforce the same ones. They follow MLflow:
 * metrics compare with numbers and never with LIKE; params and tags compare with quoted strings
 * and have no ordering operators (their values are text, so `'10' < '9'` would mislead).
 */

/** Entity prefixes as written, including MLflow's singular aliases. */
export const ENTITY_ALIASES: ReadonlyMap<string, FilterEntity> = new Map([
  ["params", "params"],
  ["param", "params"],
  ["tags", "tags"],
  ["tag", "tags"],
  ["metrics", "metrics"],
  ["metric", "metrics"],
  ["attributes", "attributes"],
  ["attribute", "attributes"],
  ["attr", "attributes"],
]);

/** Attribute names as written (MLflow spellings included) → canonical key. */
export const ATTRIBUTE_ALIASES: ReadonlyMap<string, AttributeKey> = new Map([
  ["status", "status"],
  ["name", "name"],
  ["run_name", "name"],
  ["start_time", "start_time"],
  ["end_time", "end_time"],
  ["run_id", "run_id"],
  ["id", "run_id"],
  ["experiment_id", "experiment_id"],
]);

/** What a term's value must be. */
export type ValueKind = "string" | "number" | "time" | "uuid";

export interface TermRule {
  readonly operators: readonly ComparisonOperator[];
  readonly valueKind: ValueKind;
}

const STRING_OPERATORS: readonly ComparisonOperator[] = ["=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"];
const NUMBER_OPERATORS: readonly ComparisonOperator[] = ["=", "!=", "<", ">", "<=", ">="];
const ID_OPERATORS: readonly ComparisonOperator[] = ["=", "!=", "IN", "NOT IN"];

const ATTRIBUTE_RULES: Readonly<Record<AttributeKey, TermRule>> = {
  status: { operators: STRING_OPERATORS, valueKind: "string" },
  name: { operators: STRING_OPERATORS, valueKind: "string" },
  start_time: { operators: NUMBER_OPERATORS, valueKind: "time" },
  end_time: { operators: NUMBER_OPERATORS, valueKind: "time" },
  run_id: { operators: ID_OPERATORS, valueKind: "uuid" },
  experiment_id: { operators: ID_OPERATORS, valueKind: "uuid" },
};

/** Keys: 1–250 of `[A-Za-z0-9_.\-/ ]`, MLflow's rule for param, tag and metric names. */
export const MAX_KEY_LENGTH = 250;

export function isValidKey(key: string): boolean {
  if (key.length < 1 || key.length > MAX_KEY_LENGTH) return false;
  for (const c of key) {
    const ok =
      (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") || c === "_" || c === "." || c === "-" || c === "/" || c === " ";
    if (!ok) return false;
  }
  return true;
}

export function isAttributeKey(key: string): key is AttributeKey {
  return Object.prototype.hasOwnProperty.call(ATTRIBUTE_RULES, key);
}

/** The rule for a term; undefined for an unknown attribute. */
export function ruleFor(entity: FilterEntity, key: string): TermRule | undefined {
  switch (entity) {
    case "params":
    case "tags":
      return { operators: STRING_OPERATORS, valueKind: "string" };
    case "metrics":
      return { operators: NUMBER_OPERATORS, valueKind: "number" };
    case "attributes":
      return isAttributeKey(key) ? ATTRIBUTE_RULES[key] : undefined;
  }
}

const UUID_HEX_GROUPS = [8, 4, 4, 4, 12];

/** Canonical textual UUID (any version, either case); run and experiment ids are Postgres uuids. */
export function isUuid(value: string): boolean {
  const groups = value.split("-");
  if (groups.length !== UUID_HEX_GROUPS.length) return false;
  return groups.every(
    (g, i) => g.length === UUID_HEX_GROUPS[i] && [...g].every((c) => (c >= "0" && c <= "9") || (c >= "a" && c <= "f") || (c >= "A" && c <= "F")),
  );
}

/**
 * Converts a time value (epoch milliseconds or a date string) to an ISO-8601 instant, or
 * undefined when it is not one. Binding ISO text with `::timestamptz` keeps millisecond values
 * exact, which a float seconds conversion would not.
 */
export function toIsoInstant(value: string | number): string | undefined {
  // V8's Date parser accepts almost anything ("1" is the year 2001); insist on an ISO date first.
  if (typeof value === "string" && !startsWithIsoDate(value)) return undefined;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}

function startsWithIsoDate(value: string): boolean {
  const digitsAt = (from: number, count: number): boolean =>
    [...value.slice(from, from + count)].filter((c) => c >= "0" && c <= "9").length === count;
  return value.length >= 10 && digitsAt(0, 4) && value[4] === "-" && digitsAt(5, 2) && value[7] === "-" && digitsAt(8, 2);
}

/** Human name of a term's identifier, for messages: `metrics.val_loss`. */
export function termName(entity: FilterEntity, key: string): string {
  return `${entity}.${key}`;
}

/**
 * Checks one scalar value against a value kind; returns what was expected when it does not fit.
 * Lists are checked element by element by the caller.
 */
export function checkScalar(kind: ValueKind, value: string | number): string | undefined {
  switch (kind) {
    case "string":
      return typeof value === "string" ? undefined : "a quoted string";
    case "number":
      return typeof value === "number" && Number.isFinite(value) ? undefined : "a number";
    case "uuid":
      return typeof value === "string" && isUuid(value) ? undefined : "a quoted UUID";
    case "time":
      return toIsoInstant(value) === undefined ? "epoch milliseconds or a quoted ISO-8601 date" : undefined;
  }
}

/**
 * Validates a whole comparison (for ASTs not made by the parser). Returns a message naming the
 * problem, or undefined when the term is well-typed.
 */
export function checkComparison(entity: FilterEntity, key: string, op: ComparisonOperator, value: FilterValue): string | undefined {
  const rule = ruleFor(entity, key);
  if (rule === undefined) return `unknown attribute ${JSON.stringify(key)}`;
  if (entity !== "attributes" && !isValidKey(key)) return `invalid key ${JSON.stringify(key)}`;
  const name = termName(entity, key);
  if (!rule.operators.includes(op)) return `operator ${op} is not supported for ${name}`;
  const isList = op === "IN" || op === "NOT IN";
  if (isList !== Array.isArray(value)) return `${op} on ${name} needs ${isList ? "a list" : "a single value"}`;
  const items: readonly (string | number)[] = Array.isArray(value) ? value : [value as string | number];
  if (isList && items.length === 0) return `${op} on ${name} needs at least one value`;
  for (const item of items) {
    const expected = checkScalar(rule.valueKind, item);
    if (expected !== undefined) return `${name} compares with ${expected}`;
  }
  return undefined;
}
