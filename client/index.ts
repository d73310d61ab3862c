/**
 * The typed mlgraph client: `createClient({ url, token })` gives `request(document, variables)`
 * over HTTP (fetch) and `subscribe(document, variables)` as an AsyncIterable over graphql-ws.
 * Documents come from `client/generated/` (codegen over `client/operations/**\/*.graphql`), so
 * variables and results are typed end to end:
 *
 * ```ts
 * import { createClient, CreateRunDocument } from "mlgraph/client";
 * const client = createClient({ url: "http://127.0.0.1:4000/graphql", token: process.env.MLGRAPH_TOKEN });
 * const { createRun } = await client.request(CreateRunDocument, { input: { experimentId } });
 * ```
 */
// The printer alone, not the package index: that loads all of graphql-js (about 0.1 s of every CLI start).
import { print } from "graphql/language/printer";
import type { DocumentNode } from "graphql";
import { createClient as createWsClient, type Client as WsClient } from "graphql-ws/client";
import WebSocket from "ws";
import type { TypedDocumentNode } from "@graphql-typed-document-node/core";
import { isRetryable, MlgraphError, type ServerError } from "./errors.js";
import { MetricLogger, type MetricLoggerOptions } from "./metric-logger.js";

export * from "./generated/graphql.js";
export { MetricLogger, type MetricLoggerOptions, type MetricLoggerStats } from "./metric-logger.js";
export { pipeline, PipelineBuilder, type TaskHandle, type TaskOptions } from "./pipeline-builder.js";
export type { TypedDocumentNode };
export { MlgraphError, isRetryable, type ServerError } from "./errors.js";
export { uploadArtifact, downloadArtifact, sha256File, type UploadOptions, type DownloadOptions, type ProgressCallback, type UploadedArtifact } from "./artifact-upload.js";

export interface ClientOptions {
  /** The GraphQL endpoint, e.g. http://127.0.0.1:4000/graphql (a bare origin gets /graphql added). */
  url: string;
  /** API token (`MLGRAPH_TOKEN`); sent as `Authorization: Bearer <token>`. */
  token?: string;
  /** WebSocket endpoint; derived from `url` when absent. */
  wsUrl?: string;
  /** Per-request timeout in ms (default 60 s); a timeout is a NETWORK_ERROR, so retryable. */
  timeoutMs?: number;
  /** Subscription reconnects: first wait and cap in ms (defaults 250 and 10,000), doubling with jitter. */
  reconnect?: { initialDelayMs?: number; maxDelayMs?: number; maxAttempts?: number };
}

export interface RequestOptions {
  signal?: AbortSignal;
  /**
   * Resends a failure worth retrying (`MlgraphError.retryable`: no answer, UNAVAILABLE,
   * RATE_LIMITED, 502-504) up to this many more times, waiting 200 ms doubling to 5 s with jitter
   * (at least a RATE_LIMITED answer's `retryAfterSeconds`). Default 0. Only for calls that are
   * safe to send twice: queries, and mutations that store nothing twice (creates with an
   * `idempotencyKey`, `logMetrics` with one, updates, params, tags, aliases; see `retryable`).
   */
  retries?: number;
}

/** A live subscription: iterate it; `return()` (or breaking out of `for await`) unsubscribes. */
export type LiveSubscription<T> = AsyncIterableIterator<T> & { close(): void };

export interface MlgraphClient {
  readonly url: string;
  readonly wsUrl: string;
  /** Sends a query or mutation; resolves with `data`, rejects with MlgraphError. */
  request<TResult, TVariables>(document: TypedDocumentNode<TResult, TVariables>, variables?: TVariables, options?: RequestOptions): Promise<TResult>;
  /**
   * Starts a subscription. Each server event is one item; a GraphQL error ends the iteration with
   * an MlgraphError. A dropped connection is re-established with backoff and the subscription
   * resumed (events published while disconnected are not replayed unless the operation has a
   * replay argument such as metricsLogged's fromStep).
   */
  subscribe<TResult, TVariables>(document: TypedDocumentNode<TResult, TVariables>, variables?: TVariables): LiveSubscription<TResult>;
  /** A buffered metric logger for one run (see MetricLogger). */
  metricLogger(runId: string, options?: MetricLoggerOptions): MetricLogger;
  /** Closes the WebSocket, if one was opened. */
  close(): Promise<void>;
}

