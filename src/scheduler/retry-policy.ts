/**
 * Retry policy for task attempts. Pure: the caller supplies the random source, so the scheduler
 * stays deterministic under test and replicas need no shared state.
 */

/** Why an attempt ended without success. */
export type FailureKind = "FAILED" | "EXECUTOR_LOST" | "TIMED_OUT" | "CANCELLED";

/** Random source in [0, 1), like Math.random. */
export type Rng = () => number;

/** Longest wait between attempts, whatever the base and attempt number. */
export const MAX_RETRY_DELAY_MS = 10 * 60 * 1000;

export interface RetryDelayOptions {
  /**
   * "full" (default): uniform in [0, min(cap, base·2^(attempt-1))) — spreads a burst of failures
   * (e.g. a lost GPU node) so retries do not stampede.
   * "decorrelated": uniform in [base, min(cap, 3·previous)) — grows like exponential backoff but
   * never retries immediately; needs `previousDelayMs` (defaults to base).
   * "none": the exponential ceiling itself.
   */
  jitter?: "full" | "decorrelated" | "none";
  capMs?: number;
  previousDelayMs?: number;
}

/**
 * Delay before the next attempt, after attempt number `attempt` (1 = the first run) failed.
 * `baseSeconds` is the task's `retry_backoff_seconds`. Always within [0, capMs].
 */
export function nextRetryDelayMs(attempt: number, baseSeconds: number, rng: Rng, options: RetryDelayOptions = {}): number {
  if (!Number.isInteger(attempt) || attempt < 1) throw new RangeError(`attempt must be a positive integer, got ${attempt}`);
  if (!(baseSeconds >= 0) || !Number.isFinite(baseSeconds)) throw new RangeError(`baseSeconds must be >= 0, got ${baseSeconds}`);
  const cap = options.capMs ?? MAX_RETRY_DELAY_MS;
  const baseMs = Math.min(baseSeconds * 1000, cap);
  if (baseMs === 0) return 0;
  const r = clampUnit(rng());
  switch (options.jitter ?? "full") {
    case "none":
      return exponentialCeiling(attempt, baseMs, cap);
    case "full":
      return Math.floor(r * exponentialCeiling(attempt, baseMs, cap));
    case "decorrelated": {
      const previous = Math.max(options.previousDelayMs ?? baseMs, baseMs);
      const upper = Math.min(cap, previous * 3);
      return Math.min(cap, Math.floor(baseMs + r * (upper - baseMs)));
    }
  }
}

/** base·2^(attempt-1), capped; the exponent is bounded so huge attempt numbers cannot overflow. */
function exponentialCeiling(attempt: number, baseMs: number, cap: number): number {
  return Math.min(cap, baseMs * 2 ** Math.min(attempt - 1, 40));
}

function clampUnit(x: number): number {
  // A misbehaving rng must not push a delay outside its bounds.
  return Number.isFinite(x) ? Math.min(Math.max(x, 0), 1 - Number.EPSILON) : 0;
}

/**
 * Whether a failed attempt gets another try. `attempt` is the number of the attempt that just
 * ended (1-based); `maxRetries` is the task's `retries`, so a task runs at most maxRetries + 1
 * times. Cancellation is a user's decision and is never retried; a lost executor or a timeout
 * counts as a failed attempt like any other.
 */
export function shouldRetry(attempt: number, maxRetries: number, failureKind: FailureKind): boolean {
  if (failureKind === "CANCELLED") return false;
  return attempt <= maxRetries;
}

/**
 * How many attempts of one task may be handed back NOT_STARTED (their executor could not set them
 * up: its work directory could not be created, a full disk) without counting against the task's
 * retries. Such an attempt says nothing about the task, so it goes back to the queue as it was;
 * past this many, a task no executor can set up is failing for a reason that may be its own (or the
 * whole pool is broken), and further NOT_STARTED attempts count like FAILED ones, so the task still
 * ends after its retries instead of bouncing between executors for ever.
 */
export const MAX_UNCOUNTED_NOT_STARTED = 10;

/**
 * Whether an attempt handed back NOT_STARTED goes back to the queue without counting against the
 * task's retries, given how many of its attempts were already handed back that way.
 */
export function notStartedIsUncounted(uncountedSoFar: number): boolean {
  return uncountedSoFar < MAX_UNCOUNTED_NOT_STARTED;
}

/**
 * The attempt number the retry policy sees: attempts that did not count (handed back NOT_STARTED)
 * are left out, so `attempt <= maxRetries` still means "has retries left".
 */
export function countedAttempt(attempt: number, uncountedAttempts: number): number {
  return Math.max(1, attempt - uncountedAttempts);
}

/** What the scheduler does with a failed attempt. */
export type RetryDecision = { retry: false } | { retry: true; nextAttempt: number; delayMs: number };

/** `shouldRetry` and `nextRetryDelayMs` together, for the code that finishes an attempt. */
export function decideRetry(input: {
  attempt: number;
  maxRetries: number;
  failureKind: FailureKind;
  backoffSeconds: number;
  rng: Rng;
  options?: RetryDelayOptions;
}): RetryDecision {
  if (!shouldRetry(input.attempt, input.maxRetries, input.failureKind)) return { retry: false };
  return {
    retry: true,
    nextAttempt: input.attempt + 1,
    delayMs: nextRetryDelayMs(input.attempt, input.backoffSeconds, input.rng, input.options),
  };
}

/** Small seeded PRNG (mulberry32) for reproducible jitter in tests and simulations. */
export function seededRng(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
