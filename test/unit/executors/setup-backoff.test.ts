import { SetupBackoff, setupProbeDelayMs } from "../../../src/executors/setup-backoff";

describe("setupProbeDelayMs", () => {
  it("doubles from the initial wait up to the cap, and refuses nonsense", () => {
    const options = { initialMs: 1_000, maxMs: 60_000 };
    expect([1, 2, 3, 4, 5, 6, 7, 8, 1000].map((n) => setupProbeDelayMs(n, options))).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]);
    expect(() => setupProbeDelayMs(0, options)).toThrow(RangeError);
    expect(() => setupProbeDelayMs(1.5, options)).toThrow(RangeError);
  });
});

describe("SetupBackoff", () => {
  it("pauses on a failed set-up, counts failures of one pause once, and resumes on a passing probe", () => {
    const b = new SetupBackoff({ initialMs: 100, maxMs: 1_000 });
    expect(b.paused).toBe(false);
    expect(b.setupFailed()).toBe(100);
    expect(b.paused).toBe(true);
    // Other attempts of the same claim failing meanwhile: a probe is already due.
    expect(b.setupFailed()).toBeNull();
    expect(b.probeFailed()).toBe(200);
    expect(b.probeFailed()).toBe(400);
    b.probeSucceeded();
    expect(b.paused).toBe(false);
    // Set-ups failing again right after a passing probe wait longer than the first time.
    expect(b.setupFailed()).toBe(800);
    expect(b.probeFailed()).toBe(1_000);
    expect(b.probeFailed()).toBe(1_000);
    b.probeSucceeded();
    // An attempt that really started: the next failure starts from the beginning.
    b.attemptStarted();
    expect(b.consecutiveFailures).toBe(0);
    expect(b.setupFailed()).toBe(100);
  });
});
