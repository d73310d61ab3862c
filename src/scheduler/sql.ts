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
