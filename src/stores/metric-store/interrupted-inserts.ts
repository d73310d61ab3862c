import fs from "node:fs";
import path from "node:path";
import type { ClickHouseClient, ClickHouseSettings } from "@clickhouse/client";
import { ROLLUP_SELECT, SUMMARY_COLUMNS, SUMMARY_SELECT } from "./metric-migrations.js";

/**
 * ClickHouse stores an INSERT as one part of the raw table and then one part per materialized
 * view, and these are not one transaction: a process killed between them (or an INSERT that fails
 * in a view) leaves raw points without their rows in `metric_summaries` and `metric_rollup`. The
 * idempotency lookup reads the raw points, so the client's retry is answered "already stored" and
 * the summary (count, min, max, last) would stay short for good.
 *
 * So the writer records, before each INSERT, which runs it writes to (a small file, rewritten per
 * group), and clears the record once the INSERT returned. Runs still recorded at the next start
 * (a crash) or after a failed INSERT have their derived rows repaired from the raw points.
 */
export class InsertJournal {
  /** Runs whose derived rows may be short: recorded before a crash, or a repair that failed. */
  private unrepaired = new Set<string>();

  /** Runs left to the next start: their INSERT's end could not be confirmed (it may still run). */
  private untilRestart = new Set<string>();

  /**
   * `file` null: no journal (tests, read-only tools). A failure to write the file is reported to
   * `onError` and does not stop writes (a crash meanwhile may leave summaries short, as before).
   */
  constructor(
    private readonly file: string | null,
    private readonly onError: (err: unknown) => void = () => {},
  ) {}

  /** Runs recorded by a process that did not get to clear them (read once, at open). */
  recorded(): string[] {
    if (!this.file) return [];
    let text: string;
    try {
      text = fs.readFileSync(this.file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") this.onError(err);
      return [];
    }
    try {
      const runs = JSON.parse(text || "[]") as unknown;
      return Array.isArray(runs) ? runs.filter((r): r is string => typeof r === "string") : [];
    } catch {
      return []; // a half-written record, from before its INSERT started
    }
  }

  /** Before an INSERT: these runs (and any still unrepaired) may end up with raw rows only. */
  begin(runIds: Iterable<string>): void {
    this.write([...new Set([...this.unrepaired, ...this.untilRestart, ...runIds])]);
  }

  /** The INSERT returned, or its runs were repaired: only runs still owed a repair stay recorded. */
  end(): void {
    this.write([...new Set([...this.unrepaired, ...this.untilRestart])]);
  }

  /** Recorded for the next start only: this process must not repair them (their INSERT may still run). */
  keepUntilRestart(runIds: Iterable<string>): void {
    for (const r of runIds) this.untilRestart.add(r);
  }

  /** A repair failed: keep these runs recorded (and repair them at the next start). */
  keep(runIds: Iterable<string>): void {
    for (const r of runIds) this.unrepaired.add(r);
  }

  /** Runs whose repair failed earlier, to retry. */
  get pending(): string[] {
    return [...this.unrepaired];
  }

  /** These runs were repaired. */
  repaired(runIds: Iterable<string>): void {
    for (const r of runIds) this.unrepaired.delete(r);
  }

  private write(runIds: string[]): void {
    if (!this.file) return;
    try {
      fs.mkdirSync(path.dirname(this.file), { recursive: true });
      // Not fsync'd: this guards against the process dying, like the engine's own unsynced parts.
      fs.writeFileSync(this.file, runIds.length ? JSON.stringify(runIds) : "");
    } catch (err) {
      this.onError(err);
    }
  }
}

/**
 * Per (run, key) of these runs: the raw points' aggregates, with the count the summary lacks. Min,
 * max and last are idempotent states, so inserting them again changes nothing; only the count
 * is a sum, and it gets exactly the difference. Rows already complete are left alone.
 */
const REPAIR_SUMMARIES_SQL = `INSERT INTO metric_summaries (${SUMMARY_COLUMNS})
SELECT r.run_id, r.key, r.min_value, r.max_value, r.last_point, r.point_count - s.point_count, r.latest_value
FROM (
${SUMMARY_SELECT.replace("{from}", "metrics WHERE run_id IN {runs:Array(String)}")}
) AS r
LEFT JOIN (
    SELECT run_id, key, sum(point_count) AS point_count FROM metric_summaries WHERE run_id IN {runs:Array(String)} GROUP BY run_id, key
) AS s USING (run_id, key)
WHERE r.point_count > s.point_count`;

/** The rollup's states (argMin/argMax) are idempotent: re-deriving a run's rows from its raw points is safe. */
const REPAIR_ROLLUP_SQL =
  "INSERT INTO metric_rollup (run_id, key, bucket, first_point, last_point, low_point, high_point)\n" +
  ROLLUP_SELECT.replace("{from}", "metrics WHERE run_id IN {runs:Array(String)}");

/**
 * Brings the summary and rollup rows of these runs in line with their raw points. Run it while no
 * other INSERT for these runs is under way (at open, or between this process's groups): a
 * concurrent INSERT seen in the raw table but not yet in the summary would be counted twice. (On a
 * cluster the raw and summary reads may reach different replicas; a lagging one can make the
 * difference wrong. Not checked here: no cluster runs in tests.)
 */
export async function repairDerivedRows(
  client: ClickHouseClient,
  runIds: string[],
  onQuery: (sql: string) => void = () => {},
  settings: ClickHouseSettings = {},
): Promise<void> {
  if (runIds.length === 0) return;
  for (const query of [REPAIR_SUMMARIES_SQL, REPAIR_ROLLUP_SQL]) {
    onQuery(query);
    // `settings`: on a cluster, the INSERT settings (forwarded to the shards before it returns).
    await client.command({ query, query_params: { runs: runIds }, clickhouse_settings: settings });
  }
}
