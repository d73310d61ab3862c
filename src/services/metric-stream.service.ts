import type { KeyedMetricPoint } from "../stores/metric-store/index.js";
import { METRIC_KEY_PATTERN } from "../stores/metric-store/index.js";
import type { RequestContext } from "./context.js";
import { DomainError } from "./errors.js";
import { liveStream } from "./live-stream.js";
import { metricsTopic, type MetricBatchEvent } from "./metrics.service.js";
import { validateId } from "./validation.js";

/** Points per replayed batch (one metric-store read each). */
export const REPLAY_PAGE_SIZE = 10_000;
/**
 * How long after the replay live points are still checked against it. A batch is announced right
 * after its INSERT is acknowledged, so an announcement of a point the replay already read arrives
 * within milliseconds of the replay's last read (Redis included); 10 s is a wide margin.
 */
export const SEAM_WINDOW_MS = 10_000;
const MAX_KEYS = 1_000;
/** Most live points queued for one subscriber before its stream fails (events hold up to 10,000 each). */
export const MAX_QUEUED_POINTS = 1_000_000;

export interface MetricStreamArgs {
  runId: string;
  keys?: string[] | null;
  fromStep?: number | null;
}

/**
 * A point's identity as a 53-bit number (FNV-1a over key, step, timestamp and value): a replay of
 * a 500,000-point run kept ~111 MB of identity strings per subscriber, numbers take ~8 MB. Two
 * different points sharing a hash (odds ~n²/2^54) would make a live point inside the seam be
 * taken for a replayed one.
 */
function identity(p: KeyedMetricPoint): number {
  const text = `${p.key}\u0000${p.step}\u0000${p.timestamp}\u0000${p.value}`;
  let lo = 0x811c9dc5;
  let hi = 0x050c5d1f;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    lo = Math.imul(lo ^ c, 0x01000193) >>> 0;
    hi = Math.imul(hi ^ (c + i), 0x01000193) >>> 0;
  }
  return (hi & 0x1fffff) * 0x100000000 + lo;
}

/**
 * `metricsLogged`: replays stored points from `fromStep` (paged), then streams each committed
 * batch live, with no gap and no duplicate at the seam:
 * - no gap: the event-bus subscription is opened before the first replay read (liveStream), and
 *   a batch is announced only after it is stored, so every point is either read by the replay or
 *   announced after the subscription opened;
 * - no duplicate: a point both replayed and announced (committed while the replay was reading) is
 *   recognised by its (key, step, timestamp, value) and dropped from the live side. Two identical
 *   points logged separately inside the seam window would be delivered once; outside it both are.
 */
