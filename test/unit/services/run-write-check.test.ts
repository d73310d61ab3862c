import type { DataSource } from "typeorm";
import type { RequestContext } from "../../../src/services/context";
import type { EventBus } from "../../../src/stores/event-bus/event-bus";
import type { RunSearch } from "../../../src/services/run-search";
import { DomainError } from "../../../src/services/errors";
import { RunsService } from "../../../src/services/runs.service";

const RUN_A = "0a6f3f4e-8a51-4c1e-9d3f-1f2a3b4c5d6e";
const RUN_B = "1b6f3f4e-8a51-4c1e-9d3f-1f2a3b4c5d6e";
const DELETED_RUN = "2c6f3f4e-8a51-4c1e-9d3f-1f2a3b4c5d6e";
const IN_DELETED_EXPERIMENT = "3d6f3f4e-8a51-4c1e-9d3f-1f2a3b4c5d6e";
const MISSING = "4e6f3f4e-8a51-4c1e-9d3f-1f2a3b4c5d6e";

interface RunState {
  deleted: boolean;
  experiment_deleted: boolean;
}

/** Records each query's ids and answers from `runs` as the database would at that moment. */
function recordingDatabase(runs: Map<string, RunState>) {
  const queries: string[][] = [];
  const db = {
    query: async (_sql: string, [ids]: [string[]]) => {
      queries.push([...ids]);
      return ids.filter((id) => runs.has(id)).map((id) => ({ id, experiment_name: "exp", ...runs.get(id)! }));
    },
  };
  return { db: db as unknown as DataSource, queries };
}

const ctx = { principal: { role: "admin", scope: {} } } as unknown as RequestContext;

describe("RunsService.assertWritable", () => {
  const state = () =>
    new Map<string, RunState>([
      [RUN_A, { deleted: false, experiment_deleted: false }],
      [RUN_B, { deleted: false, experiment_deleted: false }],
      [DELETED_RUN, { deleted: true, experiment_deleted: false }],
      [IN_DELETED_EXPERIMENT, { deleted: false, experiment_deleted: true }],
    ]);

  it("checks the runs of concurrent calls in one query, each call with its own run's answer", async () => {
    const { db, queries } = recordingDatabase(state());
    const runs = new RunsService(db, {} as EventBus, {} as RunSearch);
    const ids = [RUN_A, RUN_B.toUpperCase(), DELETED_RUN, IN_DELETED_EXPERIMENT, MISSING, RUN_A];
    const settled = await Promise.allSettled(ids.map((id) => runs.assertWritable(ctx, id, "runId")));
    expect(queries).toHaveLength(1);
    expect(queries[0]).toEqual([RUN_A, RUN_B, DELETED_RUN, IN_DELETED_EXPERIMENT, MISSING, RUN_A]);
    // The stored spelling comes back, whatever case the caller used.
    expect(settled.slice(0, 2)).toEqual([
      { status: "fulfilled", value: RUN_A },
      { status: "fulfilled", value: RUN_B },
    ]);
    const reasons = settled.slice(2, 5).map((s) => (s as PromiseRejectedResult).reason as DomainError);
    expect(reasons.map((r) => [r.code, r.field])).toEqual([
      ["NOT_FOUND", "runId"],
      ["BAD_USER_INPUT", "runId"],
      ["NOT_FOUND", "runId"],
    ]);
    expect(settled[5]).toEqual({ status: "fulfilled", value: RUN_A });
  });

  it("caches nothing: a run deleted between two calls is refused by the second", async () => {
    const runsState = state();
    const { db, queries } = recordingDatabase(runsState);
    const runs = new RunsService(db, {} as EventBus, {} as RunSearch);
    await expect(runs.assertWritable(ctx, RUN_A)).resolves.toBe(RUN_A);
    runsState.get(RUN_A)!.deleted = true;
    await expect(runs.assertWritable(ctx, RUN_A)).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect(queries).toEqual([[RUN_A], [RUN_A]]);
  });

  it("refuses a malformed id and a task token's write to another run without a query", async () => {
    const { db, queries } = recordingDatabase(state());
    const runs = new RunsService(db, {} as EventBus, {} as RunSearch);
    await expect(runs.assertWritable(ctx, "not-a-uuid", "input.runId")).rejects.toMatchObject({ code: "BAD_USER_INPUT", field: "input.runId" });
    const task = { principal: { role: "task", scope: { runId: RUN_B } } } as unknown as RequestContext;
    await expect(runs.assertWritable(task, RUN_A)).rejects.toMatchObject({ code: "FORBIDDEN" });
    expect(queries).toHaveLength(0);
  });
});
