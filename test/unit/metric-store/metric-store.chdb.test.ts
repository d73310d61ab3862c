/**
 * Integration tests against the real in-process ClickHouse engine (chdb). chdb binds one data
 * directory per process, so every chdb test of the metric store lives in this file and shares
 * one directory, closed in afterAll.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { ClickHouseClient } from "@clickhouse/client";
import { DomainError } from "../../../src/services/errors.js";
import {
  createClickHouseConnection,
  metricStoreMigrations,
  migrationsTableStatement,
  openMetricStore,
  type MetricQueryEvent,
  type MetricStore,
} from "../../../src/stores/metric-store/index.js";
import { applyMetricMigrations, knowsMergeTreeSetting, type MetricMigration } from "../../../src/stores/metric-store/metric-migrations.js";

let dataDir: string;
let store: MetricStore;
const events: MetricQueryEvent[] = [];
const firstOpen: MetricQueryEvent[] = [];
const reopen: MetricQueryEvent[] = [];
/** True while the store of the tests is being opened (its queries go to `reopen`). */
let opening = true;

/** Counts the statements of each kind that `fn` sends. */
async function counting<T>(fn: () => Promise<T>): Promise<{ result: T; queries: number; inserts: number }> {
  const start = events.length;
  const result = await fn();
  const sent = events.slice(start);
  return { result, queries: sent.length, inserts: sent.filter((e) => e.kind === "insert").length };
}

/** Logs `loss` at `steps` (value from the step) in calls of 10,000 points. */
async function logLossAt(runId: string, steps: number[], valueAt: (step: number) => number): Promise<void> {
  for (let offset = 0; offset < steps.length; offset += 10_000) {
    const part = steps.slice(offset, offset + 10_000);
    await store.logColumns(runId, { keys: Array(part.length).fill("loss"), steps: part, values: part.map(valueAt), timestamps: part.map((s) => 1_700_000_000_000 + s) });
  }
}

/** A run whose keyed batch a store of schema version 2 stored, crashing before it recorded the key. */
const UPGRADED_RUN = "stored-before-upgrade";
const UPGRADED_POINTS = [
  { key: "loss", step: 0, value: 1 },
  { key: "loss", step: 1, value: 0.5 },
];

/**
 * Leaves `dir` as a store of schema version 2 left it: migrations 1 and 2 applied, and one keyed
 * batch whose points were committed while its record in metric_batches (written by a view, in a
 * second part) was lost to a crash, the window version 2 had.
 */
async function seedVersion2Store(dir: string): Promise<void> {
  const { client, close } = createClickHouseConnection({ dataDir: dir });
  await client.command({ query: migrationsTableStatement() });
  for (const migration of metricStoreMigrations().filter((m) => m.version <= 2)) {
    for (const query of migration.statements) await client.command({ query });
    await client.insert({ table: "schema_migrations", values: [{ version: migration.version, name: migration.name }], format: "JSONEachRow" });
  }
  await client.insert({
    table: "metrics",
    values: UPGRADED_POINTS.map((p) => ({ run_id: UPGRADED_RUN, key: p.key, step: p.step, ts: 0, value: p.value, batch_id: "batch-1" })),
    format: "JSONEachRow",
  });
  await client.command({ query: "TRUNCATE TABLE metric_batches" });
  // Points tied on (step, timestamp), stored before migration 4: its backfill must give the
  // largest of them as the last value.
  await client.insert({
    table: "metrics",
    values: [4, 9, 2].map((value) => ({ run_id: TIED_BEFORE_UPGRADE, key: "loss", step: 3, ts: 5000, value, batch_id: "" })),
    format: "JSONEachRow",
  });
  await close();
}

const TIED_BEFORE_UPGRADE = "tied-before-upgrade";

/** Runs whose last INSERT was cut short between its raw part and its views' parts (a kill -9). */
const INTERRUPTED_RUN = "interrupted-insert";
const HALF_RUN = "interrupted-second-batch";

/**
 * Leaves `dir` as a server killed mid-INSERT left it: raw points stored, the views' parts
 * (summary, rollup) not, and the runs still in the insert journal. The views are detached while
 * the raw rows go in, which stores exactly what the crash window stores.
 */