/** Accepts `http://host:port` or the full endpoint; returns the /graphql endpoint. */
export function normalizeEndpoint(url: string): string {
  const parsed = new URL(url);
  if (parsed.pathname === "/" || parsed.pathname === "") parsed.pathname = "/graphql";
  return parsed.toString();
}

// Printing a document once per document, not once per request: the metric logger sends the
// same mutation thousands of times.
const printed = new WeakMap<DocumentNode, string>();
function printOnce(document: DocumentNode): string {
  let text = printed.get(document);
  if (text === undefined) {
    text = print(document);
    printed.set(document, text);
  }
  return text;
}

/** Creates a client. Nothing connects until the first request or subscription. */
export function createClient(options: ClientOptions): MlgraphClient {
  const url = normalizeEndpoint(options.url);
  const wsUrl = options.wsUrl ?? url.replace(/^http/, "ws");
  const timeoutMs = options.timeoutMs ?? 60_000;
  const authHeader = options.token ? `Bearer ${options.token}` : undefined;
  let ws: WsClient | undefined;

  const wsClient = (): WsClient => {
    const initial = options.reconnect?.initialDelayMs ?? 250;
    const max = options.reconnect?.maxDelayMs ?? 10_000;
    ws ??= createWsClient({
      url: wsUrl,
      webSocketImpl: WebSocket,
      connectionParams: authHeader ? { Authorization: authHeader } : {},
      lazy: true,
      retryAttempts: options.reconnect?.maxAttempts ?? Number.POSITIVE_INFINITY,
      // Server restarts close the socket "abnormally" (1006), and a server whose store is away
      // closes it with 1013: those are retried. A refused credential (4403) or request (4400)
      // would be refused again: the subscription fails with it instead of reconnecting forever.
      shouldRetry: (event) => !FINAL_CLOSE_CODES.has((event as { code?: number } | undefined)?.code ?? 0),
      retryWait: async (retries) => {
        const cap = Math.min(max, initial * 2 ** retries);
        await new Promise((resolve) => setTimeout(resolve, cap / 2 + Math.random() * (cap / 2)));
      },
    });
    return ws;
  };

  /** One POST of a query or mutation: its data, or an MlgraphError. */
  const sendOnce = async <TResult, TVariables>(document: TypedDocumentNode<TResult, TVariables>, variables: TVariables | undefined, requestOptions: RequestOptions | undefined): Promise<TResult> => {
    const signal = requestOptions?.signal ? AbortSignal.any([requestOptions.signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs);
    let response: Response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json", ...(authHeader ? { authorization: authHeader } : {}) },
        body: JSON.stringify({ query: printOnce(document), variables: variables ?? {} }),
        signal,
      });
    } catch (err) {
      if (requestOptions?.signal?.aborted) throw err;
      throw new MlgraphError(`cannot reach ${url}: ${describeNetworkError(err)}`, "NETWORK_ERROR", undefined, undefined, [], { cause: err });
    }
    let body: { data?: unknown; errors?: ServerError[] };
    try {
      body = (await response.json()) as typeof body;
    } catch (err) {
      // A proxy's HTML error page, or the connection dropped mid-body. Only a server-side status,
      // 429 or a body cut off mid-way is worth retrying; any other 4xx (a wrong URL's 404, a
      // refused body) would be refused again.
      const code =
        response.status >= 500 ? "UNAVAILABLE" : response.status === 429 ? "RATE_LIMITED" : response.status >= 400 ? "BAD_REQUEST" : "NETWORK_ERROR";
      throw new MlgraphError(`${url} answered HTTP ${response.status} without a GraphQL body`, code, undefined, response.status, [], { cause: err });
    }
    if (body.errors?.length) throw MlgraphError.fromServerErrors(body.errors, response.status);
    if (body.data === undefined || body.data === null) {
      throw new MlgraphError(`${url} answered HTTP ${response.status} without data`, response.status >= 500 ? "UNAVAILABLE" : "INTERNAL_SERVER_ERROR", undefined, response.status);
    }
    return body.data as never;
  };

  const client: MlgraphClient = {
    url,
    wsUrl,
    async request(document, variables, requestOptions) {
      const retries = requestOptions?.retries ?? 0;
      for (let attempt = 0, delayMs = 200; ; attempt++, delayMs = Math.min(delayMs * 2, 5_000)) {
        try {
          return await sendOnce(document, variables, requestOptions);
        } catch (err) {
          if (attempt >= retries || !isRetryable(err) || requestOptions?.signal?.aborted) throw err;
          const retryAfterMs = Number((err as MlgraphError).errors[0]?.extensions?.retryAfterSeconds ?? 0) * 1000;
          await new Promise((resolve) => setTimeout(resolve, Math.max(retryAfterMs, delayMs / 2 + Math.random() * (delayMs / 2))));
        }
      }
    },
    subscribe(document, variables) {
      return subscribeIterator(wsClient(), printOnce(document), (variables ?? {}) as Record<string, unknown>);
    },
    metricLogger(runId, loggerOptions) {
      return new MetricLogger(client, runId, loggerOptions);
    },
    async close() {
      await ws?.dispose();
      ws = undefined;
    },
  };
  return client;
}

