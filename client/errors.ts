/** The client's one error type, shared by the HTTP client, subscriptions and the helpers. */

/** One error as the server formats it (`extensions.code`, and `field` for input errors). */
export interface ServerError {
  message: string;
  path?: readonly (string | number)[];
  extensions?: { code?: string; field?: string; [key: string]: unknown };
}

/**
 * Every failure the client reports. `code` is the server's `extensions.code` (NOT_FOUND,
 * BAD_USER_INPUT, CONFLICT, FORBIDDEN, UNAUTHENTICATED, RATE_LIMITED, UNAVAILABLE, ...),
 * NETWORK_ERROR when no (whole) answer came back, or BAD_REQUEST for an HTTP 4xx without a
 * GraphQL body (a wrong URL, a body the server could not read); `field` names the input at fault.
 */
export class MlgraphError extends Error {
  override readonly name = "MlgraphError";
  constructor(
    message: string,
    readonly code: string,
    readonly field?: string,
    /** HTTP status, when an HTTP answer came back. */
    readonly status?: number,
    /** Every error of the answer (the first one gives message, code and field). */
    readonly errors: readonly ServerError[] = [],
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /**
   * Worth retrying unchanged: the server was unreachable, overloaded or a store was down. This says
   * the failure is transient, not that resending is safe: a NETWORK_ERROR may hide a mutation the
   * server applied. Resending stores nothing twice for `logMetrics` with its idempotency key,
   * `createRun`, `submitPipelineRun` and `createModelVersion` with an `idempotencyKey` in their
   * input (choose it once per intended object, e.g. a UUID, and resend it unchanged: the answer
   * is the object the first call created), `updateRun`, `logParams`, `setRunTags`,
   * `createPipeline` (same spec, same version) and aliases. Those creates without a key, and
   * `createArtifactUpload` always, create a new one each time (as MLflow's create_run does): look
   * for the first before sending again.
   */
  get retryable(): boolean {
    return RETRYABLE_CODES.has(this.code) || (this.status !== undefined && this.status >= 502 && this.status <= 504);
  }

  static fromServerErrors(errors: readonly ServerError[], status?: number): MlgraphError {
    const first = errors[0] ?? { message: "unknown error" };
    const code = typeof first.extensions?.code === "string" ? first.extensions.code : "INTERNAL_SERVER_ERROR";
    const field = typeof first.extensions?.field === "string" ? first.extensions.field : undefined;
    return new MlgraphError(first.message, code, field, status, errors);
  }
}

/** True for failures worth retrying unchanged (network, UNAVAILABLE, RATE_LIMITED, 502-504). */
export function isRetryable(err: unknown): boolean {
  return err instanceof MlgraphError && err.retryable;
}

const RETRYABLE_CODES = new Set(["NETWORK_ERROR", "UNAVAILABLE", "RATE_LIMITED"]);