async function seedInterruptedInsert(dir: string): Promise<void> {
  const { client, close } = createClickHouseConnection({ dataDir: dir });
  const row = (run_id: string, key: string, step: number, value: number) => ({ run_id, key, step, ts: 1_700_000_000_000 + step, value, batch_id: "crashed-batch" });
  // An earlier batch of HALF_RUN was stored whole.
  await client.insert({ table: "metrics", values: [{ ...row(HALF_RUN, "loss", 0, 5), batch_id: "" }], format: "JSONEachRow" });
  await client.command({ query: "DETACH TABLE metric_summaries_mv" });
  await client.command({ query: "DETACH TABLE metric_rollup_mv" });
  await client.insert({
    table: "metrics",
    values: [row(INTERRUPTED_RUN, "loss", 0, 3), row(INTERRUPTED_RUN, "loss", 1, 2), row(INTERRUPTED_RUN, "loss", 2, 1), row(HALF_RUN, "loss", 1, 9), row(HALF_RUN, "acc", 1, 0.5)],
    format: "JSONEachRow",
  });
  await client.command({ query: "ATTACH TABLE metric_summaries_mv" });
  await client.command({ query: "ATTACH TABLE metric_rollup_mv" });
  fs.writeFileSync(path.join(dir, "clickhouse-insert-journal.json"), JSON.stringify([INTERRUPTED_RUN, HALF_RUN]));
  await close();
}

const repairs: { runs: number; reason: string }[] = [];

beforeAll(async () => {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-metric-store-"));
  await seedVersion2Store(dataDir);
  const first = await openMetricStore({ dataDir, onQuery: (e) => firstOpen.push(e) });
  await first.close();
  await seedInterruptedInsert(dataDir);
  store = await openMetricStore({
    onRepair: (e) => repairs.push(e),
    dataDir,
    groupCommit: { windowMs: 5, maxRows: 100_000 },
    onQuery: (e) => (opening ? reopen : events).push(e),
  });
  opening = false;
});

