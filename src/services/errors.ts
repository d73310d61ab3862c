/**
 * The one error type services throw. `code` becomes `extensions.code` on the GraphQL error
 * (mapped in src/server/error-mapping.ts); `field` names the input field at fault.
 */
export type DomainErrorCode =
  | "NOT_FOUND"
  | "BAD_USER_INPUT"
  | "CONFLICT"
  | "FORBIDDEN"
  | "UNAUTHENTICATED"
  | "RATE_LIMITED"
  | "UNAVAILABLE";

export class DomainError extends Error {
  constructor(
    readonly code: DomainErrorCode,
    message: string,
    readonly field?: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = "DomainError";
  }
}

/**
 * A PostgreSQL unique violation (23505); with `constraint`, only one of that constraint or index
 * (typeorm's QueryFailedError carries the driver's `code` and `constraint`).
 */
export function isUniqueViolation(err: unknown, constraint?: string): boolean {
  if (typeof err !== "object" || err === null) return false;
  const { code, constraint: violated } = err as { code?: unknown; constraint?: unknown };
  return code === "23505" && (constraint === undefined || violated === constraint);
}

export const notFound = (what: string, id: string) => new DomainError("NOT_FOUND", `${what} ${JSON.stringify(id)} not found`);
export const badInput = (field: string, message: string) => new DomainError("BAD_USER_INPUT", `${field}: ${message}`, field);

/**
 * ClickHouse errors that pass: overload, limits of the moment, a replica or Keeper away, a
 * request that timed out. (TIMEOUT_EXCEEDED 159, TOO_MANY_SIMULTANEOUS_QUERIES 202,
 * NO_FREE_CONNECTION 203, SOCKET_TIMEOUT 209, NETWORK_ERROR 210, MEMORY_LIMIT_EXCEEDED 241,
 * TABLE_IS_READ_ONLY 242, TOO_MANY_PARTS 252, UNKNOWN_STATUS_OF_INSERT 319, KEEPER_EXCEPTION 999.)
 */
const TRANSIENT_CLICKHOUSE_CODES = new Set(["159", "202", "203", "209", "210", "241", "242", "252", "319", "999"]);

/** Connection-level failures of PostgreSQL/ClickHouse/Redis/S3, and overloads, mean "try again", not "bug". */
export function isUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = String((err as { code?: unknown }).code ?? "");
  // @clickhouse/client's ClickHouseError carries the server's code; the embedded engine's
  // errors only say it in their message ("Code: 241. DB::Exception: ...").
  const clickhouseCode = /^\d+$/.test(code) ? code : /^Code: (\d+)\./.exec(err.message)?.[1];
  return (
    ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "57P01", "57P03", "08006", "08001", "08003"].includes(code) ||
    (clickhouseCode !== undefined && TRANSIENT_CLICKHOUSE_CODES.has(clickhouseCode)) ||
    /Connection terminated|connect ECONNREFUSED|timeout exceeded when trying to connect|^Timeout error\.?$/i.test(err.message)
  );
}
