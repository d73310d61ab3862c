import fc from "fast-check";
import { DomainError } from "../../../src/services/errors.js";
import {
  compileFilter,
  compileOrderBy,
  parseFilter,
  parseOrderBy,
  printFilter,
  printOrderByTerm,
  type ComparisonNode,
  type FilterNode,
  type OrderByTerm,
} from "../../../src/services/run-filter/index.js";

const KEY_CHARS = "abcXYZ019_.-/ ".split("");
const keyArb = fc.oneof(
  { weight: 5, arbitrary: fc.array(fc.constantFrom(...KEY_CHARS), { minLength: 1, maxLength: 12 }).map((cs) => cs.join("")) },
  { weight: 1, arbitrary: fc.array(fc.constantFrom(...KEY_CHARS), { minLength: 240, maxLength: 250 }).map((cs) => cs.join("")) },
);
// Strings with the characters most likely to break quoting.
const valueArb = fc.oneof(fc.string(), fc.string({ unit: fc.constantFrom("'", '"', "`", "\\", ";", "-", " ", "%", "_", "(", ")", "a", "$", "1") }));
const numberArb = fc.double({ noNaN: true, noDefaultInfinity: true }).map((n) => (n === 0 ? 0 : n));
const timeArb = fc.oneof(
  fc.integer({ min: 0, max: 4102444800000 }),
  fc.date({ min: new Date("1970-01-01T00:00:00Z"), max: new Date("2100-01-01T00:00:00Z"), noInvalidDate: true }).map((d) => d.toISOString()),
);

const stringOps = ["=", "!=", "LIKE", "ILIKE"] as const;
const numericOps = ["=", "!=", "<", ">", "<=", ">="] as const;
const listOps = ["IN", "NOT IN"] as const;

const stringTerm = (entity: ComparisonNode["entity"], key: fc.Arbitrary<string>, value: fc.Arbitrary<string>): fc.Arbitrary<ComparisonNode> =>
  fc.oneof(
    fc.record({ kind: fc.constant("comparison" as const), entity: fc.constant(entity), key, op: fc.constantFrom(...stringOps), value }),
    fc.record({
      kind: fc.constant("comparison" as const),
      entity: fc.constant(entity),
      key,
      op: fc.constantFrom(...listOps),
      value: fc.array(value, { minLength: 1, maxLength: 4 }),
    }),
  );

const comparisonArb: fc.Arbitrary<ComparisonNode> = fc.oneof(
  stringTerm("params", keyArb, valueArb),
  stringTerm("tags", keyArb, valueArb),
  fc.record({ kind: fc.constant("comparison" as const), entity: fc.constant("metrics" as const), key: keyArb, op: fc.constantFrom(...numericOps), value: numberArb }),
  stringTerm("attributes", fc.constantFrom("status", "name"), valueArb),
  fc.record({
    kind: fc.constant("comparison" as const),
    entity: fc.constant("attributes" as const),
    key: fc.constantFrom("run_id", "experiment_id"),
    op: fc.constantFrom("=", "!="),
    value: fc.uuid(),
  }),
  fc.record({
    kind: fc.constant("comparison" as const),
    entity: fc.constant("attributes" as const),
    key: fc.constantFrom("run_id", "experiment_id"),
    op: fc.constantFrom(...listOps),
    value: fc.array(fc.uuid(), { minLength: 1, maxLength: 3 }),
  }),
  fc.record({
    kind: fc.constant("comparison" as const),
    entity: fc.constant("attributes" as const),
    key: fc.constantFrom("start_time", "end_time"),
    op: fc.constantFrom(...numericOps),
    value: timeArb,
  }),
);

const filterArb: fc.Arbitrary<FilterNode> = fc.letrec<{ node: FilterNode }>((tie) => ({
  node: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    comparisonArb,
    fc.record({ kind: fc.constantFrom("and" as const, "or" as const), operands: fc.array(tie("node"), { minLength: 2, maxLength: 4 }) }),
  ),
})).node;

