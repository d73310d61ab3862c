import type { ClickHouseClient } from "@clickhouse/client";
import { DomainError } from "../../services/errors.js";

/** One numbered schema change: idempotent statements, since ClickHouse DDL is not transactional. */
export interface MetricMigration {
  version: number;
  name: string;
  statements: string[];
  /**
   * A MergeTree setting the statements set (settings-only migrations). A server that does not know
   * it (an older ClickHouse; on a cluster, any replica) skips the migration without recording it,
   * so it is applied at a start after the upgrade.
   */
  requiresMergeTreeSetting?: string;
}

export interface MetricSchemaOptions {
  /**
   * ClickHouse cluster name. When set, DDL runs `ON CLUSTER`, data lives in
   * `Replicated*MergeTree` tables named `<table>_local`, and the names the queries use
   * (`metrics`, `metric_summaries`, `metric_rollup`) are `Distributed` tables over them.
   */
  cluster?: string;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Steps per `metric_rollup` bucket (bucket = intDiv(step, ROLLUP_BUCKET_STEPS)). */
export const ROLLUP_BUCKET_STEPS = 1024;

interface TableSpec {
  name: string;
  columns: string;
  engine: "MergeTree" | "AggregatingMergeTree" | "ReplacingMergeTree";
  orderBy: string;
  settings?: string;
}

interface ViewSpec {
  name: string;
  to: string;
  from: string;
  select: string;
}

/** Generates the DDL for single-node or clustered deployments from one description. */
class DdlBuilder {
  constructor(private readonly cluster: string | undefined) {
    if (cluster !== undefined && !IDENTIFIER.test(cluster)) {
      throw new DomainError("BAD_USER_INPUT", `cluster: ${JSON.stringify(cluster)} is not a valid ClickHouse identifier`, "cluster");
    }
  }

  private get onCluster(): string {
    return this.cluster ? ` ON CLUSTER ${this.cluster}` : "";
  }

  /** Name of the table that physically holds rows (the `_local` one on a cluster). */
  storage(name: string): string {
    return this.cluster ? `${name}_local` : name;
  }

  /**
   * A table, plus on a cluster the Distributed table queries use. Sharding by run_id keeps
   * each run's points and summaries on one shard, so per-run reads touch one shard's data.
   */
  table(spec: TableSpec, shardingKey = "cityHash64(run_id)"): string[] {
    const settings = spec.settings ? `\nSETTINGS ${spec.settings}` : "";
    if (!this.cluster) {
      return [
        `CREATE TABLE IF NOT EXISTS ${spec.name}\n(\n${spec.columns}\n)\nENGINE = ${spec.engine}\nORDER BY ${spec.orderBy}${settings}`,
      ];
    }
    const local = this.storage(spec.name);
    return [
      `CREATE TABLE IF NOT EXISTS ${local}${this.onCluster}\n(\n${spec.columns}\n)\n` +
        `ENGINE = Replicated${spec.engine}('/clickhouse/tables/{shard}/{database}/${local}', '{replica}')\n` +
        `ORDER BY ${spec.orderBy}${settings}`,
      `CREATE TABLE IF NOT EXISTS ${spec.name}${this.onCluster} AS ${local}\n` +
        `ENGINE = Distributed(${this.cluster}, currentDatabase(), ${local}, ${shardingKey})`,
    ];
  }

  /** Materialized views attach to the local tables, so they fire on the shard that stores the rows. */
  view(spec: ViewSpec): string {
    return (
      `CREATE MATERIALIZED VIEW IF NOT EXISTS ${this.storage(spec.name)}${this.onCluster}\n` +
      `TO ${this.storage(spec.to)}\nAS ${spec.select.replace("{from}", this.storage(spec.from))}`
    );
  }

  /**
   * Fills `table` from existing rows (run after the view that keeps it current was created). Runs
   * on the names queries use: on a cluster that reads every shard through the Distributed table
   * and writes through the Distributed target, which routes each row to its run's shard.
   */
  backfill(table: string, columns: string, select: string): string {
    const settings = this.cluster ? "\nSETTINGS insert_distributed_sync = 1" : "";
    return `INSERT INTO ${table} (${columns})\n${select.replace("{from}", "metrics")}${settings}`;
  }

