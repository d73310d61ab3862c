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
