import { DataSource, type Logger as TypeOrmLogger } from "typeorm";
import type { Logger } from "pino";
import { entities } from "../entities/index.js";
import { migrations } from "./migrations/index.js";

/** Arbitrary constant: serialises migrations when several replicas start at once. */
const MIGRATION_LOCK_KEY = 7_241_000_001;

/** Opens the metadata database and brings its schema up to date with the numbered migrations. */
export async function openDatabase(url: string, log: Logger, options: { onQuery?: () => void } = {}): Promise<DataSource> {
  const dataSource = new DataSource({
    type: "postgres",
    url,
    entities,
    migrations,
    migrationsTableName: "schema_migrations",
    synchronize: false,
    logging: false,
    // TypeORM hands every statement to its logger: the debug aid counts them per request.
    ...(options.onQuery ? { logger: countingLogger(options.onQuery) } : {}),
    extra: { max: 20, connectionTimeoutMillis: 5000 },
  });
  await dataSource.initialize();
  const runner = dataSource.createQueryRunner();
  try {
    await runner.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);
    const applied = await dataSource.runMigrations({ transaction: "each" });
    if (applied.length > 0) log.info({ migrations: applied.map((m) => m.name) }, "database migrations applied");
  } finally {
    await runner.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK_KEY]).catch(() => undefined);
    await runner.release();
  }
  return dataSource;
}

/** A TypeORM logger that only counts statements (MLGRAPH_DEBUG_QUERY_COUNTS). */
function countingLogger(onQuery: () => void): TypeOrmLogger {
  const ignore = () => undefined;
  return { logQuery: () => onQuery(), logQueryError: ignore, logQuerySlow: ignore, logSchemaBuild: ignore, logMigration: ignore, log: ignore };
}
