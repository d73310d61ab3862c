import type { DataSource } from "typeorm";

/** Anything that runs SQL: a DataSource, an EntityManager or a QueryRunner. */
export interface SqlRunner {
  query(sql: string, parameters?: unknown[]): Promise<unknown>;
}

/**
 * Runs a statement and returns its rows. typeorm answers UPDATE/DELETE … RETURNING on PostgreSQL
 * with `[rows, affectedCount]` but INSERT and SELECT with the rows alone; this evens that out.
 */
export async function rows<T = Record<string, unknown>>(runner: SqlRunner, sql: string, parameters?: unknown[]): Promise<T[]> {
  const result = await runner.query(sql, parameters);
  if (Array.isArray(result) && result.length === 2 && Array.isArray(result[0]) && typeof result[1] === "number") return result[0] as T[];
  return result as T[];
}

/**
 * Builds an entity from a raw row of its own table (`RETURNING *`, `SELECT *`), mapping column
 * names to properties through typeorm's metadata: saves the extra read a repository lookup costs
 * on hot paths. The pg driver has already typed the values (timestamps, json, arrays).
 */
export function entityFromRow<T extends object>(db: DataSource, target: new () => T, row: Record<string, unknown>): T {
  const entity = new target();
  for (const column of db.getMetadata(target).columns) {
    if (column.databaseName in row) (entity as Record<string, unknown>)[column.propertyName] = row[column.databaseName];
  }
  return entity;
}
