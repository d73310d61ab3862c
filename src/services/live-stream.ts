import { iterateTopic } from "../stores/event-bus/event-bus.js";
import type { RequestContext } from "./context.js";
import { stillAuthorised } from "./credential-check.js";

/**
 * A GraphQL subscription over one event-bus topic. Each event is filtered, re-authorised (a
 * revoked or expired token ends the stream) and mapped to what the subscriber receives; `null`
 * from the mapper skips the event. `replay` events, when given, are yielded before live ones;
 * the subscription to the topic is opened *before* the replay is read, so nothing falls in between,
 * and `dedupe` lets the caller drop live events the replay already contained.
 *
 * Ending the stream (the client's `complete`, or its socket closing) releases the topic at once.
 * A generator's own `return()` only runs once the generator next yields, which on a quiet topic
 * is never, so the bus subscription (and on Redis the channel) would stay held; the returned
 * generator's `return()` therefore ends the topic iterator first, which lets the loop finish.
 */
export function liveStream<E, T>(
  ctx: RequestContext,
  topic: string,
  options: {
    filter?: (event: E) => boolean;
    map: (event: E) => Promise<T | null> | T | null;
    /** `queuedEvents()`: live events received meanwhile and not yet handled (for the seam). */
    replay?: (seam: { queuedEvents(): number }) => AsyncIterable<T> | Iterable<T> | Promise<Iterable<T>>;
    /** Bounds what a subscriber that stopped reading may hold queued, by weight (see iterateTopic). */
    queueLimit?: { weigh: (event: E) => number; max: number };
  },
): AsyncGenerator<T> {
  const events = iterateTopic<E>(ctx.services.bus, topic, options.queueLimit ? { weigh: options.queueLimit.weigh, maxQueuedWeight: options.queueLimit.max } : {});
  // A quiet topic brings no event to re-check the credential on: a revoked token's stream would
  // stay open, holding its bus subscription (a Redis channel), for as long as the socket lives.
  const recheck =
    ctx.principal.tokenId || ctx.principal.expiresAt
      ? setInterval(() => {
          stillAuthorised(ctx).then(
            (ok) => {
              if (!ok) void events.return?.();
            },
            () => undefined, // a store outage is not a revocation: the next tick asks again
          );
        }, ctx.services.config.credentialRecheckSeconds * 1000)
      : undefined;
  recheck?.unref();
  const stream = streamEvents(ctx, events, options, () => clearInterval(recheck));
  const returnFromStream = stream.return.bind(stream);
  stream.return = async (value) => {
    clearInterval(recheck);
    await events.return?.();
    return returnFromStream(value);
  };
  return stream;
}

async function* streamEvents<E, T>(
  ctx: RequestContext,
  events: ReturnType<typeof iterateTopic<E>>,
  options: Parameters<typeof liveStream<E, T>>[2],
  onEnd: () => void,
): AsyncGenerator<T> {
  try {
    await events.ready;
    if (options.replay) {
      const replayed = await options.replay({ queuedEvents: () => events.queued });
      for await (const item of replayed as AsyncIterable<T>) {
        if (!(await stillAuthorised(ctx))) return; // a long replay stops when the token is revoked
        yield item;
      }
    }
    for await (const event of events) {
      if (options.filter && !options.filter(event)) continue;
      // A revoked or expired token ends the stream (completes it) rather than erroring the socket.
      if (!(await stillAuthorised(ctx))) return;
      const value = await options.map(event);
      if (value !== null) yield value;
    }
  } finally {
    onEnd();
    await events.return?.();
  }
}
