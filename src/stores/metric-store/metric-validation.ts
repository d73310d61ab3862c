import { DomainError } from "../../services/errors.js";

/** One metric observation as callers log it. */
export interface MetricPointInput {
  key: string;
  /** Non-negative integer, at most Number.MAX_SAFE_INTEGER. */
  step: number;
  value: number;
  /** Epoch milliseconds or a Date; defaults to the time of the call. */
  timestamp?: number | Date;
}

/** The same points as parallel arrays; cheaper to build and to send for large batches. */
export interface MetricColumnsInput {
  keys: readonly string[];
  steps: ArrayLike<number>;
  values: ArrayLike<number>;
  /** Epoch milliseconds; defaults to the time of the call for every point. */
  timestamps?: ArrayLike<number>;
}

/** Validated points in the columnar form the writer sends. */
export interface MetricColumns {
  keys: string[];
  steps: number[];
  values: number[];
  timestamps: number[];
}

export const MAX_POINTS_PER_CALL = 10_000;
export const METRIC_KEY_PATTERN = /^[A-Za-z0-9_.\-/ ]{1,250}$/;
// DateTime64(3) stores up to 2299-12-31; later values would silently wrap.
const MAX_TIMESTAMP_MS = Date.UTC(2299, 11, 31, 23, 59, 59, 999);

const bad = (field: string, message: string) => new DomainError("BAD_USER_INPUT", `${field}: ${message}`, field);

function checkKey(key: unknown, field: string): string {
  if (typeof key !== "string" || !METRIC_KEY_PATTERN.test(key)) {
    throw bad(field, "must be 1-250 characters of letters, digits, '_', '.', '-', '/' or space");
  }
  return key;
}

function checkStep(step: unknown, field: string): number {
  if (typeof step !== "number" || !Number.isSafeInteger(step) || step < 0) {
    throw bad(field, "must be a non-negative integer");
  }
  return step;
}

function checkValue(value: unknown, field: string): number {
  if (typeof value !== "number" || !Number.isFinite(value)) throw bad(field, "must be a finite number");
  return value;
}

function checkTimestamp(ts: unknown, field: string, now: number): number {
  if (ts === undefined || ts === null) return now;
  const ms = ts instanceof Date ? ts.getTime() : ts;
  if (typeof ms !== "number" || !Number.isInteger(ms) || ms < 0 || ms > MAX_TIMESTAMP_MS) {
    throw bad(field, "must be epoch milliseconds between 1970 and 2299");
  }
  return ms;
}

function checkCount(n: number, field: string): void {
  if (n > MAX_POINTS_PER_CALL) throw bad(field, `at most ${MAX_POINTS_PER_CALL} points per call (got ${n})`);
}

/**
 * Validates points logged in one call and returns them as columns. Throws
 * DomainError("BAD_USER_INPUT") naming the first offending index and field, e.g.
 * `points[3].value: must be a finite number` with field `points[3].value`.
 */
export function validateMetricPoints(points: readonly MetricPointInput[], now = Date.now()): MetricColumns {
  if (!Array.isArray(points)) throw bad("points", "must be a list");
  checkCount(points.length, "points");
  const n = points.length;
  const out: MetricColumns = { keys: new Array(n), steps: new Array(n), values: new Array(n), timestamps: new Array(n) };
  for (let i = 0; i < n; i++) {
    const p = points[i];
    if (p === null || typeof p !== "object") throw bad(`points[${i}]`, "must be an object");
    out.keys[i] = checkKey(p.key, `points[${i}].key`);
    out.steps[i] = checkStep(p.step, `points[${i}].step`);
    out.values[i] = checkValue(p.value, `points[${i}].value`);
    out.timestamps[i] = checkTimestamp(p.timestamp, `points[${i}].timestamp`, now);
  }
  return out;
}

/**
 * Columnar twin of {@link validateMetricPoints}: same rules, errors name `values[3]` etc.
 * All arrays must have the same length.
 */
export function validateMetricColumns(columns: MetricColumnsInput, now = Date.now()): MetricColumns {
  if (columns === null || typeof columns !== "object") throw bad("columns", "must be an object");
  const n = columns.keys?.length;
  if (typeof n !== "number") throw bad("keys", "must be a list");
  checkCount(n, "keys");
  for (const name of ["steps", "values", "timestamps"] as const) {
    const col = columns[name];
    if (col === undefined && name === "timestamps") continue;
    if (col === undefined || col === null || col.length !== n) throw bad(name, `must have the same length as keys (${n})`);
  }
  const out: MetricColumns = { keys: new Array(n), steps: new Array(n), values: new Array(n), timestamps: new Array(n) };
  const ts = columns.timestamps;
  for (let i = 0; i < n; i++) {
    out.keys[i] = checkKey(columns.keys[i], `keys[${i}]`);
    out.steps[i] = checkStep(columns.steps[i], `steps[${i}]`);
    out.values[i] = checkValue(columns.values[i], `values[${i}]`);
    out.timestamps[i] = ts ? checkTimestamp(ts[i], `timestamps[${i}]`, now) : now;
  }
  return out;
}

/** Run ids and idempotency keys are opaque, but bounded so they cannot bloat the tables. */
export function validateRunId(runId: unknown, field = "runId"): string {
  if (typeof runId !== "string" || runId.length === 0 || runId.length > 250) throw bad(field, "must be 1-250 characters");
  return runId;
}

export function validateIdempotencyKey(key: unknown, field = "idempotencyKey"): string {
  if (typeof key !== "string" || key.length === 0 || key.length > 250) throw bad(field, "must be 1-250 characters");
  return key;
}