// Filter-shaped noise: real tokens in random order reach much deeper into the parser than
// random characters do.
const TOKENS = [
  "params.lr", "metrics.loss", "tags.`a b`", 'tags."x"', "attributes.status", "status", "run_id", "start_time", "params.",
  "=", "!=", "<", "<=", ">", ">=", "==", "<>", "LIKE", "ilike", "IN", "NOT", "and", "OR", "(", ")", ",",
  "'v'", "'it''s'", '"q"', "'", '"', "`", "1", "-2.5e3", "1e", ".", "-", "1e999", ";", "--", "asc", "DESC", "\n",
];
// Valid filters with one character deleted, doubled or replaced: near-misses exercise every
// error path with long, deep inputs.
const mutatedArb = fc
  .tuple(
    filterArb.map((ast) => printFilter(ast)),
    fc.nat(),
    fc.constantFrom("delete", "double", "replace"),
    fc.constantFrom(...TOKENS, "x", "0"),
  )
  .map(([text, at, how, token]) => {
    const i = text.length === 0 ? 0 : at % text.length;
    if (how === "delete") return text.slice(0, i) + text.slice(i + 1);
    if (how === "double") return text.slice(0, i + 1) + text.slice(i);
    return text.slice(0, i) + token + text.slice(i + 1);
  });
const noiseArb = fc.oneof(
  mutatedArb,
  fc.string(),
  fc.string({ unit: "grapheme" }),
  fc.array(fc.constantFrom(...TOKENS), { maxLength: 16 }).chain((ts) => fc.constantFrom(ts.join(" "), ts.join(""))),
);

const resolveMetricTerm = async (): Promise<string[]> => ["00000000-0000-4000-8000-000000000000"];

describe("filter language properties", () => {
  it("printing any valid AST and parsing it back gives the same AST", () => {
    fc.assert(
      fc.property(filterArb, (ast) => {
        expect(parseFilter(printFilter(ast))).toEqual(ast);
      }),
      { numRuns: 500 },
    );
  });

  it("arbitrary input either parses or throws a BAD_USER_INPUT DomainError, never anything else", () => {
    fc.assert(
      fc.property(noiseArb, (input) => {
        try {
          const ast = parseFilter(input);
          // Whatever parses must also print back to itself.
          expect(parseFilter(printFilter(ast))).toEqual(ast);
        } catch (error) {
          if (!(error instanceof DomainError)) throw error;
          expect(error.code).toBe("BAD_USER_INPUT");
          expect(error.field).toBe("filter");
          expect(error.message).toMatch(/^filter: expected .+ at position \d+/);
          const position = (error.details as { position: number }).position;
          expect(position).toBeGreaterThanOrEqual(1);
          expect(position).toBeLessThanOrEqual(input.length + 1);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("arbitrary orderBy strings either parse or throw a BAD_USER_INPUT DomainError for that element", () => {
    fc.assert(
      fc.property(noiseArb, (input) => {
        try {
          const [term] = parseOrderBy([input]);
          expect(parseOrderBy([printOrderByTerm(term)])).toEqual([term]);
        } catch (error) {
          if (!(error instanceof DomainError)) throw error;
          expect(error.field).toBe("orderBy[0]");
        }
      }),
      { numRuns: 1000 },
    );
  });

  it("orderBy terms print and parse back", () => {
    const termArb: fc.Arbitrary<OrderByTerm> = fc.record({
      entity: fc.constantFrom("params" as const, "tags" as const, "metrics" as const),
      key: keyArb,
      direction: fc.constantFrom("ASC" as const, "DESC" as const),
    });
    fc.assert(fc.property(termArb, (term) => expect(parseOrderBy([printOrderByTerm(term)])).toEqual([term])));
  });

  it("compiled SQL carries no user text: only placeholders, all numbered in order, one value each", async () => {
    await fc.assert(
      fc.asyncProperty(filterArb, fc.nat({ max: 5 }), async (ast, offset) => {
        const { sql, params } = await compileFilter(ast, { paramOffset: offset, resolveMetricTerm });
        // No literal can hide in text without a quote; comments and statement breaks cannot appear.
        for (const forbidden of ["'", '"', "`", ";", "--", "/*"]) expect(sql).not.toContain(forbidden);
        const placeholders = [...sql.matchAll(/\$(\d+)/g)].map((m) => Number(m[1]));
        expect(placeholders).toEqual(params.map((_, i) => offset + i + 1));
      }),
      { numRuns: 300 },
    );
  });
});
