import { DomainError } from "../../../src/services/errors.js";
import {
  compileOrderBy,
  MAX_ORDER_BY_TERMS,
  METRIC_ORDER_UNSUPPORTED_MESSAGE,
  parseOrderBy,
  type OrderByTerm,
} from "../../../src/services/run-filter/index.js";

const RUN_A = "6f1c6b1e-4a8e-4c43-9d0e-0a3a9a0f3b11";
const RUN_B = "0b7e1c2d-3f4a-4b5c-8d6e-7f8091a2b3c4";

function errorOf(orderBy: string[]): DomainError {
  try {
    parseOrderBy(orderBy);
  } catch (error) {
    expect(error).toBeInstanceOf(DomainError);
    return error as DomainError;
  }
  throw new Error(`expected ${JSON.stringify(orderBy)} to be rejected`);
}

describe("parseOrderBy", () => {
  it("parses entity, key and direction, defaulting to ASC", () => {
    expect(parseOrderBy(["metrics.val_loss ASC", "params.lr DESC", "attributes.start_time", "start_time desc", "tag.`my key` Desc", "run_name"])).toEqual<
      OrderByTerm[]
    >([
      { entity: "metrics", key: "val_loss", direction: "ASC" },
      { entity: "params", key: "lr", direction: "DESC" },
      { entity: "attributes", key: "start_time", direction: "ASC" },
      { entity: "attributes", key: "start_time", direction: "DESC" },
      { entity: "tags", key: "my key", direction: "DESC" },
      { entity: "attributes", key: "name", direction: "ASC" },
    ]);
    expect(parseOrderBy([])).toEqual([]);
  });

  const bad: [string, string[], string, string][] = [
    ["bad direction", ["params.lr DOWN"], "orderBy[0]", 'orderBy[0]: expected ASC, DESC or end of input at position 11, found "DOWN"'],
    ["trailing text after the direction", ["start_time", "params.lr DESC x"], "orderBy[1]", 'orderBy[1]: expected end of input at position 16, found "x"'],
    ["empty string", ["  "], "orderBy[0]", expect.stringContaining("orderBy[0]: expected an identifier such as params.lr") as unknown as string],
    ["unknown attribute", ["colour"], "orderBy[0]", expect.stringContaining('at position 1, found "colour"') as unknown as string],
    ["unterminated key", ["metrics.`loss"], "orderBy[0]", "orderBy[0]: expected a closing ` for the key at position 9, found end of input"],
    ["a filter instead", ["params.lr = '1'"], "orderBy[0]", 'orderBy[0]: expected ASC, DESC or end of input at position 11, found "="'],
  ];
  it.each(bad)("rejects %s naming orderBy[i]", (_name, orderBy, field, message) => {
    const error = errorOf(orderBy);
    expect(error.code).toBe("BAD_USER_INPUT");
    expect(error.field).toBe(field);
    expect(error.message).toEqual(message);
  });

  it("bounds the number of terms", () => {
    const error = errorOf(Array.from({ length: MAX_ORDER_BY_TERMS + 1 }, () => "start_time"));
    expect(error.field).toBe("orderBy");
  });
});

describe("compileOrderBy", () => {
  it("orders attributes by column with NULLs last and r.id as tie-breaker", async () => {
    expect(await compileOrderBy(parseOrderBy(["start_time DESC", "attributes.status"]))).toEqual({
      joins: [],
      orderBy: "r.start_time DESC NULLS LAST, r.status ASC NULLS LAST, r.id ASC NULLS LAST",
      keys: [
        { expression: "r.start_time", direction: "DESC", type: "timestamptz", nullable: false },
        { expression: "r.status", direction: "ASC", type: "text", nullable: false },
        { expression: "r.id", direction: "ASC", type: "uuid", nullable: false },
      ],
      params: [],
    });
  });

  it("adds only the tie-breaker when there are no terms, and none when run_id is already a key", async () => {
    expect((await compileOrderBy([])).orderBy).toBe("r.id ASC NULLS LAST");
    expect((await compileOrderBy(parseOrderBy(["run_id DESC"]))).orderBy).toBe("r.id DESC NULLS LAST");
  });

  it("orders params and tags through bound scalar subqueries", async () => {
    expect(await compileOrderBy(parseOrderBy(["params.lr DESC", "tags.team"]), { paramOffset: 2 })).toEqual({
      joins: [],
      orderBy:
        "(SELECT p.value FROM run_params p WHERE p.run_id = r.id AND p.key = $3::text) DESC NULLS LAST, " +
        "(SELECT t.value FROM run_tags t WHERE t.run_id = r.id AND t.key = $4::text) ASC NULLS LAST, r.id ASC NULLS LAST",
      keys: expect.any(Array) as unknown as [],
      params: ["lr", "team"],
    });
  });

  it("orders metrics through a LEFT JOIN of unnested last values", async () => {
    const keys: string[] = [];
    const compiled = await compileOrderBy(parseOrderBy(["metrics.val_loss ASC", "params.lr", "metrics.`acc 1` DESC"]), {
      paramOffset: 1,
      resolveMetricLastValues: async (key) => {
        keys.push(key);
        return key === "val_loss"
          ? new Map([
              [RUN_A, 0.5],
              [RUN_B, 0.25],
            ])
          : new Map();
      },
    });
    expect(keys).toEqual(["val_loss", "acc 1"]);
    expect(compiled).toEqual({
      joins: [
        "LEFT JOIN unnest($2::uuid[], $3::float8[]) AS m0(run_id, v) ON m0.run_id = r.id",
        "LEFT JOIN unnest($5::uuid[], $6::float8[]) AS m1(run_id, v) ON m1.run_id = r.id",
      ],
      orderBy:
        "m0.v ASC NULLS LAST, (SELECT p.value FROM run_params p WHERE p.run_id = r.id AND p.key = $4::text) ASC NULLS LAST, " +
        "m1.v DESC NULLS LAST, r.id ASC NULLS LAST",
      keys: expect.any(Array) as unknown as [],
      params: [[RUN_A, RUN_B], [0.5, 0.25], "lr", [], []],
    });
  });

  it("rejects metric ordering without a metric store, naming the term", async () => {
    const terms = parseOrderBy(["start_time", "metrics.loss"]);
    for (const options of [{}, { resolveMetricLastValues: async () => "unsupported" as const }]) {
      const error = await compileOrderBy(terms, options).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(DomainError);
      expect(error).toMatchObject({ code: "BAD_USER_INPUT", field: "orderBy[1]", message: `orderBy[1]: ${METRIC_ORDER_UNSUPPORTED_MESSAGE}` });
    }
  });

  it("re-checks hand-built terms", async () => {
    const error = await compileOrderBy([{ entity: "attributes", key: "id; DROP TABLE runs", direction: "ASC" }]).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "BAD_USER_INPUT", field: "orderBy[0]" });
    const direction = await compileOrderBy([{ entity: "attributes", key: "status", direction: "ASC; DROP" as never }]);
    expect(direction.orderBy).toBe("r.status ASC NULLS LAST, r.id ASC NULLS LAST");
  });
});
