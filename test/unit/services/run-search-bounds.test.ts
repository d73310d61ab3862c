import type { DataSource } from "typeorm";
import { MAX_RUNS_FOR_UNSCOPED_METRIC_TERM, RunSearch, type MetricSearchHooks } from "../../../src/services/run-search.js";

/**
 * A search naming no experiments sends a `metrics.*` term to the metric store unscoped; what
 * comes back is held in memory and passed on to PostgreSQL, so it is capped. The database here
 * answers every statement with no rows (the cap is decided before any run is read).
 */
const sentToDatabase: unknown[][] = [];
const emptyDatabase = {
  query: async (_sql: string, params: unknown[]) => {
    sentToDatabase.push(params);
    return [];
  },
} as unknown as DataSource;

function searchWith(found: number) {
  const calls: { scope: string[] | undefined; limit?: number }[] = [];
  const ids = Array.from({ length: found }, (_, i) => `run-${i}`);
  const hooks: MetricSearchHooks = {
    runIdsMatching: async (scope, _key, _op, _value, limit) => {
      calls.push({ scope, limit });
      return (scope ?? ids).slice(0, limit);
    },
    lastValues: async (scope, _key, limit) => {
      calls.push({ scope, limit });
      return new Map((scope ?? ids).slice(0, limit).map((id, i) => [id, i]));
    },
  };
  const search = new RunSearch(emptyDatabase);
  search.useMetrics(hooks);
  return { search, calls };
}

describe("run search: metrics terms without experimentIds", () => {
  const cap = MAX_RUNS_FOR_UNSCOPED_METRIC_TERM;

  it("refuses a filter term reaching more runs than the cap, naming the field, having asked for one more than it", async () => {
    const { search, calls } = searchWith(cap + 5);
    await expect(search.search(null as never, { filter: "metrics.val_loss < 0.3" })).rejects.toMatchObject({
      code: "BAD_USER_INPUT",
      field: "filter",
      message: expect.stringContaining("give experimentIds"),
    });
    expect(calls).toEqual([{ scope: undefined, limit: cap + 1 }]);
  });

  it("refuses an orderBy term the same way", async () => {
    const { search } = searchWith(cap + 1);
    await expect(search.search(null as never, { orderBy: ["metrics.val_loss ASC"] })).rejects.toMatchObject({ code: "BAD_USER_INPUT", field: "orderBy" });
  });

  it("answers up to the cap", async () => {
    const { search } = searchWith(cap);
    sentToDatabase.length = 0;
    await expect(search.search(null as never, { filter: "metrics.val_loss < 0.3", orderBy: ["metrics.val_loss ASC"] })).resolves.toMatchObject({ items: [] });
    // The runs the term matched went on to PostgreSQL, all of them.
    expect(sentToDatabase.flat().some((p) => Array.isArray(p) && p.length === cap)).toBe(true);
  });

  it("never caps a search scoped to named runs", async () => {
    const { search, calls } = searchWith(0);
    const runIds = Array.from({ length: cap + 10 }, (_, i) => `00000000-0000-0000-0000-${String(i).padStart(12, "0")}`);
    await expect(search.search(null as never, { runIds, filter: "metrics.val_loss < 0.3", orderBy: ["metrics.val_loss ASC"] })).resolves.toMatchObject({ items: [] });
    // Asked about every named run, with no limit (a limit cut a large experiment's answer silently).
    expect(calls).toEqual([
      { scope: expect.any(Array), limit: undefined },
      { scope: expect.any(Array), limit: undefined },
    ]);
    expect(calls[0].scope).toHaveLength(cap + 10);
  });
});
