import type { DataSource, EntityTarget, ObjectLiteral } from "typeorm";

/**
 * typeorm's `query()` answers UPDATE/DELETE … RETURNING with `[rows, affectedCount]` on
 * PostgreSQL but SELECT/INSERT with the rows alone; this normalises both to the rows.
 */
export function returnedRows<T>(result: unknown): T[] {
  if (Array.isArray(result) && result.length === 2 && Array.isArray(result[0]) && typeof result[1] === "number") return result[0] as T[];
  return result as T[];
}

/**
 * The row with the highest `version` in each group (`groupColumn` in `ids`), one query
 * (PostgreSQL's DISTINCT ON): the latest version of several models or pipelines at once.
 */
export function newestVersionPerGroup<T extends ObjectLiteral>(db: DataSource, entity: EntityTarget<T>, groupColumn: string, ids: readonly string[]): Promise<T[]> {
  if (!ids.length) return Promise.resolve([]);
  return db
    .getRepository(entity)
    .createQueryBuilder("v")
    .distinctOn([`v.${groupColumn}`])
    .where(`v.${groupColumn} = ANY(:ids)`, { ids: [...ids] })
    .orderBy(`v.${groupColumn}`)
    .addOrderBy("v.version", "DESC")
    .getMany();
}
