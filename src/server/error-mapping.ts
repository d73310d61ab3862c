import { GraphQLError, type GraphQLFormattedError } from "graphql";
import { unwrapResolverError } from "@apollo/server/errors";
import type { Logger } from "pino";
import { DomainError, isUnavailable } from "../services/errors.js";

/**
 * The one place errors become what clients see: DomainError codes go to `extensions.code`
 * (with `field` when known); GraphQL's own validation errors keep their codes; anything else is
 * logged here and answered as INTERNAL_SERVER_ERROR without its message or stack.
 */
export function formatError(formatted: GraphQLFormattedError, error: unknown, log: Logger): GraphQLFormattedError {
  const original = unwrapResolverError(error);
  if (original instanceof DomainError) {
    return {
      message: original.message,
      locations: formatted.locations,
      path: formatted.path,
      extensions: { code: original.code, ...(original.field ? { field: original.field } : {}), ...(original.details ?? {}) },
    };
  }
  const code = formatted.extensions?.code;
  if (typeof code === "string" && code !== "INTERNAL_SERVER_ERROR") {
    const { stacktrace: _stack, http: _http, ...extensions } = formatted.extensions ?? {};
    return { ...formatted, extensions: { ...extensions, code } };
  }
  if (error instanceof GraphQLError && !error.originalError && !error.path) {
    // Parse/validation errors raised by graphql-js itself.
    return { message: formatted.message, locations: formatted.locations, extensions: { code: "GRAPHQL_VALIDATION_FAILED" } };
  }
  // PostgreSQL "data exception" (class 22): a value the column cannot hold. The input was bad,
  // the transaction rolled back; say so rather than report a server fault.
  const pgCode = (original as { code?: unknown } | null)?.code;
  if (typeof pgCode === "string" && pgCode.startsWith("22")) {
    return { message: "a value in the input is not valid for storage", locations: formatted.locations, path: formatted.path, extensions: { code: "BAD_USER_INPUT" } };
  }
  const storeUnavailable = isUnavailable(original);
  log.error({ err: original instanceof Error ? { message: original.message, stack: original.stack } : original, path: formatted.path }, "unexpected error in resolver");
  if (storeUnavailable) {
    return { message: "a backing store is unavailable; try again shortly", locations: formatted.locations, path: formatted.path, extensions: { code: "UNAVAILABLE" } };
  }
  return { message: "Internal server error", locations: formatted.locations, path: formatted.path, extensions: { code: "INTERNAL_SERVER_ERROR" } };
}

