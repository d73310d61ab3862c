/**
 * A container's log read more than once: a follow the API server dropped is reopened from the
 * second of the newest line forwarded, and the log is read once more after the container ended.
 * Every read asks for `timestamps=true`, so the lines a read repeats are recognized by their
 * timestamps and dropped; the rest are handed on without the timestamp.
 */

/** The kubelet's prefix: RFC3339Nano (trailing zeros of the fraction cut), then one space. */
const TIMESTAMP = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) /;

/** A timestamped line: nanoseconds since the epoch and the text after the prefix; null without a prefix. */
export function parseTimestamped(line: string): { ts: bigint; text: string } | null {
  const m = TIMESTAMP.exec(line);
  if (!m) return null;
  const ms = Date.parse(`${m[1]}${m[3]}`);
  if (Number.isNaN(ms)) return null;
  return { ts: BigInt(ms) * 1_000_000n + BigInt((m[2] ?? "").padEnd(9, "0")), text: line.slice(m[0].length) };
}

/**
 * `sinceTime` for a reread: the whole second `ts` falls in. The API server hands `sinceTime` on to
 * the kubelet in whole seconds, so a finer one would not be honoured anyway; the repeats are
 * dropped here.
 */
export function sinceTimeOf(ts: bigint): string {
  return new Date(Number(ts / 1_000_000_000n) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/**
 * Which lines of a read are new. Forwarded so far: every line up to the newest timestamp seen,
 * `atNewest` of them carrying that very timestamp (one write of several lines shares one). A
 * reread skips lines older than it and the first `atNewest` lines at it. What this can get
 * wrong: stdout and stderr lines are timestamped by two copiers, so a line older than the newest
 * forwarded that the runtime wrote *after* it (nanoseconds apart, at the moment of a drop) is
 * taken for one already forwarded.
 */
export class LogLineDedupe {
  private newest: bigint | null = null;
  private atNewest = 0;

  /** A filter for one read: the line's text when it is new, else null. Lines without a timestamp pass as they are. */
  read(): (line: string) => string | null {
    const threshold = this.newest;
    let skip = this.atNewest;
    return (line) => {
      const parsed = parseTimestamped(line);
      if (!parsed) return line;
      const { ts, text } = parsed;
      if (threshold !== null) {
        if (ts < threshold) return null;
        if (ts === threshold && skip > 0) {
          skip--;
          return null;
        }
      }
      if (this.newest === null || ts > this.newest) {
        this.newest = ts;
        this.atNewest = 1;
      } else if (ts === this.newest) {
        this.atNewest++;
      }
      return text;
    };
  }

  /** Where a reread starts; undefined before any line (from the beginning). */
  sinceTime(): string | undefined {
    return this.newest === null ? undefined : sinceTimeOf(this.newest);
  }
}
