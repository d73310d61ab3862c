/**
 * Publish/subscribe between the writes and the live subscriptions. In-process by default; with
 * REDIS_URL every replica publishes to and receives from Redis, so a subscriber on replica A
 * sees a write made on replica B. Topics are plain strings like `run:<id>:metrics`.
 */
export interface EventBus {
  publish(topic: string, payload: unknown): Promise<void>;
  /** Returns an unsubscribe function. The handler receives payloads in publish order per topic. */
  subscribe(topic: string, handler: (payload: unknown) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

/**
 * Adapts a bus subscription to an AsyncIterator for GraphQL subscriptions. Events that arrive
 * while the consumer is busy are queued (bounded; overflow ends the stream with an error rather
 * than silently dropping events).
 */
export function iterateTopic<T>(
  bus: EventBus,
  topic: string,
  options: {
    maxQueue?: number;
    onSubscribed?: () => void;
    /** The size of an event (e.g. its points) for `maxQueuedWeight`; events count 1 by default. */
    weigh?: (payload: T) => number;
    /** Most total weight queued: 10,000 events of 10,000 points each would be 100M points held. */
    maxQueuedWeight?: number;
  } = {},
): AsyncIterableIterator<T> & { ready: Promise<void>; readonly queued: number } {
  const maxQueue = options.maxQueue ?? 10_000;
  const weigh = options.weigh;
  const maxWeight = options.maxQueuedWeight ?? Number.POSITIVE_INFINITY;
  let queuedWeight = 0;
  const queue: T[] = [];
  let waiting: ((r: IteratorResult<T>) => void) | null = null;
  let failed: ((e: Error) => void) | null = null;
  let error: Error | null = null;
  let done = false;
  let unsubscribe: (() => Promise<void>) | null = null;
  const ready = bus
    .subscribe(topic, (payload) => {
      if (done) return;
      if (waiting) {
        const w = waiting;
        waiting = null;
        failed = null;
        w({ value: payload as T, done: false });
      } else if (queue.length >= maxQueue) {
        error = new Error(`subscription fell behind by more than ${maxQueue} events`);
        void finish();
      } else if (weigh && queuedWeight + weigh(payload as T) > maxWeight) {
        error = new Error(`subscription fell behind by more than ${maxWeight} queued items`);
        void finish();
      } else {
        if (weigh) queuedWeight += weigh(payload as T);
        queue.push(payload as T);
      }
    })
    .then((u) => {
      unsubscribe = u;
      if (done) void u();
      options.onSubscribed?.();
    });
  let finished: Promise<IteratorResult<T>> | null = null;
  // Idempotent: a stream may be ended from both its consumer and its own cleanup, and an
  // unsubscribe must run once (the Redis bus counts subscribers per channel).
  function finish(): Promise<IteratorResult<T>> {
    finished ??= finishOnce();
    return finished;
  }
  async function finishOnce(): Promise<IteratorResult<T>> {
    done = true;
    if (waiting) {
      const w = waiting;
      waiting = null;
      if (error && failed) failed(error);
      else w({ value: undefined, done: true });
    }
    if (unsubscribe) await unsubscribe();
    return { value: undefined, done: true };
  }
  const iterator = {
    ready,
    /** Events received and not yet taken by the consumer. */
    get queued() {
      return queue.length;
    },
    next(): Promise<IteratorResult<T>> {
      if (queue.length > 0) {
        const value = queue.shift() as T;
        if (weigh) queuedWeight -= weigh(value);
        return Promise.resolve({ value, done: false });
      }
      if (error) return Promise.reject(error);
      if (done) return Promise.resolve({ value: undefined, done: true });
      return new Promise<IteratorResult<T>>((resolve, reject) => {
        waiting = resolve;
        failed = reject;
      });
    },
    return(): Promise<IteratorResult<T>> {
      queue.length = 0;
      return finish();
    },
    throw(e: unknown): Promise<IteratorResult<T>> {
      error = e instanceof Error ? e : new Error(String(e));
      return finish();
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}
