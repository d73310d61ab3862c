import fc from "fast-check";
import {
  MAX_RETRY_DELAY_MS,
  MAX_UNCOUNTED_NOT_STARTED,
  countedAttempt,
  decideRetry,
  nextRetryDelayMs,
  notStartedIsUncounted,
  seededRng,
  shouldRetry,
  type FailureKind,
} from "../../../src/scheduler/retry-policy.js";

describe("shouldRetry", () => {
  it("allows retries+1 attempts in all, and never retries a cancellation", () => {
    expect(shouldRetry(1, 2, "FAILED")).toBe(true);
    expect(shouldRetry(2, 2, "EXECUTOR_LOST")).toBe(true);
    expect(shouldRetry(3, 2, "TIMED_OUT")).toBe(false);
    expect(shouldRetry(1, 0, "FAILED")).toBe(false);
    expect(shouldRetry(1, 5, "CANCELLED")).toBe(false);
  });
});

describe("nextRetryDelayMs", () => {
  it("is reproducible with a seeded rng", () => {
    const a = seededRng(42);
    const b = seededRng(42);
    const xs = [1, 2, 3, 4, 5].map((n) => nextRetryDelayMs(n, 5, a));
    const ys = [1, 2, 3, 4, 5].map((n) => nextRetryDelayMs(n, 5, b));
    expect(xs).toEqual(ys);
    expect(new Set(xs).size).toBeGreaterThan(1);
  });

  it("doubles the ceiling per attempt without jitter, up to the cap", () => {
    const rng = seededRng(1);
    expect([1, 2, 3, 4].map((n) => nextRetryDelayMs(n, 5, rng, { jitter: "none" }))).toEqual([5000, 10000, 20000, 40000]);
    expect(nextRetryDelayMs(50, 5, rng, { jitter: "none" })).toBe(MAX_RETRY_DELAY_MS);
    expect(nextRetryDelayMs(100000, 5, rng, { jitter: "none" })).toBe(MAX_RETRY_DELAY_MS);
  });

  it("returns 0 for a zero base (retry at once)", () => {
    expect(nextRetryDelayMs(3, 0, seededRng(3))).toBe(0);
  });

  it("refuses nonsense input", () => {
    expect(() => nextRetryDelayMs(0, 5, Math.random)).toThrow(RangeError);
    expect(() => nextRetryDelayMs(1.5, 5, Math.random)).toThrow(RangeError);
    expect(() => nextRetryDelayMs(1, -1, Math.random)).toThrow(RangeError);
    expect(() => nextRetryDelayMs(1, Number.NaN, Math.random)).toThrow(RangeError);
  });

  it("property: full jitter stays in [0, min(cap, base*2^(n-1)))", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 10_000 }), fc.double({ min: 0, max: 86_400, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true }), (n, base, r) => {
        const d = nextRetryDelayMs(n, base, () => r);
        const ceiling = Math.min(MAX_RETRY_DELAY_MS, base * 1000 * 2 ** Math.min(n - 1, 40));
        expect(Number.isInteger(d)).toBe(true);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThanOrEqual(Math.max(0, ceiling));
        expect(d).toBeLessThanOrEqual(MAX_RETRY_DELAY_MS);
      }),
    );
  });

  it("property: decorrelated jitter stays in [base, min(cap, 3*previous)]", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 100 }), fc.integer({ min: 1, max: 3600 }), fc.integer({ min: 0, max: 10 * MAX_RETRY_DELAY_MS }), fc.integer(), (n, base, prev, seed) => {
        const d = nextRetryDelayMs(n, base, seededRng(seed), { jitter: "decorrelated", previousDelayMs: prev });
        const baseMs = Math.min(base * 1000, MAX_RETRY_DELAY_MS);
        expect(d).toBeGreaterThanOrEqual(baseMs);
        expect(d).toBeLessThanOrEqual(Math.min(MAX_RETRY_DELAY_MS, Math.max(prev, baseMs) * 3));
      }),
    );
  });

  it("property: a broken rng cannot escape the bounds", () => {
    for (const r of [-1, 2, Number.NaN, Infinity]) {
      const d = nextRetryDelayMs(3, 10, () => r);
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThanOrEqual(40_000);
    }
  });
});

describe("decideRetry", () => {
  it("combines the decision and the delay", () => {
    const kinds: FailureKind[] = ["FAILED", "EXECUTOR_LOST", "TIMED_OUT"];
    for (const failureKind of kinds) {
      const d = decideRetry({ attempt: 1, maxRetries: 1, failureKind, backoffSeconds: 2, rng: seededRng(7) });
      expect(d.retry).toBe(true);
      if (d.retry) {
        expect(d.nextAttempt).toBe(2);
        expect(d.delayMs).toBeGreaterThanOrEqual(0);
        expect(d.delayMs).toBeLessThan(2000);
      }
    }
    expect(decideRetry({ attempt: 2, maxRetries: 1, failureKind: "FAILED", backoffSeconds: 2, rng: seededRng(7) })).toEqual({ retry: false });
    expect(decideRetry({ attempt: 1, maxRetries: 3, failureKind: "CANCELLED", backoffSeconds: 2, rng: seededRng(7) })).toEqual({ retry: false });
  });
});

describe("attempts handed back NOT_STARTED", () => {
  it("do not count, up to the limit; the retry policy sees only the attempts that count", () => {
    expect(MAX_UNCOUNTED_NOT_STARTED).toBe(10);
    expect([0, 1, 9].map(notStartedIsUncounted)).toEqual([true, true, true]);
    expect([10, 11].map(notStartedIsUncounted)).toEqual([false, false]);
    // Attempt 4 after 3 uncounted ones is the first that counts: a task with no retries fails on it.
    expect(countedAttempt(4, 3)).toBe(1);
    expect(shouldRetry(countedAttempt(4, 3), 0, "FAILED")).toBe(false);
    expect(shouldRetry(countedAttempt(4, 3), 1, "FAILED")).toBe(true);
    expect(countedAttempt(1, 0)).toBe(1);
  });
});
