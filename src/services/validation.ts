import { DomainError } from "./errors.js";

/** Limits at least as generous as MLflow's (keys 250, param values 6,000, tag values 5,000). */
export const LIMITS = {
  keyLength: 250,
  paramValueLength: 6000,
  tagValueLength: 5000,
  itemsPerCall: 1000,
  nameLength: 500,
  descriptionLength: 20_000,
  idempotencyKeyLength: 250,
} as const;

const KEY_PATTERN = /^[A-Za-z0-9_.\-/ ]+$/;

/** Validates a param, tag or metric key; `field` names the input position, e.g. `params[3].key`. */
export function validateKey(key: unknown, field: string): string {
  if (typeof key !== "string" || key.length === 0) throw new DomainError("BAD_USER_INPUT", `${field}: must be a non-empty string`, field);
  if (key.length > LIMITS.keyLength) throw new DomainError("BAD_USER_INPUT", `${field}: longer than ${LIMITS.keyLength} characters`, field);
  if (!KEY_PATTERN.test(key)) {
    throw new DomainError("BAD_USER_INPUT", `${field}: may contain only letters, digits, '_', '.', '-', '/' and spaces`, field);
  }
  return key;
}

export function validateText(value: unknown, field: string, maxLength: number, options: { allowEmpty?: boolean } = {}): string {
  if (typeof value !== "string") throw new DomainError("BAD_USER_INPUT", `${field}: must be a string`, field);
  if (!options.allowEmpty && value.trim().length === 0) throw new DomainError("BAD_USER_INPUT", `${field}: must not be empty`, field);
  if (value.length > maxLength) throw new DomainError("BAD_USER_INPUT", `${field}: longer than ${maxLength} characters`, field);
  if (value.includes("\u0000")) throw new DomainError("BAD_USER_INPUT", `${field}: must not contain NUL characters`, field);
  return value;
}

export interface KeyValue {
  key: string;
  value: string;
}

/**
 * Validates a list of key/value pairs (params or tags): count, key syntax, value length and
 * duplicate keys within the call.
 */
export function validateKeyValues(items: KeyValue[] | undefined | null, field: string, maxValueLength: number): KeyValue[] {
  if (!items) return [];
  if (items.length > LIMITS.itemsPerCall) {
    throw new DomainError("BAD_USER_INPUT", `${field}: at most ${LIMITS.itemsPerCall} per call, got ${items.length}`, field);
  }
  const seen = new Map<string, string>();
  items.forEach((item, i) => {
    validateKey(item.key, `${field}[${i}].key`);
    validateText(item.value, `${field}[${i}].value`, maxValueLength, { allowEmpty: true });
    const previous = seen.get(item.key);
    if (previous !== undefined && previous !== item.value) {
      throw new DomainError("BAD_USER_INPUT", `${field}[${i}].key: ${JSON.stringify(item.key)} is given twice with different values`, `${field}[${i}].key`);
    }
    seen.set(item.key, item.value);
  });
  return [...seen].map(([key, value]) => ({ key, value }));
}

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** IDs are UUIDs; anything else is refused before it reaches SQL (where it would be a 500). */
export function validateId(id: unknown, field: string): string {
  if (typeof id !== "string" || !UUID_PATTERN.test(id)) throw new DomainError("BAD_USER_INPUT", `${field}: not a valid id`, field);
  return id.toLowerCase();
}

export function isUuid(id: string): boolean {
  return UUID_PATTERN.test(id);
}

const MODEL_ALIAS_PATTERN = /^[A-Za-z][A-Za-z0-9_-]{0,99}$/;

/**
 * Why a model alias (without its `@`) is not acceptable, or null: the registry's rule, also
 * applied to pipeline specs' `on_success` alias when they are saved.
 */
export function modelAliasProblem(alias: string): string | null {
  if (!MODEL_ALIAS_PATTERN.test(alias)) return "an alias starts with a letter and has up to 100 letters, digits, '_' or '-'";
  if (/^v\d+$/i.test(alias) || alias.toLowerCase() === "latest") return `${JSON.stringify(alias)} is reserved (it would shadow a version reference)`;
  return null;
}
