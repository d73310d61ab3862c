import { createHash } from "node:crypto";
import type { EntityManager, EntityTarget, FindOptionsWhere } from "typeorm";
import { DomainError, isUniqueViolation } from "./errors.js";
import { LIMITS, validateText } from "./validation.js";

/**
 * Idempotency keys of creates (createRun, submitPipelineRun, createModelVersion): a client that
 * lost the answer resends the call with the same key and gets the object the first call created,
 * instead of a second one (Prefect's `idempotency_key` on flow runs). The key is stored on the row
 * with a fingerprint of the call's input, so a key reused for a different call is refused rather
 * than answered with an object the caller did not ask for.
 */

export const IDEMPOTENCY_KEY_FIELD = "input.idempotencyKey";

/** A create's idempotency key and its input's fingerprint. */
export interface KeyedCall {
  key: string;
  fingerprint: string;
}

/** What a keyed create answers. */
export interface Created<T> {
  value: T;
  /** False when the call was a resend: nothing was written, and nothing is to be announced. */
  isNew: boolean;
}

/**
 * The call's key (checked: 1-250 characters, not blank) with the fingerprint of `input`, or null
 * when the call has no key. `input` lists the call's fields as given (ids in their stored,
 * lower-case spelling), the key left out.
 */
export function keyedCall(key: string | null | undefined, input: Record<string, unknown>): KeyedCall | null {
  if (key == null) return null;
  const valid = validateText(key, IDEMPOTENCY_KEY_FIELD, LIMITS.idempotencyKeyLength);
  // An absent field and a null one are the same call (one client leaves it out, another sends
  // null), and both are left out of the fingerprint: an optional field a later release adds then
  // does not change the fingerprint of calls that do not use it (a resend across an upgrade).
  return { key: valid, fingerprint: inputFingerprint(Object.fromEntries(Object.entries(input).filter(([, value]) => value != null))) };
}

/**
 * SHA-256 (hex) of a canonical JSON of a call's input as the client gave it: object keys sorted,
 * dates as ISO strings, list order kept. The input as given,
 * not as stored: defaults filled in later (a generated run name, the latest pipeline version)
 * differ between a call and its resend, and must not make the resend look like another call.
 */
function inputFingerprint(input: Record<string, unknown>): string {
  return createHash("sha256").update(canonicalJson(input)).digest("hex");
}

function canonicalJson(value: unknown): string {
  if (value === undefined || value === null) return "null";
  if (value instanceof Date) return JSON.stringify(value.toISOString());
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * Refuses a call whose key already created `created` (e.g. `run "…"`) from different input: the
 * caller reused a key by mistake, and answering with the earlier object would hide that.
 */
export function refuseChangedInput(storedFingerprint: string | null, fingerprint: string, created: string): void {
  if (storedFingerprint === fingerprint) return;
  throw new DomainError(
    "CONFLICT",
    `${IDEMPOTENCY_KEY_FIELD}: this key was already used with different input, and created ${created}; send a new key for a different call`,
    IDEMPOTENCY_KEY_FIELD,
  );
}

/**
 * Runs a keyed create's transaction. Two concurrent calls with one key both find no row made with
 * it and both insert; the scope's partial unique index (`uniqueIndex`) refuses the later insert,
 * and that call is then answered as the resend it is, with the row `madeWithKey` reads.
 */
export async function createOnce<T>(keyed: KeyedCall | null, uniqueIndex: string, create: () => Promise<Created<T>>, madeWithKey: (keyed: KeyedCall) => Promise<T | null>): Promise<Created<T>> {
  try {
    return await create();
  } catch (err) {
    if (!keyed || !isUniqueViolation(err, uniqueIndex)) throw err;
    const earlier = await madeWithKey(keyed);
    if (!earlier) throw err;
    return { value: earlier, isNew: false };
  }
}

/**
 * The row of `entity` (stored in `table`) made in its scope (`scopeColumn` = `scopeId`) with this
 * call's key, as it is now, or null. A key used there with other input is refused (CONFLICT on
 * input.idempotencyKey), naming the row with `describe`.
 */
export async function madeWithKey<T extends { id: string }>(
  em: EntityManager,
  entity: EntityTarget<T>,
  where: { table: "runs" | "pipeline_runs" | "model_versions"; scopeColumn: string; scopeId: string },
  keyed: KeyedCall,
  describe: (row: T) => string,
): Promise<T | null> {
  const [earlier] = (await em.query(`SELECT id, idempotency_fingerprint AS fingerprint FROM ${where.table} WHERE ${where.scopeColumn} = $1 AND idempotency_key = $2`, [
    where.scopeId,
    keyed.key,
  ])) as { id: string; fingerprint: string | null }[];
  if (!earlier) return null;
  const row = await em.getRepository(entity).findOneByOrFail({ id: earlier.id } as FindOptionsWhere<T>);
  refuseChangedInput(earlier.fingerprint, keyed.fingerprint, describe(row));
  return row;
}
