/**
 * What `runs watch --from-step` has printed, so that a reconnect's replay prints nothing twice.
 *
 * Why every point is remembered: after a reconnect graphql-ws resubscribes with the same
 * variables, so the server replays every stored point from the ORIGINAL fromStep again before the
 * live ones. Every printed point has step >= fromStep (the server filters live points by it too),
 * so any of them can come back at the next reconnect: there is no step below which points are safe
 * to forget. Identities (key, step, timestamp, value) are kept exactly for the last `maxExact`
 * printed points (one flat string each, ~110 bytes with its Set entry: ~55 MB at the default cap
 * of 500,000, reached only by a watch that printed that many lines). Older ones are folded into a
 * per-key watermark (highest step and latest timestamp among the forgotten points of that key),
 * and a point at or below both is taken for one already printed. So nothing is ever printed
 * twice; what the cap can cost is hiding a genuinely new point whose step AND timestamp are no
 * later than those of a point printed 500,000 lines before (a back-dated point). A watch without
 * --from-step replays nothing and remembers nothing. Two points equal in all four fields are
 * printed once.
 */
export interface WatchedPoint {
  key: string;
  step: number;
  timestamp: string | number;
  value: number;
}

export class PrintedPoints {
  private readonly exact = new Set<string>();
  private readonly forgotten = new Map<string, { step: number; timestamp: number }>();

  constructor(private readonly maxExact = 500_000) {}

  /** True the first time a point is seen (print it); false for a replay of one already printed. */
  firstTime(p: WatchedPoint): boolean {
    // The key goes last: it may hold spaces, never NUL (the server's key rule). join() makes one
    // flat string; a template literal keeps a rope of parts (~2.7x the memory in a Set).
    const id = [p.step, p.timestamp, p.value, p.key].join("\u0000");
    if (this.exact.has(id)) return false;
    const mark = this.forgotten.get(p.key);
    if (mark && p.step <= mark.step && epochMs(p.timestamp) <= mark.timestamp) return false;
    this.exact.add(id);
    if (this.exact.size > this.maxExact) this.forgetOldest();
    return true;
  }

  /** Points remembered exactly (for tests and the memory bound). */
  get size(): number {
    return this.exact.size;
  }

  private forgetOldest(): void {
    // A Set iterates in insertion order: the first entry is the oldest printed point.
    const oldest = this.exact.values().next().value as string;
    this.exact.delete(oldest);
    const a = oldest.indexOf("\u0000");
    const b = oldest.indexOf("\u0000", a + 1);
    const c = oldest.indexOf("\u0000", b + 1);
    const step = Number(oldest.slice(0, a));
    const timestamp = epochMs(oldest.slice(a + 1, b));
    const key = oldest.slice(c + 1);
    const mark = this.forgotten.get(key);
    // An unparseable timestamp (NaN) makes the watermark match nothing: never hide a point on it.
    this.forgotten.set(key, { step: Math.max(mark?.step ?? step, step), timestamp: Math.max(mark?.timestamp ?? timestamp, timestamp) });
  }
}

function epochMs(timestamp: string | number): number {
  return typeof timestamp === "number" ? timestamp : /^\d+$/.test(timestamp) ? Number(timestamp) : Date.parse(timestamp);
}
