import { setLongTimeout } from "../../../src/executors/long-timer.js";

describe("setLongTimeout", () => {
  it("does not fire a 30-day delay at once (a plain setTimeout fires it after 1 ms)", async () => {
    let fired = 0;
    const timer = setLongTimeout(() => fired++, 30 * 86_400_000);
    await new Promise((resolve) => setTimeout(resolve, 50));
    timer.clear();
    expect(fired).toBe(0);
  });

  it("fires a short delay once, and not at all once cleared", async () => {
    let fired = 0;
    setLongTimeout(() => fired++, 5);
    const cleared = setLongTimeout(() => fired += 10, 5);
    cleared.clear();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(fired).toBe(1);
  });

  describe("with fake timers", () => {
    beforeEach(() => jest.useFakeTimers());
    afterEach(() => jest.useRealTimers());

    it("fires a delay past the 24.8-day timer limit when it is due, not before", () => {
      let fired = 0;
      const delay = 30 * 86_400_000;
      const timer = setLongTimeout(() => fired++, delay);
      jest.advanceTimersByTime(delay - 1);
      expect(fired).toBe(0);
      jest.advanceTimersByTime(1);
      expect(fired).toBe(1);
      timer.clear();
    });

    it("can be cleared between its chained steps", () => {
      let fired = 0;
      const timer = setLongTimeout(() => fired++, 60 * 86_400_000);
      jest.advanceTimersByTime(25 * 86_400_000);
      timer.clear();
      jest.advanceTimersByTime(40 * 86_400_000);
      expect(fired).toBe(0);
    });
  });
});