  /** An ALTER of a table's storage (the `_local` table on a cluster, where the parts are). */
  alter(table: string, clause: string): string {
    return `ALTER TABLE ${this.storage(table)}${this.onCluster} ${clause}`;
  }

  /** Adds a column to a table made by {@link table}: its storage and, on a cluster, the Distributed table. */
  addColumn(table: string, column: string): string[] {
    const alters = [`ALTER TABLE ${this.storage(table)}${this.onCluster} ADD COLUMN IF NOT EXISTS ${column}`];
    if (this.cluster) alters.push(`ALTER TABLE ${table}${this.onCluster} ADD COLUMN IF NOT EXISTS ${column}`);
    return alters;
  }

  /** Replaces a materialized view's query in place: no insert falls between an old and a new view. */
  modifyViewQuery(spec: Omit<ViewSpec, "to">): string {
    return `ALTER TABLE ${this.storage(spec.name)}${this.onCluster} MODIFY QUERY ${spec.select.replace("{from}", this.storage(spec.from))}`;
  }

  dropView(name: string): string {
    return `DROP VIEW IF EXISTS ${this.storage(name)}${this.onCluster}`;
  }

  /** Drops a table made by {@link table}: on a cluster the Distributed table first, then the local one. */
  dropTable(name: string): string[] {
    const drops = [`DROP TABLE IF EXISTS ${name}${this.onCluster}`];
    if (this.cluster) drops.push(`DROP TABLE IF EXISTS ${this.storage(name)}${this.onCluster}`);
    return drops;
  }

  /**
   * Whether the server knows a MergeTree setting (older servers lack newer ones). On a cluster every
   * replica must know it, since the ALTER runs ON CLUSTER: during a rolling upgrade the migration
   * waits until the last node is upgraded instead of failing the start.
   */
  mergeTreeSettingKnown(): string {
    if (!this.cluster) return "SELECT count() > 0 AS known FROM system.merge_tree_settings WHERE name = {name:String}";
    return (
      `SELECT (SELECT count() FROM clusterAllReplicas(${this.cluster}, system.merge_tree_settings) WHERE name = {name:String})\n` +
      `  = (SELECT count() FROM system.clusters WHERE cluster = '${this.cluster}') AS known`
    );
  }

