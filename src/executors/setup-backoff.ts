/**
 * When an executor stops claiming because it could not set an attempt up on its side (its work
 * directory could not be created: a full disk, a read-only or vanished work base), and when it
 * looks again. Pure bookkeeping: the agent owns the timer and the probe.
 *
 * A failed set-up pauses claiming and schedules a probe; each failed probe doubles the wait, up to
 * `maxMs`; a probe that succeeds resumes claiming. The count of failures is kept until an attempt
 * really starts, so an executor whose probe passes but whose set-ups keep failing (a disk that
 * fills up again at once) waits longer each time instead of returning to claiming every second.
 * It never gives up: an executor left broken keeps probing at `maxMs` and logging each failure,
 * and, claiming nothing, is listed OFFLINE by the server after MLGRAPH_EXECUTOR_OFFLINE_SECONDS
 * (unless tasks it still runs keep it seen).
 */
export interface SetupBackoffOptions {
  /** Wait before the first probe. */
  initialMs: number;
  /** Longest wait between two probes. */
  maxMs: number;
}

export const DEFAULT_SETUP_BACKOFF: SetupBackoffOptions = { initialMs: 1_000, maxMs: 60_000 };

/** Wait before the next probe after `failures` (1 or more) set-up or probe failures in a row: doubling, capped. */
export function setupProbeDelayMs(failures: number, options: SetupBackoffOptions = DEFAULT_SETUP_BACKOFF): number {
  if (!Number.isInteger(failures) || failures < 1) throw new RangeError(`failures must be a positive integer, got ${failures}`);
  return Math.min(options.maxMs, options.initialMs * 2 ** Math.min(failures - 1, 40));
}

export class SetupBackoff {
  /** Set-up and probe failures since an attempt last started. */
  private failures = 0;
  private pausedNow = false;

  constructor(private readonly options: SetupBackoffOptions = DEFAULT_SETUP_BACKOFF) {}

  /** Claiming is paused until a probe succeeds. */
  get paused(): boolean {
    return this.pausedNow;
  }

  /** Failures counted since an attempt last started. */
  get consecutiveFailures(): number {
    return this.failures;
  }

  /**
   * An attempt could not be set up: claiming pauses. Returns the wait before the probe, or null
   * when claiming was already paused (attempts of one claim failing together count once; a probe
   * is already due).
   */
  setupFailed(): number | null {
    if (this.pausedNow) return null;
    this.pausedNow = true;
    this.failures++;
    return setupProbeDelayMs(this.failures, this.options);
  }

  /** The probe failed: returns the (longer) wait before the next one. */
  probeFailed(): number {
    this.failures++;
    return setupProbeDelayMs(this.failures, this.options);
  }

  /** The probe succeeded: claiming resumes (the failure count stays until an attempt starts). */
  probeSucceeded(): void {
    this.pausedNow = false;
  }

  /** An attempt was set up and started: the next failure starts from the initial wait again. */
  attemptStarted(): void {
    this.failures = 0;
  }
}