function describeNetworkError(err: unknown): string {
  if (err instanceof Error) {
    if (err.name === "TimeoutError") return "timed out";
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    return cause?.code ?? cause?.message ?? err.message;
  }
  return String(err);
}

/** Bridges graphql-ws's push callbacks to a pull AsyncIterator with an unbounded queue. */
function subscribeIterator<T>(ws: WsClient, query: string, variables: Record<string, unknown>): LiveSubscription<T> {
  const queue: T[] = [];
  let failure: MlgraphError | undefined;
  let done = false;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const unsubscribe = ws.subscribe<T>(
    { query, variables },
    {
      next: (value) => {
        if (value.errors?.length) failure ??= MlgraphError.fromServerErrors(value.errors as ServerError[]);
        else if (value.data) queue.push(value.data as T);
        if (failure) unsubscribe();
        notify();
      },
      error: (err) => {
        failure ??= Array.isArray(err)
          ? MlgraphError.fromServerErrors(err as ServerError[])
          : new MlgraphError(`subscription failed: ${describeCloseOrError(err)}`, closeErrorCode(err), undefined, undefined, [], { cause: err });
        done = true;
        notify();
      },
      complete: () => {
        done = true;
        notify();
      },
    },
  );
  const close = () => {
    if (done) return;
    done = true;
    unsubscribe();
    notify();
  };
  const iterator: LiveSubscription<T> = {
    async next(): Promise<IteratorResult<T>> {
      for (;;) {
        if (queue.length > 0) return { value: queue.shift() as T, done: false };
        if (failure) {
          const err = failure;
          failure = undefined;
          done = true;
          throw err;
        }
        if (done) return { value: undefined, done: true };
        await new Promise<void>((resolve) => (wake = resolve));
      }
    },
    async return(): Promise<IteratorResult<T>> {
      close();
      queue.length = 0;
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
    close,
  };
  return iterator;
}

/** graphql-ws close codes that a reconnect would only meet again. */
const FINAL_CLOSE_CODES = new Set([4400, 4403, 4406]);

/** 4403: the server refused the connection's credential (revoked, expired, unknown). */
function closeErrorCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 4403) return "UNAUTHENTICATED";
  if (code === 4400 || code === 4406) return "BAD_REQUEST";
  return "NETWORK_ERROR";
}

function describeCloseOrError(err: unknown): string {
  if (err instanceof Error) return err.message;
  const close = err as { code?: number; reason?: string };
  if (typeof close?.code === "number") return `connection closed (${close.code}${close.reason ? `: ${close.reason}` : ""})`;
  return String(err);
}
