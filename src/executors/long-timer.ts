/** Node's timers hold at most 2^31 - 1 ms (about 24.8 days); a longer delay fires after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface LongTimer {
  clear(): void;
}

/**
 * setTimeout for delays of any length: a task may declare a timeout of 30 days, which a plain
 * setTimeout would fire at once. Longer delays are waited out in chained steps.
 */
export function setLongTimeout(fn: () => void, delayMs: number): LongTimer {
  let timer: NodeJS.Timeout;
  const arm = (remaining: number) => {
    timer = setTimeout(() => {
      if (remaining > MAX_TIMER_MS) arm(remaining - MAX_TIMER_MS);
      else fn();
    }, Math.min(remaining, MAX_TIMER_MS));
  };
  arm(Math.max(0, delayMs));
  return { clear: () => clearTimeout(timer) };
}