export class MetricStreamService {
  async subscribe(ctx: RequestContext, args: MetricStreamArgs): Promise<AsyncIterable<MetricBatchEvent>> {
    const runId = validateId(args.runId, "runId");
    const keys = args.keys == null ? undefined : validateKeys(args.keys);
    const fromStep = args.fromStep ?? undefined;
    if (fromStep !== undefined && (!Number.isSafeInteger(fromStep) || fromStep < 0)) {
      throw new DomainError("BAD_USER_INPUT", "fromStep: must be a non-negative integer", "fromStep");
    }
    const run = await ctx.services.runs.get(ctx, runId);
    if (!run) throw new DomainError("NOT_FOUND", `runId: run ${JSON.stringify(runId)} not found`, "runId");

    const keySet = keys ? new Set(keys) : undefined;
    // Identities of replayed points, kept through the seam: until the live events that arrived
    // during the replay have all been handled, and for SEAM_WINDOW_MS after the replay ended (an
    // announcement through Redis may still be on its way). A slow consumer no longer outlasts it.
    let replayed: Set<number> | undefined;
    let seamClosesAt = Infinity;
    let queuedAtSeam = 0;

    const replay =
      fromStep === undefined
        ? undefined
        : (seam: { queuedEvents(): number }) => {
            replayed = new Set();
            return this.replayPages(ctx, runId, keys, fromStep, replayed, seenBatches, () => {
              seamClosesAt = Date.now() + SEAM_WINDOW_MS;
              queuedAtSeam = seam.queuedEvents();
              // Dropped when the seam closes even if no live event comes (a finished run's replay
              // was kept for as long as the subscription lived). It waits for the events queued at
              // the seam to be handled, but not forever: a subscriber that stopped reading would
              // otherwise hold it.
              let windows = 1;
              setTimeout(function dropWhenHandled() {
                if (queuedAtSeam > 0 && windows++ < 6) setTimeout(dropWhenHandled, SEAM_WINDOW_MS).unref();
                else replayed = undefined;
              }, SEAM_WINDOW_MS).unref();
            });
          };

    // Keys of the batches this subscriber got (live or replayed), so a batch announced again by a
    // retry reaches only those that never had it. Bounded: a retry comes soon after its batch.
    const seenBatches = new RecentKeys(SEEN_BATCHES);

    return liveStream<MetricBatchEvent, MetricBatchEvent>(ctx, metricsTopic(runId), {
      map: (event) => {
        if (queuedAtSeam > 0) queuedAtSeam--;
        else if (replayed && Date.now() > seamClosesAt) replayed = undefined;
        if (event.batchId !== undefined) {
          if (event.repeat && seenBatches.has(event.batchId)) return null;
          seenBatches.add(event.batchId);
        }
        // The common case (all keys, no replay) passes the published batch through untouched.
        if (!keySet && fromStep === undefined && !replayed) return event;
        const seen = replayed;
        const points = event.points.filter(
          (p) => (!keySet || keySet.has(p.key)) && (fromStep === undefined || p.step >= fromStep) && !(seen && seen.has(identity(p))),
        );
        if (points.length === event.points.length) return event; // unchanged: shared with other subscribers
        return points.length ? { runId, points } : null;
      },
      replay,
      // A subscriber that stopped reading fails once a million points wait for it.
      queueLimit: { weigh: (event) => event.points.length, max: MAX_QUEUED_POINTS },
    });
  }

  /**
   * Reads stored points page by page in (step, key, timestamp, value) order, each page starting
   * after the previous one's last point: at most REPLAY_PAGE_SIZE points in memory whatever the
   * run looks like (a day of points logged at step 0 used to be read as one page). Points equal in
   * all four (the same point logged twice) straddling a page boundary are replayed once.
   */
  private async *replayPages(
    ctx: RequestContext,
    runId: string,
    keys: string[] | undefined,
    fromStep: number,
    replayed: Set<number>,
    seenBatches: RecentKeys,
    onDone: () => void,
  ): AsyncGenerator<MetricBatchEvent> {
    let after: KeyedMetricPoint | undefined;
    try {
      for (;;) {
        const stored = await ctx.services.metrics.pointsFrom(runId, keys, fromStep, REPLAY_PAGE_SIZE, after);
        const points: KeyedMetricPoint[] = stored.map(({ key, step, value, timestamp, batchId }) => {
          if (batchId) seenBatches.add(batchId);
          return { key, step, value, timestamp };
        });
        for (const p of points) replayed.add(identity(p));
        if (points.length) yield { runId, points };
        if (points.length < REPLAY_PAGE_SIZE) return;
        after = points[points.length - 1];
      }
    } finally {
      onDone();
    }
  }
}

function validateKeys(keys: string[]): string[] {
  if (keys.length > MAX_KEYS) throw new DomainError("BAD_USER_INPUT", `keys: at most ${MAX_KEYS} keys`, "keys");
  keys.forEach((k, i) => {
    if (typeof k !== "string" || !METRIC_KEY_PATTERN.test(k)) throw new DomainError("BAD_USER_INPUT", `keys[${i}]: not a valid metric key`, `keys[${i}]`);
  });
  return keys;
}

/** Batch keys a subscriber remembers having received. */
export const SEEN_BATCHES = 10_000;

/** A set of the most recently added keys, at most `capacity` (the oldest are forgotten first). */
export class RecentKeys {
  private readonly keys = new Set<string>();

  constructor(private readonly capacity: number) {}

  has(key: string): boolean {
    return this.keys.has(key);
  }

  add(key: string): void {
    this.keys.delete(key); // re-added as the most recent
    this.keys.add(key);
    if (this.keys.size > this.capacity) this.keys.delete(this.keys.values().next().value!);
  }
}
