import fs from "node:fs";
import path from "node:path";
import { buildSchema, parse } from "graphql";
import { checkOperationLimits } from "../../../src/server/operation-limits.js";

// The real schema, so the weights are checked against the fields clients can actually ask for.
const schema = buildSchema(fs.readFileSync(path.join(__dirname, "../../../schema/schema.graphql"), "utf8"));
const limits = { maxDepth: 15, maxComplexity: 250_000, maxAliases: 30, maxRootFields: 10, maxBodyBytes: 1 << 20, ratePerSecond: 0, rateBurst: 1 };
const verdict = (query: string) => checkOperationLimits(schema, parse(query), undefined, {}, limits)[0]?.extensions.code ?? "OK";

describe("operation weights of long lists", () => {
  it("weighs every task's log lines by their limit: 40 runs' tasks with 10,000 lines each are refused", () => {
    // Scored 4,841 before: task lists weighed as 10 items and a list of log lines as free.
    expect(verdict(`{ pipelineRuns(first: 40) { edges { node { tasks { logs(limit: 10000) } } } } }`)).toBe("QUERY_TOO_COMPLEX");
  });

  it("keeps everyday pipeline queries well inside the limit", () => {
    expect(verdict(`query($id: ID!) { pipelineRun(id: $id) { status tasks { taskId status logs attempts { attempt outcome error } run { id metricKeys } } } }`)).toBe("OK");
    expect(verdict(`{ pipelineRuns(first: 50) { edges { node { id status tasksDone tasks { taskId status attempt } } } } }`)).toBe("OK");
  });
});
