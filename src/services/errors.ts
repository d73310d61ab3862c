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

export const notFound = (what: string, id: string) => new DomainError("NOT_FOUND", `${what} ${JSON.stringify(id)} not found`);
export const badInput = (field: string, message: string) => new DomainError("BAD_USER_INPUT", `${field}: ${message}`, field);

/** Connection-level failures of PostgreSQL/ClickHouse/Redis/S3 mean "try again", not "bug". */
export function isUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: string }).code ?? "";
  return (
    ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "57P01", "57P03", "08006", "08001", "08003"].includes(code) ||
    /Connection terminated|connect ECONNREFUSED|timeout exceeded when trying to connect/i.test(err.message)
  );
}