afterAll(async () => {
  await store?.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

describe("migrations", () => {
  it("apply once, only those not yet recorded, and are skipped on reopen", async () => {
    // The directory held a version-2 store: opening it ran migrations 3 onwards and nothing before them.
    const ddl = firstOpen.filter(
      (e) => !/^(CREATE TABLE IF NOT EXISTS schema_migrations|SELECT DISTINCT version|INSERT INTO schema_migrations|SELECT count\(\) > 0 AS known FROM system.merge_tree_settings)/.test(e.sql),
    );
    expect(ddl.map((e) => e.sql)).toEqual(metricStoreMigrations().filter((m) => m.version >= 3).flatMap((m) => m.statements));
    expect(fs.existsSync(path.join(dataDir, "clickhouse"))).toBe(true);
    // The reopen ran the migrations-table DDL (IF NOT EXISTS) and the version lookup, and no
    // migration (it also repaired the journaled runs, seeded by seedInterruptedInsert).
    const reopened = reopen.map((e) => e.sql);
    expect(reopened.slice(0, 2)).toEqual([migrationsTableStatement(), "SELECT DISTINCT version FROM schema_migrations"]);
    const migrationStatements = new Set(metricStoreMigrations().flatMap((m) => m.statements));
    expect(reopened.filter((sql) => migrationStatements.has(sql) || sql.startsWith("INSERT INTO schema_migrations"))).toEqual([]);
    expect(reopened.some((sql) => sql.startsWith("INSERT INTO metric_summaries"))).toBe(true);
  });

  it("version 3: a batch stored before the upgrade is found by its key in the raw points, even with its old record lost", async () => {
    expect(await store.logPoints(UPGRADED_RUN, UPGRADED_POINTS, "batch-1")).toEqual({ stored: 0, deduplicated: true });
    expect((await store.summaries([{ runId: UPGRADED_RUN, key: "loss" }])).get(UPGRADED_RUN)?.get("loss")?.count).toBe(2);
    // Only the summary and rollup views write on an insert now: one part for the raw points
    // (holding the batch keys), one each for the aggregates.
    // (The store's own client: chdb serves one data directory per process.)
    const { client } = store as unknown as { client: ClickHouseClient };
    const rs = await client.query({ query: "SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name", format: "JSONEachRow" });
    expect((await rs.json<{ name: string }>()).map((t) => t.name)).toEqual(["metric_rollup", "metric_rollup_mv", "metric_summaries", "metric_summaries_mv", "metrics", "schema_migrations"]);
  });
});

describe("migration 5", () => {
  it("leaves last_value out of the summary view; summaries keep their last value and point", async () => {
    const { client } = store as unknown as { client: ClickHouseClient };
    const rs = await client.query({ query: "SELECT as_select FROM system.tables WHERE database = currentDatabase() AND name = 'metric_summaries_mv'", format: "JSONEachRow" });
    const [view] = await rs.json<{ as_select: string }>();
    expect(view.as_select).toContain("latest_value");
    expect(view.as_select).not.toContain("last_value");
    await store.logPoints("after-migration-5", [
      { key: "loss", step: 2, value: 0.2, timestamp: 10 },
      { key: "loss", step: 2, value: 0.7, timestamp: 10 },
      { key: "loss", step: 1, value: 9, timestamp: 20 },
    ]);
    expect((await store.summaries([{ runId: "after-migration-5", key: "loss" }])).get("after-migration-5")?.get("loss")).toMatchObject({
      last: 0.7,
      lastStep: 2,
      count: 3,
      min: 0.2,
      max: 9,
    });
  });
});

describe("INSERT settings", () => {
  it("the group commit's INSERT feeds the two views in parallel", async () => {
    // chdb applies a query's settings with SET, so the session shows what the last INSERT sent.
    await store.logPoints("parallel-views", [{ key: "loss", step: 1, value: 1 }]);
    const { client } = store as unknown as { client: ClickHouseClient };
    const rs = await client.query({ query: "SELECT value FROM system.settings WHERE name = 'parallel_view_processing'", format: "JSONEachRow" });
    expect((await rs.json<{ value: string }>())[0].value).toBe("1");
    expect((await store.summaries([{ runId: "parallel-views", key: "loss" }])).get("parallel-views")?.get("loss")).toMatchObject({ count: 1, last: 1 });
  });
});

describe("migration 6", () => {
  it("sets merge_selector_base 20 on the three tables", async () => {
    const { client } = store as unknown as { client: ClickHouseClient };
    const rs = await client.query({
      query: "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() AND name IN ('metrics', 'metric_summaries', 'metric_rollup') ORDER BY name",
      format: "JSONEachRow",
    });
    const tables = await rs.json<{ name: string; engine_full: string }>();
    expect(tables.map((t) => t.name)).toEqual(["metric_rollup", "metric_summaries", "metrics"]);
    for (const t of tables) expect(t.engine_full).toContain("merge_selector_base = 20");
  });

  it("a migration needing a MergeTree setting the server lacks is skipped and not recorded, then applied once the setting is known", async () => {
    const { client } = store as unknown as { client: ClickHouseClient };
    expect(await knowsMergeTreeSetting(client, "merge_selector_base")).toBe(true);
    expect(await knowsMergeTreeSetting(client, "no_such_merge_setting")).toBe(false);
    const statements: string[] = [];
    const probe = (setting: string): MetricMigration => ({
      version: 990,
      name: "test: needs a setting",
      requiresMergeTreeSetting: setting,
      statements: ["ALTER TABLE metric_rollup MODIFY SETTING merge_selector_base = 21"],
    });
    try {
      expect(await applyMetricMigrations(client, {}, (sql) => statements.push(sql), [probe("no_such_merge_setting")])).toEqual([]);
      expect(statements.some((s) => s.startsWith("ALTER"))).toBe(false);
      expect(await applyMetricMigrations(client, {}, (sql) => statements.push(sql), [probe("merge_selector_base")])).toEqual([990]);
      const rs = await client.query({ query: "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'metric_rollup'", format: "JSONEachRow" });
      expect((await rs.json<{ engine_full: string }>())[0].engine_full).toContain("merge_selector_base = 21");
      // Recorded now: not applied again.
      expect(await applyMetricMigrations(client, {}, () => {}, [probe("merge_selector_base")])).toEqual([]);
    } finally {
      await client.command({ query: "ALTER TABLE metric_rollup MODIFY SETTING merge_selector_base = 20" });
      await client.command({ query: "DELETE FROM schema_migrations WHERE version = 990" });
    }
  });
});

describe("migration 4", () => {
  it("gives series stored before it the largest of the values tied on the last (step, timestamp), and keeps their counts", async () => {
    expect((await store.summaries([{ runId: TIED_BEFORE_UPGRADE, key: "loss" }])).get(TIED_BEFORE_UPGRADE)?.get("loss")).toMatchObject({ last: 9, count: 3, lastStep: 3 });
    expect((await store.summaries([{ runId: UPGRADED_RUN, key: "loss" }])).get(UPGRADED_RUN)?.get("loss")).toMatchObject({ last: 0.5, count: 2 });
  });
});

describe("an INSERT cut short by a crash", () => {
  it("has its runs' summaries and rollups re-derived from the raw points at the next open, and its retry stored once", async () => {
    expect(repairs).toEqual([{ runs: 2, reason: "interrupted insert" }]);
    expect(fs.readFileSync(path.join(dataDir, "clickhouse-insert-journal.json"), "utf8")).toBe("");
    const summaries = await store.summaries([
      { runId: INTERRUPTED_RUN, key: "loss" },
      { runId: HALF_RUN, key: "loss" },
      { runId: HALF_RUN, key: "acc" },
    ]);
    // Without the repair the first run had no summary at all and the second only its first batch.
    expect(summaries.get(INTERRUPTED_RUN)?.get("loss")).toMatchObject({ count: 3, min: 1, max: 3, last: 1, lastStep: 2 });
    expect(summaries.get(HALF_RUN)?.get("loss")).toMatchObject({ count: 2, min: 5, max: 9, last: 9, lastStep: 1 });
    expect(summaries.get(HALF_RUN)?.get("acc")).toMatchObject({ count: 1, last: 0.5 });
    const { client } = store as unknown as { client: ClickHouseClient };
    const rollup = await client.query({ query: "SELECT count() AS n FROM metric_rollup WHERE run_id = {r:String}", query_params: { r: INTERRUPTED_RUN }, format: "JSONEachRow" });
    expect((await rollup.json<{ n: number }>())[0].n).toBe(1);
    // The client's retry of the cut-short batch is found by its key and leaves the counts alone.
    expect(await store.logPoints(INTERRUPTED_RUN, [{ key: "loss", step: 0, value: 3 }], "crashed-batch")).toEqual({ stored: 0, deduplicated: true });
    expect((await store.summaries([{ runId: INTERRUPTED_RUN, key: "loss" }])).get(INTERRUPTED_RUN)?.get("loss")?.count).toBe(3);
  });
});

describe("writes", () => {
  it("group-commits concurrent calls into one INSERT and answers each caller after its rows are readable", async () => {
    const runs = Array.from({ length: 40 }, (_, i) => `gc-run-${i}`);
    const { result, inserts } = await counting(() =>
      Promise.all(
        runs.map(async (runId, i) => {
          const res = await store.logPoints(runId, [
            { key: "loss", step: 0, value: i },
            { key: "loss", step: 1, value: i + 0.5 },
            { key: "acc", step: 1, value: 0.25 },
          ]);
          // read immediately after this caller's own promise resolved
          const pts = await store.pointsFrom(runId, undefined, 0);
          return { res, readable: pts.length };
        }),
      ),
    );
    expect(result.every((r) => r.res.stored === 3 && !r.res.deduplicated && r.readable === 3)).toBe(true);
    expect(inserts).toBe(1);
  });

  it("splits a group at maxRows without splitting a caller's batch", async () => {
    const batch = (runId: string) =>
      store.logColumns(runId, { keys: Array(10_000).fill("x"), steps: Array.from({ length: 10_000 }, (_, i) => i), values: Array(10_000).fill(1) });
    const { inserts } = await counting(() => Promise.all(Array.from({ length: 25 }, (_, i) => batch(`split-${i}`))));
    expect(inserts).toBe(3); // 10 + 10 + 5 batches of 10,000 rows
  });

  it("rejects invalid points naming index and field, without any query", async () => {
    const { queries } = await counting(async () => {
      await expect(store.logPoints("bad-run", [{ key: "ok", step: 0, value: 1 }, { key: "ok", step: 1, value: Number.NaN }])).rejects.toMatchObject({
        code: "BAD_USER_INPUT",
        field: "points[1].value",
        message: "points[1].value: must be a finite number",
      });
      await expect(store.logPoints("", [])).rejects.toBeInstanceOf(DomainError);
    });
    expect(queries).toBe(0);
  });

  it("stores a batch retried with the same idempotency key once, per run", async () => {
    const points = [
      { key: "loss", step: 1, value: 3 },
      { key: "loss", step: 2, value: 2 },
    ];
    const first = await store.logPoints("idem-run", points, "batch-1");
    expect(first).toEqual({ stored: 2, deduplicated: false });
    // the client never saw the answer and retries, sequentially and concurrently
    expect(await store.logPoints("idem-run", points, "batch-1")).toEqual({ stored: 0, deduplicated: true });
    const concurrent = await Promise.all([
      store.logPoints("idem-run", points, "batch-2"),
      store.logPoints("idem-run", points, "batch-2"),
      store.logPoints("idem-run", points, "batch-2"),
    ]);
    expect(concurrent.filter((r) => r.stored === 2)).toHaveLength(1);
    // the same key on another run is another batch
    expect(await store.logPoints("idem-run-2", points, "batch-1")).toEqual({ stored: 2, deduplicated: false });
    const summaries = await store.summaries([
      { runId: "idem-run", key: "loss" },
      { runId: "idem-run-2", key: "loss" },
    ]);
    expect(summaries.get("idem-run")?.get("loss")?.count).toBe(4);
    expect(summaries.get("idem-run-2")?.get("loss")?.count).toBe(2);
  });

  it("stores the callers of one group in one part, ids with quotes, backslashes and non-ASCII intact", async () => {
    const { client } = store as unknown as { client: ClickHouseClient };
    const runs = Array.from({ length: 30 }, (_, i) => `grp-${i}-'q'\\é\n\t\\x41\\u0041"`);
    const key = "key 'it\\s' — ü\r\n\\0 \\n";
    // 30 callers in one 5 ms window: one INSERT, so one part of raw points (merges stopped, so
    // that a merge cannot make two parts look like one).
    await client.command({ query: "SYSTEM STOP MERGES metrics" });
    const results = await Promise.all(
      runs.map((run, i) => store.logColumns(run, { keys: ["loss", "acc"], steps: [i, i], values: [i + 0.25, 1e-300], timestamps: [1_700_000_000_123, 0] }, key)),
    ).finally(() => client.command({ query: "SYSTEM START MERGES metrics" }));
    expect(results.every((r) => r.stored === 2)).toBe(true);
    const rs = await client.query({
      query: "SELECT run_id, batch_id, key, step, toUnixTimestamp64Milli(ts) AS ms, value, _part AS part FROM metrics WHERE run_id IN {runs:Array(String)} ORDER BY run_id, key",
      query_params: { runs },
      format: "JSONEachRow",
    });
    const rows = await rs.json<{ run_id: string; batch_id: string; key: string; step: number; ms: number; value: number; part: string }>();
    expect(rows).toHaveLength(60);
    expect(new Set(rows.map((r) => r.part)).size).toBe(1);
    expect(new Set(rows.map((r) => r.batch_id))).toEqual(new Set([key]));
    const third = rows.filter((r) => r.run_id === runs[3]);
    expect(third).toEqual([
      expect.objectContaining({ key: "acc", step: 3, ms: 0, value: 1e-300 }),
      expect.objectContaining({ key: "loss", step: 3, ms: 1_700_000_000_123, value: 3.25 }),
    ]);
    // The key is found again for a retry.
    expect(await store.logColumns(runs[3], { keys: ["loss"], steps: [3], values: [3.25] }, key)).toEqual({ stored: 0, deduplicated: true });
  });
});

describe("reads", () => {
  it("summaries: min, max, count and last by step even when steps arrive out of order", async () => {
    await store.logPoints("order-run", [
      { key: "loss", step: 5, value: 0.5, timestamp: 1_000 },
      { key: "loss", step: 9, value: 0.9, timestamp: 500 },
    ]);
    await store.logPoints("order-run", [
      { key: "loss", step: 2, value: 7, timestamp: 9_000 },
      { key: "loss", step: 9, value: 0.3, timestamp: 600 }, // same step, later timestamp wins
      { key: "loss", step: 1, value: -2, timestamp: 10_000 },
    ]);
    const s = (await store.summaries([{ runId: "order-run", key: "loss" }])).get("order-run")?.get("loss");
    expect(s).toEqual({ min: -2, max: 7, last: 0.3, lastStep: 9, lastTimestamp: 600, count: 5 });
    const absent = await store.summaries([{ runId: "order-run", key: "nope" }]);
    expect(absent.size).toBe(0);
  });

  it("summaries: of points tied on the last (step, timestamp), the largest value is the last, as in MLflow, whatever the order they came in", async () => {
    // logMetrics stamps a call's points with one `now` and step defaults to 0: a key logged twice
    // in one call ties. The last used to be whichever state ClickHouse kept first.
    for (const values of [[1, 3, 2], [0, 2.5]]) {
      await store.logPoints("tie-run", values.map((value) => ({ key: "loss", step: 0, value, timestamp: 1_000 })));
    }
    expect((await store.summaries([{ runId: "tie-run", key: "loss" }])).get("tie-run")?.get("loss")).toEqual({ min: 0, max: 3, last: 3, lastStep: 0, lastTimestamp: 1_000, count: 5 });
    // Run search's metric terms read the same last value.
    expect(await store.runIdsMatching(["tie-run"], "loss", "=", 3)).toEqual(["tie-run"]);
    expect((await store.lastValues(["tie-run"], "loss")).get("tie-run")).toBe(3);
  });

  it("summaries of 100 runs x 10 keys take one query", async () => {
    const runIds = Array.from({ length: 100 }, (_, r) => `wide-${r}`);
    const keys = Array.from({ length: 10 }, (_, k) => `metric_${k}`);
    await Promise.all(
      runIds.map((runId, r) =>
        store.logPoints(
          runId,
          keys.flatMap((key, k) => [0, 1, 2].map((step) => ({ key, step, value: r * 100 + k * 10 + step }))),
        ),
      ),
    );
    const pairs = runIds.flatMap((runId) => keys.map((key) => ({ runId, key })));
    const { result, queries } = await counting(() => store.summaries(pairs));
    expect(queries).toBe(1);
    expect(result.size).toBe(100);
    expect(result.get("wide-42")?.get("metric_7")).toMatchObject({ min: 4270, max: 4272, last: 4272, lastStep: 2, count: 3 });

    const { result: keysByRun, queries: keyQueries } = await counting(() => store.metricKeys([...runIds, "no-such-run"]));
    expect(keyQueries).toBe(1);
    expect(keysByRun.get("wide-3")).toEqual(keys);
    expect(keysByRun.get("no-such-run")).toEqual([]);
  });

  it("filters and orders runs by last value", async () => {
    const runIds = ["wide-1", "wide-2", "wide-3"];
    // last of metric_0 for run r is r*100 + 2
    expect((await store.runIdsMatching(runIds, "metric_0", ">", 202)).sort()).toEqual(["wide-3"]);
    expect((await store.runIdsMatching(runIds, "metric_0", ">=", 202)).sort()).toEqual(["wide-2", "wide-3"]);
    expect((await store.runIdsMatching(runIds, "metric_0", "=", 102)).sort()).toEqual(["wide-1"]);
    expect((await store.runIdsMatching(runIds, "metric_0", "!=", 102)).sort()).toEqual(["wide-2", "wide-3"]);
    expect((await store.runIdsMatching(undefined, "metric_0", "<", 100)).sort()).toEqual(["wide-0"]);
    expect(await store.runIdsMatching([], "metric_0", "<", 100)).toEqual([]);
    await expect(store.runIdsMatching(runIds, "metric_0", "LIKE" as never, 1)).rejects.toMatchObject({ code: "BAD_USER_INPUT" });
    const last = await store.lastValues([...runIds, "no-such-run"], "metric_0");
    expect([...last.entries()].sort()).toEqual([
      ["wide-1", 102],
      ["wide-2", 202],
      ["wide-3", 302],
    ]);
    // Unscoped reads can be capped (run search asks for one more than it allows).
    expect(await store.runIdsMatching(undefined, "metric_0", ">", 0, 2)).toHaveLength(2);
    expect((await store.lastValues(undefined, "metric_0", 2)).size).toBe(2);
    expect((await store.lastValues(undefined, "metric_0")).size).toBeGreaterThanOrEqual(4);
  });

  it("pointsFrom replays raw points ordered by step", async () => {
    const pts = await store.pointsFrom("order-run", ["loss"], 2);
    expect(pts.map((p) => [p.step, p.value])).toEqual([
      [2, 7],
      [5, 0.5],
      [9, 0.9],
      [9, 0.3],
    ]);
    expect((await store.pointsFrom("gc-run-3", undefined, 1)).map((p) => p.key)).toEqual(["acc", "loss"]);
    expect(await store.pointsFrom("order-run", ["loss"], 0, 2)).toHaveLength(2);
  });

  it("pointsFrom pages after a point, so a step holding more points than a page is read page by page", async () => {
    // 25 points, all at step 0 (a metric logged without steps): pages of 10 via the keyset.
    await store.logColumns("crowded-step", {
      keys: Array(25).fill("gpu"),
      steps: Array(25).fill(0),
      values: Array.from({ length: 25 }, (_, i) => i % 5),
      timestamps: Array.from({ length: 25 }, (_, i) => 1_700_000_000_000 + Math.floor(i / 5)),
    });
    const pages: number[] = [];
    const seen: string[] = [];
    let after;
    for (;;) {
      const page = await store.pointsFrom("crowded-step", undefined, 0, 10, after);
      pages.push(page.length);
      seen.push(...page.map((p) => `${p.timestamp}:${p.value}`));
      if (page.length < 10) break;
      after = page[page.length - 1];
    }
    expect(pages).toEqual([10, 10, 5]);
    expect(new Set(seen).size).toBe(25);
  });

  it("history returns short series whole with timestamps, and ranges honour min/max step", async () => {
    const { result, queries } = await counting(() =>
      store.history([
        { runId: "order-run", key: "loss", maxPoints: 100 },
        { runId: "order-run", key: "loss", minStep: 2, maxStep: 5, maxPoints: 100 },
        { runId: "no-such-run", key: "loss", maxPoints: 10 },
      ]),
    );
    // one count lookup (whole series: metric_summaries) and one read for all three
    expect(queries).toBe(2);
    expect(result[0].map((p) => p.step)).toEqual([1, 2, 5, 9, 9]);
    expect(result[0][0]).toEqual({ step: 1, value: -2, timestamp: 10_000 });
    expect(result[1].map((p) => p.step)).toEqual([2, 5]);
    expect(result[2]).toEqual([]);
  });

  it("downsamples a 1,000,000-point series to 1,000 points in ClickHouse, keeping first and last", async () => {
    const total = 1_000_000;
    const perCall = 10_000;
    const calls: Promise<unknown>[] = [];
    for (let offset = 0; offset < total; offset += perCall) {
      const steps = Array.from({ length: perCall }, (_, i) => offset + i);
      calls.push(
        store.logColumns("big-run", {
          keys: Array(perCall).fill("loss"),
          steps,
          values: steps.map((s) => Math.sin(s / 1000) + s / total),
          timestamps: steps.map((s) => 1_700_000_000_000 + s),
        }),
      );
    }
    await Promise.all(calls);
    const summary = (await store.summaries([{ runId: "big-run", key: "loss" }])).get("big-run")?.get("loss");
    expect(summary?.count).toBe(total);
    expect(summary?.lastStep).toBe(total - 1);

    const [series, ranged] = await store.history([
      { runId: "big-run", key: "loss", maxPoints: 1_000 },
      { runId: "big-run", key: "loss", minStep: 500_000, maxStep: 599_999, maxPoints: 200 },
    ]);
    expect(series).toHaveLength(1_000);
    expect(series[0]).toEqual({ step: 0, value: 0, timestamp: 1_700_000_000_000 });
    expect(series[999]).toEqual({ step: total - 1, value: Math.sin((total - 1) / 1000) + (total - 1) / total, timestamp: 1_700_000_000_000 + total - 1 });
    for (let i = 1; i < series.length; i++) expect(series[i].step).toBeGreaterThan(series[i - 1].step);
    expect(ranged).toHaveLength(200);
    expect(ranged[0].step).toBe(500_000);
    expect(ranged[199].step).toBe(599_999);

    // A spike logged later (same step, another value) shows up in the rollup and is kept.
    await store.logPoints("big-run", [{ key: "loss", step: 123_457, value: 50, timestamp: 1 }]);
    // Ranges that do not start or end on a rollup bucket boundary (partial buckets come from raw points).
    const [spiked, wide, ragged] = await store.history([
      { runId: "big-run", key: "loss", maxPoints: 1_000 },
      { runId: "big-run", key: "loss", minStep: 1_001, maxStep: 998_765, maxPoints: 500 },
      { runId: "big-run", key: "loss", minStep: 100_003, maxStep: 900_000, maxPoints: 1_000 },
    ]);
    expect(spiked.length).toBeLessThanOrEqual(1_000);
    expect(spiked.some((p) => p.step === 123_457 && p.value === 50 && p.timestamp === 1)).toBe(true);
    expect(spiked[0].step).toBe(0);
    expect(spiked[spiked.length - 1].step).toBe(total - 1);
    for (const [series, lo, hi, n] of [
      [wide, 1_001, 998_765, 500],
      [ragged, 100_003, 900_000, 1_000],
    ] as const) {
      expect(series.length).toBeGreaterThan(n / 2);
      expect(series.length).toBeLessThanOrEqual(n);
      expect(series[0]).toEqual({ step: lo, value: Math.sin(lo / 1000) + lo / total, timestamp: 1_700_000_000_000 + lo });
      expect(series[series.length - 1]).toEqual({ step: hi, value: Math.sin(hi / 1000) + hi / total, timestamp: 1_700_000_000_000 + hi });
      for (let i = 1; i < series.length; i++) expect(series[i].step).toBeGreaterThan(series[i - 1].step);
      expect(series.every((p) => p.step >= lo && p.step <= hi)).toBe(true);
    }
    expect(wide.some((p) => p.value === 50)).toBe(true);
  });

  it("downsamples a step range of a short sparse series exactly from raw points, like the whole series", async () => {
    // 100,000 points every 10 steps across 1M steps: wide in steps, short in points (< 256 x 1,000).
    await logLossAt("sparse-run", Array.from({ length: 100_000 }, (_, i) => i * 10), (s) => Math.cos(s / 7_000));
    const start = events.length;
    const [ranged] = await store.history([{ runId: "sparse-run", key: "loss", minStep: 10, maxStep: 999_990, maxPoints: 1_000 }]);
    const sent = events.slice(start).map((e) => e.sql);
    expect(sent).toHaveLength(2);
    // One count (from the summaries), then LTTB over the raw points: never the rollup.
    expect(sent[0]).toContain("metric_summaries");
    expect(sent[1]).toContain("largestTriangleThreeBuckets");
    expect(sent[1]).not.toContain("metric_rollup");
    expect(ranged).toHaveLength(1_000);
    expect(ranged[0].step).toBe(10);
    expect(ranged[999].step).toBe(999_990);
  });

  it("downsamples a long series with points 1024+ steps apart in ClickHouse, not from 4 rollup candidates per point", async () => {
    // 100,001 points 2,048 steps apart (step = tokens seen): each point alone in its rollup bucket,
    // so the rollup would bring 400,004 candidates (all points, four times) into the server.
    await logLossAt("tokens-run", Array.from({ length: 100_001 }, (_, i) => i * 2_048), (s) => 1 / (1 + s / 1e7));
    const start = events.length;
    const [series] = await store.history([{ runId: "tokens-run", key: "loss", maxPoints: 100 }]);
    const sent = events.slice(start).map((e) => e.sql);
    // The count, the rollup read (stopped at its cap), then LTTB over the raw points in ClickHouse.
    expect(sent).toHaveLength(3);
    expect(sent[1]).toContain("metric_rollup");
    expect(sent[2]).toContain("largestTriangleThreeBuckets");
    expect(sent[2]).not.toContain("metric_rollup");
    expect(series).toHaveLength(100);
    expect(series[0]).toMatchObject({ step: 0, value: 1 });
    expect(series[99].step).toBe(100_000 * 2_048);
  });

  it("round-trips float values exactly", async () => {
    const values = [Math.PI, 1e-300, -1.7976931348623157e308, 0.1 + 0.2, 5e-324, 123456789.123456789];
    await store.logPoints("float-run", values.map((value, step) => ({ key: "v", step, value })));
    const [series] = await store.history([{ runId: "float-run", key: "v", maxPoints: 100 }]);
    expect(series.map((p) => p.value)).toEqual(values);
  });
});
