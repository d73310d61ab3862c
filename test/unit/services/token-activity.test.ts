import type { DataSource } from "typeorm";
import { TokensService } from "../../../src/services/tokens.service";

/** Records every query and answers as if the listed tokens were the active ones. */
function recordingDatabase(active: Set<string>) {
  const queries: string[][] = [];
  const db = {
    query: async (_sql: string, [ids]: [string[]]) => {
      queries.push([...ids]);
      return ids.filter((id) => active.has(id)).map((id) => ({ id }));
    },
  };
  return { db: db as unknown as DataSource, queries };
}

describe("TokensService.isActive", () => {
  it("answers the checks of one tick with one query, each with its own token's state", async () => {
    const active = new Set(["a", "b"]);
    const { db, queries } = recordingDatabase(active);
    const tokens = new TokensService(db);
    const ids = ["a", "b", "revoked", "a", "b"];
    expect(await Promise.all(ids.map((id) => tokens.isActive(id)))).toEqual([true, true, false, true, true]);
    expect(queries).toHaveLength(1);
  });

  it("caches nothing: a revocation is seen by the next check", async () => {
    const active = new Set(["a"]);
    const { db, queries } = recordingDatabase(active);
    const tokens = new TokensService(db);
    expect(await tokens.isActive("a")).toBe(true);
    active.delete("a");
    expect(await tokens.isActive("a")).toBe(false);
    expect(queries).toEqual([["a"], ["a"]]);
  });
});
