import { DomainError } from "../../../src/services/errors.js";
import {
  compileFilter,
  METRICS_UNSUPPORTED_MESSAGE,
  parseFilter,
  type FilterNode,
  type MetricTerm,
} from "../../../src/services/run-filter/index.js";

const RUN_A = "6f1c6b1e-4a8e-4c43-9d0e-0a3a9a0f3b11";
const RUN_B = "0b7e1c2d-3f4a-4b5c-8d6e-7f8091a2b3c4";

const compile = async (filter: string, paramOffset = 0) => compileFilter(parseFilter(filter), { paramOffset });

describe("compileFilter", () => {
  it("compiles an empty filter to TRUE with no parameters", async () => {
    expect(await compileFilter(null)).toEqual({ sql: "TRUE", params: [] });
  });

  it("compiles param and tag terms to EXISTS subqueries with key and value bound", async () => {
    expect(await compile("params.lr = '0.01'")).toEqual({
      sql: "EXISTS (SELECT 1 FROM run_params p WHERE p.run_id = r.id AND p.key = $1 AND p.value = $2::text)",
      params: ["lr", "0.01"],
    });
    expect(await compile("tags.team LIKE 'nl%'")).toEqual({
      sql: "EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = r.id AND t.key = $1 AND t.value LIKE $2::text)",
      params: ["team", "nl%"],
    });
  });

  it("keeps MLflow's != semantics: the key must exist with a different value", async () => {
    expect(await compile("params.lr != '0.01'")).toEqual({
      sql: "EXISTS (SELECT 1 FROM run_params p WHERE p.run_id = r.id AND p.key = $1 AND p.value <> $2::text)",
      params: ["lr", "0.01"],
    });
  });

  it("binds IN / NOT IN lists as one array parameter", async () => {
    expect(await compile("params.opt IN ('adam', 'sgd')")).toEqual({
      sql: "EXISTS (SELECT 1 FROM run_params p WHERE p.run_id = r.id AND p.key = $1 AND p.value = ANY($2::text[]))",
      params: ["opt", ["adam", "sgd"]],
    });
    expect(await compile("tags.team NOT IN ('a')")).toEqual({
      sql: "EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = r.id AND t.key = $1 AND t.value <> ALL($2::text[]))",
      params: ["team", ["a"]],
    });
  });

  it("compiles attributes to columns of runs r with typed parameters", async () => {
    expect(await compile("attributes.status = 'FINISHED'")).toEqual({ sql: "r.status = $1::text", params: ["FINISHED"] });
    expect(await compile("run_name ILIKE '%bert%'")).toEqual({ sql: "r.name ILIKE $1::text", params: ["%bert%"] });
    expect(await compile(`attributes.id = '${RUN_A}'`)).toEqual({ sql: "r.id = $1::uuid", params: [RUN_A] });
    expect(await compile(`experiment_id NOT IN ('${RUN_A}', '${RUN_B}')`)).toEqual({
      sql: "r.experiment_id <> ALL($1::uuid[])",
      params: [[RUN_A, RUN_B]],
    });
  });

  it("binds times as exact ISO instants, from epoch milliseconds or ISO text", async () => {
    expect(await compile("attributes.start_time >= 1700000000123")).toEqual({
      sql: "r.start_time >= $1::timestamptz",
      params: ["2023-11-14T22:13:20.123Z"],
    });
    expect(await compile("end_time < '2024-01-31T12:00:00+02:00'")).toEqual({
      sql: "r.end_time < $1::timestamptz",
      params: ["2024-01-31T10:00:00.000Z"],
    });
  });

  it("parenthesises AND/OR groups and numbers parameters from paramOffset", async () => {
    expect(await compile("params.a = '1' and (tags.b = '2' or status = 'RUNNING')", 3)).toEqual({
      sql:
        "(EXISTS (SELECT 1 FROM run_params p WHERE p.run_id = r.id AND p.key = $4 AND p.value = $5::text) AND " +
        "(EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = r.id AND t.key = $6 AND t.value = $7::text) OR r.status = $8::text))",
      params: ["a", "1", "b", "2", "RUNNING"],
    });
  });

  it("turns an injection attempt into one bind parameter and leaves the SQL text unchanged", async () => {
    const benign = await compile("params.x = 'hello'");
    const hostile = await compile("params.x = '1'' or 1=1 --'");
    expect(hostile.sql).toBe(benign.sql);
    expect(hostile.params).toEqual(["x", "1' or 1=1 --"]);
    const hostileKey = await compile("params.`x') OR 1=1 --` = 'a'").catch((e: unknown) => e);
    // Such a key is not even a valid key: parentheses, quotes and = are not key characters.
    expect(hostileKey).toBeInstanceOf(DomainError);
    const spacedKey = await compile("params.`x OR 1 --` = 'a'");
    expect(spacedKey.sql).toBe(benign.sql);
    expect(spacedKey.params).toEqual(["x OR 1 --", "a"]);
  });

  describe("metric terms", () => {
    it("resolves each metric term through the hook and binds the run ids", async () => {
      const seen: MetricTerm[] = [];
      const resolveMetricTerm = async (term: MetricTerm): Promise<string[]> => {
        seen.push(term);
        return term.key === "acc" ? [RUN_A, RUN_B] : [];
      };
      const compiled = await compileFilter(parseFilter("metrics.acc >= 0.9 and (params.a = '1' or metrics.`val loss` < -1e-3)"), {
        paramOffset: 1,
        resolveMetricTerm,
      });
      expect(compiled).toEqual({
        sql: "(r.id = ANY($2::uuid[]) AND (EXISTS (SELECT 1 FROM run_params p WHERE p.run_id = r.id AND p.key = $3 AND p.value = $4::text) OR r.id = ANY($5::uuid[])))",
        params: [[RUN_A, RUN_B], "a", "1", []],
      });
      expect(seen).toEqual([
        { key: "acc", op: ">=", value: 0.9 },
        { key: "val loss", op: "<", value: -0.001 },
      ]);
    });

    it("asks the hook once per distinct term", async () => {
      let calls = 0;
      const resolveMetricTerm = async (): Promise<string[]> => {
        calls += 1;
        return [RUN_A];
      };
      const compiled = await compileFilter(parseFilter("metrics.a < 1 or metrics.a < 1 or metrics.a < 2"), { resolveMetricTerm });
      expect(calls).toBe(2);
      expect(compiled.params).toEqual([[RUN_A], [RUN_A], [RUN_A]]);
    });

    it("rejects metric terms when no metric store is configured", async () => {
      const ast = parseFilter("params.a = '1' or metrics.loss < 1");
      for (const options of [{}, { resolveMetricTerm: async () => "unsupported" as const }]) {
        const error = await compileFilter(ast, options).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(DomainError);
        expect(error).toMatchObject({ code: "BAD_USER_INPUT", field: "filter", message: METRICS_UNSUPPORTED_MESSAGE });
      }
      expect(METRICS_UNSUPPORTED_MESSAGE).toBe("filter: metrics.* terms are not supported yet: the metric store is not configured");
    });

    it("does not need the hook when there are no metric terms", async () => {
      await expect(compile("params.a = '1'")).resolves.toBeDefined();
    });

    it("propagates a metric store failure unchanged", async () => {
      const failure = new Error("clickhouse down");
      await expect(compileFilter(parseFilter("metrics.a < 1"), { resolveMetricTerm: () => Promise.reject(failure) })).rejects.toBe(failure);
    });
  });

  describe("hand-built ASTs are re-checked", () => {
    const bad: [string, FilterNode][] = [
      ["unknown attribute", { kind: "comparison", entity: "attributes", key: "id; DROP TABLE runs", op: "=", value: "x" }],
      ["operator not allowed", { kind: "comparison", entity: "metrics", key: "loss", op: "LIKE", value: 1 }],
      ["unknown operator", { kind: "comparison", entity: "params", key: "a", op: "= 1 OR" as never, value: "x" }],
      ["number for a param", { kind: "comparison", entity: "params", key: "a", op: "=", value: 1 }],
      ["list for a scalar operator", { kind: "comparison", entity: "params", key: "a", op: "=", value: ["x"] }],
      ["empty IN list", { kind: "comparison", entity: "params", key: "a", op: "IN", value: [] }],
      ["invalid key", { kind: "comparison", entity: "tags", key: "", op: "=", value: "x" }],
      ["empty AND", { kind: "and", operands: [] }],
      ["non-uuid run id", { kind: "comparison", entity: "attributes", key: "run_id", op: "=", value: "1 OR 1=1" }],
      ["NaN metric value", { kind: "comparison", entity: "metrics", key: "a", op: "<", value: Number.NaN }],
    ];
    it.each(bad)("%s", async (_name, ast) => {
      const error = await compileFilter(ast, { resolveMetricTerm: async () => [] }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(DomainError);
      expect(error).toMatchObject({ code: "BAD_USER_INPUT", field: "filter" });
    });
  });
});
