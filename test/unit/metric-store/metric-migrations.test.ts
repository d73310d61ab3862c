import { DomainError } from "../../../src/services/errors.js";
import { mergeTreeSettingKnownQuery, metricStoreMigrations, migrationsTableStatement } from "../../../src/stores/metric-store/metric-migrations.js";

describe("metric store DDL", () => {
  it("numbers migrations from 1 without gaps", () => {
    const versions = metricStoreMigrations().map((m) => m.version);
    expect(versions).toEqual(versions.map((_, i) => i + 1));
  });

  it("single node: plain MergeTree family tables and views over them, no ON CLUSTER", () => {
    const sql = metricStoreMigrations().flatMap((m) => m.statements).join("\n");
    expect(sql).not.toContain("ON CLUSTER");
    expect(sql).not.toContain("Replicated");
    expect(sql).not.toContain("Distributed");
    expect(sql).toMatch(/CREATE TABLE IF NOT EXISTS metrics\n[\s\S]*ENGINE = MergeTree\nORDER BY \(run_id, key, step\)/);
    expect(sql).toMatch(/CREATE TABLE IF NOT EXISTS metric_summaries\n[\s\S]*ENGINE = AggregatingMergeTree\nORDER BY \(run_id, key\)/);
    expect(sql).toContain("CREATE MATERIALIZED VIEW IF NOT EXISTS metric_summaries_mv\nTO metric_summaries\n");
    expect(sql).toContain("argMaxState(value, (step, ts)) AS last_value");
    expect(migrationsTableStatement()).toContain("ENGINE = ReplacingMergeTree\nORDER BY version");
  });

  it("single node: M4 rollup table, the view feeding it from metrics, then a backfill of existing rows", () => {
    const rollup = metricStoreMigrations().find((m) => m.version === 2)!;
    expect(rollup.statements).toHaveLength(3);
    const [table, view, backfill] = rollup.statements;
    expect(table).toMatch(/^CREATE TABLE IF NOT EXISTS metric_rollup\n[\s\S]*ENGINE = AggregatingMergeTree\nORDER BY \(run_id, key, bucket\)$/);
    expect(table).toContain("first_point AggregateFunction(argMin, Tuple(Int64, Float64, DateTime64(3, 'UTC')), Int64)");
    expect(table).toContain("high_point AggregateFunction(argMax, Tuple(Int64, Float64, DateTime64(3, 'UTC')), Float64)");
    const select =
      "SELECT\n    run_id,\n    key,\n    intDiv(step, 1024) AS bucket,\n" +
      "    argMinState((step, value, ts), step) AS first_point,\n    argMaxState((step, value, ts), step) AS last_point,\n" +
      "    argMinState((step, value, ts), value) AS low_point,\n    argMaxState((step, value, ts), value) AS high_point\n" +
      "FROM metrics\nGROUP BY run_id, key, bucket";
    expect(view).toBe(`CREATE MATERIALIZED VIEW IF NOT EXISTS metric_rollup_mv\nTO metric_rollup\nAS ${select}`);
    expect(backfill).toBe(`INSERT INTO metric_rollup (run_id, key, bucket, first_point, last_point, low_point, high_point)\n${select}`);
  });

  it("version 3: a bloom-filter index on the raw points' batch_id, then metric_batches and its view dropped", () => {
    expect(metricStoreMigrations().find((m) => m.version === 3)!.statements).toEqual([
      "ALTER TABLE metrics ADD INDEX IF NOT EXISTS batch_id_bloom batch_id TYPE bloom_filter(0.001) GRANULARITY 1",
      "ALTER TABLE metrics MATERIALIZE INDEX batch_id_bloom",
      "DROP VIEW IF EXISTS metric_batches_mv",
      "DROP TABLE IF EXISTS metric_batches",
    ]);
    // On a cluster the index goes on the local tables (where the parts are) and both tables go.
    expect(metricStoreMigrations({ cluster: "prod" }).find((m) => m.version === 3)!.statements).toEqual([
      "ALTER TABLE metrics_local ON CLUSTER prod ADD INDEX IF NOT EXISTS batch_id_bloom batch_id TYPE bloom_filter(0.001) GRANULARITY 1",
      "ALTER TABLE metrics_local ON CLUSTER prod MATERIALIZE INDEX batch_id_bloom",
      "DROP VIEW IF EXISTS metric_batches_mv_local ON CLUSTER prod",
      "DROP TABLE IF EXISTS metric_batches ON CLUSTER prod",
      "DROP TABLE IF EXISTS metric_batches_local ON CLUSTER prod",
    ]);
  });

  it("version 4: a latest_value column on the summaries (local and Distributed), the view's query changed in place, then a backfill with count 0", () => {
    const single = metricStoreMigrations().find((m) => m.version === 4)!.statements;
    expect(single[0]).toBe("ALTER TABLE metric_summaries ADD COLUMN IF NOT EXISTS latest_value AggregateFunction(argMax, Float64, Tuple(Int64, DateTime64(3, 'UTC'), Float64))");
    expect(single[1]).toMatch(/^ALTER TABLE metric_summaries_mv MODIFY QUERY SELECT[\s\S]*argMaxState\(value, \(step, ts, value\)\) AS latest_value\nFROM metrics\nGROUP BY run_id, key$/);
    expect(single[2]).toMatch(/^INSERT INTO metric_summaries \(run_id, key, min_value, max_value, last_value, last_point, point_count, latest_value\)\nSELECT[\s\S]*toUInt64\(0\) AS point_count[\s\S]*FROM metrics\nGROUP BY run_id, key$/);
    expect(single).toHaveLength(3);
    const cluster = metricStoreMigrations({ cluster: "prod" }).find((m) => m.version === 4)!.statements;
    expect(cluster.slice(0, 3)).toEqual([
      "ALTER TABLE metric_summaries_local ON CLUSTER prod ADD COLUMN IF NOT EXISTS latest_value AggregateFunction(argMax, Float64, Tuple(Int64, DateTime64(3, 'UTC'), Float64))",
      "ALTER TABLE metric_summaries ON CLUSTER prod ADD COLUMN IF NOT EXISTS latest_value AggregateFunction(argMax, Float64, Tuple(Int64, DateTime64(3, 'UTC'), Float64))",
      expect.stringMatching(/^ALTER TABLE metric_summaries_mv_local ON CLUSTER prod MODIFY QUERY SELECT[\s\S]*FROM metrics_local\nGROUP BY run_id, key$/),
    ]);
  });

  it("version 6: merges combine more parts at once on the three tables (their storage on a cluster), where the server knows the setting", () => {
    const single = metricStoreMigrations().find((m) => m.version === 6)!;
    expect(single.requiresMergeTreeSetting).toBe("merge_selector_base");
    expect(single.statements).toEqual([
      "ALTER TABLE metrics MODIFY SETTING merge_selector_base = 20",
      "ALTER TABLE metric_summaries MODIFY SETTING merge_selector_base = 20",
      "ALTER TABLE metric_rollup MODIFY SETTING merge_selector_base = 20",
    ]);
    expect(metricStoreMigrations({ cluster: "prod" }).find((m) => m.version === 6)!.statements).toEqual([
      "ALTER TABLE metrics_local ON CLUSTER prod MODIFY SETTING merge_selector_base = 20",
      "ALTER TABLE metric_summaries_local ON CLUSTER prod MODIFY SETTING merge_selector_base = 20",
      "ALTER TABLE metric_rollup_local ON CLUSTER prod MODIFY SETTING merge_selector_base = 20",
    ]);
  });

  it("asks every replica of a cluster whether it knows a setting, a single node only itself", () => {
    expect(mergeTreeSettingKnownQuery()).toBe("SELECT count() > 0 AS known FROM system.merge_tree_settings WHERE name = {name:String}");
    expect(mergeTreeSettingKnownQuery({ cluster: "prod" })).toBe(
      "SELECT (SELECT count() FROM clusterAllReplicas(prod, system.merge_tree_settings) WHERE name = {name:String})\n" +
        "  = (SELECT count() FROM system.clusters WHERE cluster = 'prod') AS known",
    );
    expect(() => mergeTreeSettingKnownQuery({ cluster: "prod'; DROP TABLE metrics" })).toThrow(DomainError);
  });

  it("cluster: replicated local tables, Distributed tables over them, views on the local tables", () => {
    const statements = metricStoreMigrations({ cluster: "prod" }).flatMap((m) => m.statements);
    for (const s of statements.filter((s) => !s.startsWith("INSERT"))) {
      expect(s).toMatch(/^(CREATE (TABLE|MATERIALIZED VIEW) IF NOT EXISTS|ALTER TABLE|DROP (TABLE|VIEW) IF EXISTS) \w+ ON CLUSTER prod\b/);
    }
    expect(statements).toContainEqual(
      expect.stringContaining(
        "CREATE TABLE IF NOT EXISTS metrics_local ON CLUSTER prod\n(\n    run_id String,",
      ),
    );
    const metricsLocal = statements.find((s) => s.startsWith("CREATE TABLE IF NOT EXISTS metrics_local "))!;
    expect(metricsLocal).toContain(
      "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/metrics_local', '{replica}')\nORDER BY (run_id, key, step)",
    );
    expect(statements).toContain(
      "CREATE TABLE IF NOT EXISTS metrics ON CLUSTER prod AS metrics_local\n" +
        "ENGINE = Distributed(prod, currentDatabase(), metrics_local, cityHash64(run_id))",
    );
    const summariesLocal = statements.find((s) => s.startsWith("CREATE TABLE IF NOT EXISTS metric_summaries_local "))!;
    expect(summariesLocal).toContain(
      "ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/metric_summaries_local', '{replica}')",
    );
    expect(statements).toContain(
      "CREATE TABLE IF NOT EXISTS metric_summaries ON CLUSTER prod AS metric_summaries_local\n" +
        "ENGINE = Distributed(prod, currentDatabase(), metric_summaries_local, cityHash64(run_id))",
    );
    const batchesLocal = statements.find((s) => s.startsWith("CREATE TABLE IF NOT EXISTS metric_batches_local "))!;
    expect(batchesLocal).toContain("ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/metric_batches_local', '{replica}')");
    const view = statements.find((s) => s.includes("metric_summaries_mv"))!;
    expect(view).toMatch(/^CREATE MATERIALIZED VIEW IF NOT EXISTS metric_summaries_mv_local ON CLUSTER prod\nTO metric_summaries_local\nAS SELECT[\s\S]*FROM metrics_local\n/);
    const rollupLocal = statements.find((s) => s.startsWith("CREATE TABLE IF NOT EXISTS metric_rollup_local "))!;
    expect(rollupLocal).toContain(
      "ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/metric_rollup_local', '{replica}')\nORDER BY (run_id, key, bucket)",
    );
    expect(statements).toContain(
      "CREATE TABLE IF NOT EXISTS metric_rollup ON CLUSTER prod AS metric_rollup_local\n" +
        "ENGINE = Distributed(prod, currentDatabase(), metric_rollup_local, cityHash64(run_id))",
    );
    const rollupView = statements.find((s) => s.includes("metric_rollup_mv"))!;
    expect(rollupView).toMatch(/^CREATE MATERIALIZED VIEW IF NOT EXISTS metric_rollup_mv_local ON CLUSTER prod\nTO metric_rollup_local\nAS SELECT[\s\S]*FROM metrics_local\nGROUP BY run_id, key, bucket$/);
    // The backfill goes through the Distributed tables: it reads every shard and routes each row
    // to its run's shard, synchronously so the migration is recorded only after it landed.
    const inserts = statements.filter((s) => s.startsWith("INSERT"));
    expect(inserts).toHaveLength(2);
    expect(inserts[0]).toMatch(/^INSERT INTO metric_rollup \(run_id, [\s\S]*\nFROM metrics\nGROUP BY run_id, key, bucket\nSETTINGS insert_distributed_sync = 1$/);
    expect(inserts[1]).toMatch(/^INSERT INTO metric_summaries \(run_id, [\s\S]*\nFROM metrics\nGROUP BY run_id, key\nSETTINGS insert_distributed_sync = 1$/);
    expect(migrationsTableStatement({ cluster: "prod" })).toBe(
      "CREATE TABLE IF NOT EXISTS schema_migrations ON CLUSTER prod\n(\n    version UInt32,\n    name String,\n" +
        "    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)\n)\n" +
        "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{database}/schema_migrations', '{replica}')\nORDER BY version",
    );
  });

  it("refuses a cluster name that is not an identifier (it is spliced into DDL)", () => {
    expect(() => metricStoreMigrations({ cluster: "x; DROP TABLE metrics" })).toThrow(DomainError);
  });
});
