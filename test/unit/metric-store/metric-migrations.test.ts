import { DomainError } from "../../../src/services/errors.js";
import { metricStoreMigrations, migrationsTableStatement } from "../../../src/stores/metric-store/metric-migrations.js";

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

  it("cluster: replicated local tables, Distributed tables over them, views on the local tables", () => {
    const statements = metricStoreMigrations({ cluster: "prod" }).flatMap((m) => m.statements);
    for (const s of statements) expect(s).toMatch(/^CREATE (TABLE|MATERIALIZED VIEW) IF NOT EXISTS \w+ ON CLUSTER prod\b/);
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
