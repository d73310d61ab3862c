import { createSourceEventStream, execute, type ExecutionArgs, type ExecutionResult } from "graphql";

type ResultOrPromise = ExecutionResult | Promise<ExecutionResult>;

/**
 * graphql-ws's `subscribe` with one execution per (event, operation) instead of one per
 * subscriber. graphql-js maps every event of every subscription through `execute`; when ten
 * dashboards watch one run with the same query, a batch of 100 points was executed ten times.
 * Here the result is remembered on the event object (a WeakMap, so it lives as long as the
 * event) and reused by every subscriber whose operation text, operation name and variables are
 * the same (and the same role).
 *
 * Safe because nothing under a subscription's root depends on who asks: authorisation happens
 * when subscribing and again per subscriber on every event (liveStream re-checks the token before
 * an event reaches this mapping), and the payload types have no per-principal fields. Events that
 * a stream rewrites per subscriber (a filtered batch) are new objects and simply are not shared.
 */
export function createSharedSubscribe(
  /**
   * The context one event executes with, made from the subscription's: a subscription lives for
   * hours, and per-request caches (DataLoaders) kept in its context would answer every later event
   * with the first one's rows (a task's attempts stuck at `[]`).
   */
  contextForEvent: (subscriptionContext: unknown) => unknown = (c) => c,
): (args: ExecutionArgs) => Promise<AsyncIterableIterator<ExecutionResult> | ExecutionResult> {
  const resultsByEvent = new WeakMap<object, Map<string, ResultOrPromise>>();
  return async (args) => {
    const source = await createSourceEventStream(args);
    if (!isAsyncIterable(source)) return source as ExecutionResult;
    // The role is part of the key as a guard: should a payload field ever depend on who asks
    // (role checks, scoped loaders), subscribers of different roles still never share a result.
    const role = (args.contextValue as { principal?: { role?: string } } | undefined)?.principal?.role ?? "";
    const operationKey = JSON.stringify([role, args.operationName ?? null, args.document.loc?.source.body ?? "", args.variableValues ?? {}]);
    const shareable = args.document.loc !== undefined;
    return mapAsyncIterable(source, (payload): ResultOrPromise => {
      const run = () => execute({ ...args, rootValue: payload, contextValue: contextForEvent(args.contextValue) });
      if (!shareable || payload === null || typeof payload !== "object") return run();
      let byOperation = resultsByEvent.get(payload);
      if (!byOperation) resultsByEvent.set(payload, (byOperation = new Map()));
      let result = byOperation.get(operationKey);
      if (!result) byOperation.set(operationKey, (result = run()));
      return result;
    });
  };
}

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return typeof (value as AsyncIterable<unknown>)?.[Symbol.asyncIterator] === "function";
}

/**
 * Maps an async iterable like graphql-js's own (internal) mapAsyncIterator: `return()` and
 * `throw()` go straight to the source, so an unsubscribe closes the event-bus subscription at once.
 */
function mapAsyncIterable<T, U>(iterable: AsyncIterable<T>, fn: (value: T) => U | Promise<U>): AsyncIterableIterator<U> {
  const iterator = iterable[Symbol.asyncIterator]();
  async function mapResult(result: IteratorResult<T>): Promise<IteratorResult<U>> {
    if (result.done) return { value: undefined, done: true };
    try {
      return { value: await fn(result.value), done: false };
    } catch (error) {
      await iterator.return?.().catch(() => undefined);
      throw error;
    }
  }
  const mapped: AsyncIterableIterator<U> = {
    async next() {
      return mapResult(await iterator.next());
    },
    async return(): Promise<IteratorResult<U>> {
      if (typeof iterator.return === "function") await iterator.return();
      return { value: undefined, done: true };
    },
    async throw(error: unknown) {
      if (typeof iterator.throw === "function") return mapResult(await iterator.throw(error));
      throw error;
    },
    [Symbol.asyncIterator]() {
      return mapped;
    },
  };
  return mapped;
}