  /**
   * The migrations log itself. On a cluster it is replicated to every node of every shard
   * (no {shard} in its path), so any node sees which migrations ran.
   */
  migrationsTable(): string {
    const columns = "    version UInt32,\n    name String,\n    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)";
    const engine = this.cluster
      ? `ReplicatedReplacingMergeTree('/clickhouse/tables/{database}/schema_migrations', '{replica}')`
      : "ReplacingMergeTree";
    return `CREATE TABLE IF NOT EXISTS schema_migrations${this.onCluster}\n(\n${columns}\n)\nENGINE = ${engine}\nORDER BY version`;
  }
}

/**
 * The metric store's numbered migrations, rendered for a single node or a cluster.
 * Pure: no I/O, so the clustered DDL can be checked without a cluster.
 */
export function metricStoreMigrations(options: MetricSchemaOptions = {}): MetricMigration[] {
  const ddl = new DdlBuilder(options.cluster);
  return [
    {
      version: 1,
      name: "metrics raw points, per-run summaries, batch ids",
      statements: [
        // No PARTITION BY: timestamps come from clients and may span decades, which would
        // explode a time-partitioned table into tiny parts; reads are by run anyway.
        ...ddl.table({
          name: "metrics",
          columns: [
            "    run_id String",
            "    key LowCardinality(String)",
            "    step Int64 CODEC(Delta, ZSTD(1))",
            "    ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1))",
            "    value Float64 CODEC(Gorilla, ZSTD(1))",
            "    batch_id String CODEC(ZSTD(1))",
          ].join(",\n"),
          engine: "MergeTree",
          orderBy: "(run_id, key, step)",
        }),
        ...ddl.table({
          name: "metric_summaries",
          columns: [
            "    run_id String",
            "    key LowCardinality(String)",
            "    min_value SimpleAggregateFunction(min, Float64)",
            "    max_value SimpleAggregateFunction(max, Float64)",
            "    last_value AggregateFunction(argMax, Float64, Tuple(Int64, DateTime64(3, 'UTC')))",
            "    last_point SimpleAggregateFunction(max, Tuple(Int64, DateTime64(3, 'UTC')))",
            "    point_count SimpleAggregateFunction(sum, UInt64)",
          ].join(",\n"),
          engine: "AggregatingMergeTree",
          orderBy: "(run_id, key)",
        }),
        // Idempotency lookups read this small table instead of scanning a run's raw points (until migration 3).
        ...ddl.table({
          name: "metric_batches",
          columns: ["    run_id String", "    batch_id String", "    stored_at DateTime64(3, 'UTC')"].join(",\n"),
          engine: "ReplacingMergeTree",
          orderBy: "(run_id, batch_id)",
        }),
        ddl.view({
          name: "metric_summaries_mv",
          to: "metric_summaries",
          from: "metrics",
          select:
            "SELECT\n    run_id,\n    key,\n    min(value) AS min_value,\n    max(value) AS max_value,\n" +
            "    argMaxState(value, (step, ts)) AS last_value,\n    max((step, ts)) AS last_point,\n" +
            "    count() AS point_count\nFROM {from}\nGROUP BY run_id, key",
        }),
        ddl.view({
          name: "metric_batches_mv",
          to: "metric_batches",
          from: "metrics",
          select:
            "SELECT run_id, batch_id, now64(3) AS stored_at\nFROM {from}\nWHERE batch_id != ''\nGROUP BY run_id, batch_id",
        }),
      ],
    },
    {
      version: 2,
      name: "metric_rollup: M4 points (first, last, lowest, highest) per 1024-step bucket",
      // history() reads these candidates instead of a long series' raw points, then downsamples
      // them with LTTB. argMin/argMax states are idempotent under duplicate input, so the backfill
      // may overlap rows the view already wrote (inserts racing the migration, or a re-run after a
      // crash before the migration was recorded) without changing any result.
      statements: [
        ...ddl.table({
          name: "metric_rollup",
          columns: [
            "    run_id String",
            "    key LowCardinality(String)",
            "    bucket Int64",
            `    first_point AggregateFunction(argMin, ${ROLLUP_POINT}, Int64)`,
            `    last_point AggregateFunction(argMax, ${ROLLUP_POINT}, Int64)`,
            `    low_point AggregateFunction(argMin, ${ROLLUP_POINT}, Float64)`,
            `    high_point AggregateFunction(argMax, ${ROLLUP_POINT}, Float64)`,
          ].join(",\n"),
          engine: "AggregatingMergeTree",
          orderBy: "(run_id, key, bucket)",
        }),
        ddl.view({ name: "metric_rollup_mv", to: "metric_rollup", from: "metrics", select: ROLLUP_SELECT }),
        ddl.backfill("metric_rollup", "run_id, key, bucket, first_point, last_point, low_point, high_point", ROLLUP_SELECT),
      ],
    },
    {
      version: 3,
      name: "idempotency keys looked up in the raw points (bloom filter on batch_id); metric_batches dropped",
      // metric_batches was filled by a view, i.e. by a second part committed after the raw part:
      // a crash between the two left a stored batch unrecorded, and its retry was stored again.
      // The raw part carries batch_id on every row, so it alone says whether a batch is stored.
      // The index is built for existing parts by a background mutation; until it finishes, the
      // lookup reads those parts' batch_id column instead (same answer, slower).
      statements: [
        ddl.alter("metrics", `ADD INDEX IF NOT EXISTS ${BATCH_ID_INDEX} batch_id TYPE bloom_filter(0.001) GRANULARITY 1`),
        ddl.alter("metrics", `MATERIALIZE INDEX ${BATCH_ID_INDEX}`),
        ddl.dropView("metric_batches_mv"),
        ...ddl.dropTable("metric_batches"),
      ],
    },
    {
      version: 4,
      name: "metric_summaries.latest_value: the last value by (step, timestamp, value), as MLflow breaks ties",
      // last_value picked any of the points sharing the last (step, timestamp): logMetrics stamps a
      // call's points with one `now` and step defaults to 0, so a key logged twice in one call tied.
      // MLflow's latest metric compares (step, timestamp, value): the largest value wins a tie.
      // The view feeds the new state from now on (changed in place, so no insert misses it); the
      // backfill derives it for existing rows, re-inserting their idempotent states with count 0.
      statements: [
        ...ddl.addColumn("metric_summaries", `latest_value AggregateFunction(argMax, Float64, ${LATEST_KEY})`),
        ddl.modifyViewQuery({ name: "metric_summaries_mv", from: "metrics", select: SUMMARY_SELECT_V4 }),
        ddl.backfill("metric_summaries", SUMMARY_COLUMNS_V4, SUMMARY_SELECT_V4.replace("count() AS point_count", "toUInt64(0) AS point_count")),
      ],
    },
    {
      version: 5,
      name: "metric_summaries_mv stops computing last_value (nothing reads it since migration 4)",
      // The summary view aggregates every inserted point; last_value's argMax over a (step, ts)
      // tuple cost a few per cent of an INSERT's engine time (measured: 32,000-row INSERTs ~4 %
      // faster without it) for a state no query reads any more (latest_value replaced it). The
      // column stays; rows written from now on hold an empty state.
      statements: [ddl.modifyViewQuery({ name: "metric_summaries_mv", from: "metrics", select: SUMMARY_SELECT })],
    },
    {
      version: 6,
      name: "merges of metric parts combine more parts at once (merge_selector_base 20)",
      // Every group commit adds a part to each of the three tables, and the background merges that
      // combine them took ~0.65 of the 2 cores during sustained ingest, as much as the INSERTs
      // themselves. The merge selector's base (default 5) is about how many parts of similar size
      // it merges at once: each point is rewritten about log_base(parts) times, so 20 rewrites it
      // about half as often. Measured on the embedded engine, 30 s of back-to-back 32,000-point
      // INSERTs: merge threads 0.31-0.43 cores instead of 0.61-0.66, at 20 parts of the raw table
      // instead of 13 at the end. ClickHouse lowers the base as parts age, so an idle table still
      // merges down to a few parts. Changed in place: new merges follow it, no data is rewritten.
      requiresMergeTreeSetting: "merge_selector_base",
      statements: ["metrics", "metric_summaries", "metric_rollup"].map((table) => ddl.alter(table, `MODIFY SETTING merge_selector_base = ${MERGE_SELECTOR_BASE}`)),
    },
  ];
}

/** How many parts of similar size a merge of the metric tables combines (ClickHouse's default: 5); see migration 6. */
const MERGE_SELECTOR_BASE = 20;

/** What orders the points of a series for its last value: (step, timestamp, value). */
const LATEST_KEY = "Tuple(Int64, DateTime64(3, 'UTC'), Float64)";

/** The columns of metric_summaries the view (and a repair) fills; last_value is no longer filled (migration 5). */
export const SUMMARY_COLUMNS = "run_id, key, min_value, max_value, last_point, point_count, latest_value";

/** Per (run, key): min, max, the last point and value, and the count of points (metric_summaries_mv since migration 5). */
export const SUMMARY_SELECT =
  "SELECT\n    run_id,\n    key,\n    min(value) AS min_value,\n    max(value) AS max_value,\n" +
  "    max((step, ts)) AS last_point,\n    count() AS point_count,\n" +
  "    argMaxState(value, (step, ts, value)) AS latest_value\nFROM {from}\nGROUP BY run_id, key";

/** Migration 4's view and backfill, which still filled last_value (kept as they ran). */
const SUMMARY_COLUMNS_V4 = "run_id, key, min_value, max_value, last_value, last_point, point_count, latest_value";
const SUMMARY_SELECT_V4 =
  "SELECT\n    run_id,\n    key,\n    min(value) AS min_value,\n    max(value) AS max_value,\n" +
  "    argMaxState(value, (step, ts)) AS last_value,\n    max((step, ts)) AS last_point,\n" +
  "    count() AS point_count,\n    argMaxState(value, (step, ts, value)) AS latest_value\nFROM {from}\nGROUP BY run_id, key";

/** Skip index that lets an idempotency lookup skip the granules of a run without the batch. */
const BATCH_ID_INDEX = "batch_id_bloom";

/** The point each rollup state keeps: (step, value, ts). */
const ROLLUP_POINT = "Tuple(Int64, Float64, DateTime64(3, 'UTC'))";

export const ROLLUP_SELECT =
  `SELECT\n    run_id,\n    key,\n    intDiv(step, ${ROLLUP_BUCKET_STEPS}) AS bucket,\n` +
  "    argMinState((step, value, ts), step) AS first_point,\n    argMaxState((step, value, ts), step) AS last_point,\n" +
  "    argMinState((step, value, ts), value) AS low_point,\n    argMaxState((step, value, ts), value) AS high_point\n" +
  "FROM {from}\nGROUP BY run_id, key, bucket";

/** The query telling whether the server (on a cluster: every replica) knows a MergeTree setting. */
export function mergeTreeSettingKnownQuery(options: MetricSchemaOptions = {}): string {
  return new DdlBuilder(options.cluster).mergeTreeSettingKnown();
}

/** Whether the server (on a cluster: every replica) has this MergeTree setting. */
export async function knowsMergeTreeSetting(
  client: ClickHouseClient,
  name: string,
  options: MetricSchemaOptions = {},
  onStatement: (sql: string) => void = () => {},
): Promise<boolean> {
  const query = mergeTreeSettingKnownQuery(options);
  onStatement(query);
  const rs = await client.query({ query, query_params: { name }, format: "JSONEachRow" });
  return Number((await rs.json<{ known: number | boolean | string }>())[0]?.known ?? 0) > 0;
}

/** The statement that creates the migrations log (run before anything else). */
export function migrationsTableStatement(options: MetricSchemaOptions = {}): string {
  return new DdlBuilder(options.cluster).migrationsTable();
}

/**
 * Applies the migrations not yet recorded in `schema_migrations`, in order. Safe to run on every
 * start and from several processes at once: every statement is idempotent (`IF NOT EXISTS`, or
 * setting a value), and a migration is recorded only after all its statements succeeded, so a
 * crash midway re-runs it next time. A migration that needs a MergeTree setting the server lacks
 * is left for a later start, possibly after newer migrations: only settings-only migrations may
 * carry `requiresMergeTreeSetting`, so nothing later depends on them.
 * Returns the versions applied now (`migrations`: the store's own, replaced only by tests).
 */
export async function applyMetricMigrations(
  client: ClickHouseClient,
  options: MetricSchemaOptions = {},
  onStatement: (sql: string) => void = () => {},
  migrations: MetricMigration[] = metricStoreMigrations(options),
): Promise<number[]> {
  const command = async (query: string) => {
    onStatement(query);
    await client.command({ query });
  };
  await command(migrationsTableStatement(options));
  const rs = await client.query({ query: "SELECT DISTINCT version FROM schema_migrations", format: "JSONEachRow" });
  onStatement("SELECT DISTINCT version FROM schema_migrations");
  const done = new Set((await rs.json<{ version: number }>()).map((r) => Number(r.version)));
  const applied: number[] = [];
  for (const migration of migrations) {
    if (done.has(migration.version)) continue;
    if (migration.requiresMergeTreeSetting && !(await knowsMergeTreeSetting(client, migration.requiresMergeTreeSetting, options, onStatement))) continue;
    for (const statement of migration.statements) await command(statement);
    onStatement("INSERT INTO schema_migrations");
    await client.insert({
      table: "schema_migrations",
      values: [{ version: migration.version, name: migration.name }],
      format: "JSONEachRow",
    });
    applied.push(migration.version);
  }
  return applied;
}
