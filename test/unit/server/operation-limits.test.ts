import { buildSchema, GraphQLInt, GraphQLNonNull, GraphQLObjectType, GraphQLSchema, parse } from "graphql";
import { StringColumn } from "../../../src/resolvers/types/column-scalars.js";
import { checkOperationLimits } from "../../../src/server/operation-limits.js";

const schema = buildSchema(`
  type Item { id: ID! children(first: Int): [Item!]! }
  type Query { items(first: Int, keys: [String!]): [Item!]! item(id: ID!): Item }
`);
const limits = { maxDepth: 4, maxComplexity: 1_000, maxAliases: 2, maxRootFields: 3, maxBodyBytes: 1 << 20, ratePerSecond: 0, rateBurst: 1 };

describe("operation limits (verdicts cached per parsed document)", () => {
  it("re-checks complexity when a page-size variable changes on the same document", () => {
    const doc = parse(`query($n: Int) { items(first: $n) { id children(first: $n) { id } } }`);
    expect(checkOperationLimits(schema, doc, undefined, { n: 10 }, limits)).toEqual([]);
    const refused = checkOperationLimits(schema, doc, undefined, { n: 100 }, limits);
    expect(refused[0]?.message).toMatch(/complexity \d+ exceeds the limit of 1000/);
    // Back to a small page on the same document object: allowed again (no stale verdict).
    expect(checkOperationLimits(schema, doc, undefined, { n: 10 }, limits)).toEqual([]);
  });

  it("weighs list variables by length, not content, and ignores strings", () => {
    const doc = parse(`query($keys: [String!], $id: ID!) { items(keys: $keys) { id children(first: 50) { id } } item(id: $id) { id } }`);
    expect(checkOperationLimits(schema, doc, undefined, { keys: ["a"], id: "x" }, limits)).toEqual([]);
    expect(checkOperationLimits(schema, doc, undefined, { keys: Array.from({ length: 40 }, (_, i) => `k${i}`), id: "y" }, limits)[0]?.extensions.code).toBe("QUERY_TOO_COMPLEX");
  });

  it("weighs a column scalar's list (logMetricColumns' keys) by its length too", () => {
    const result = new GraphQLObjectType({ name: "Result", fields: { accepted: { type: GraphQLInt } } });
    const ingest = new GraphQLSchema({
      query: new GraphQLObjectType({ name: "Query", fields: { ok: { type: GraphQLInt } } }),
      mutation: new GraphQLObjectType({ name: "Mutation", fields: { logColumns: { type: result, args: { keys: { type: new GraphQLNonNull(StringColumn) } } } } }),
    });
    const doc = parse(`mutation($keys: StringColumn!) { logColumns(keys: $keys) { accepted } }`);
    expect(checkOperationLimits(ingest, doc, undefined, { keys: Array.from({ length: 100 }, () => "k") }, limits)).toEqual([]);
    // 1 + ceil(20,000 / 10) = 2,001 > 1,000: the parsed column (a wrapper, not an array) is still counted.
    expect(checkOperationLimits(ingest, doc, undefined, { keys: Array.from({ length: 20_000 }, () => "k") }, limits)[0]?.extensions.code).toBe("QUERY_TOO_COMPLEX");
  });

  it("never lets a request with bad variables vouch for a later one of the same shape", () => {
    const doc = parse(`query($keys: [String!]) { items(keys: $keys) { id children(first: 50) { id } } }`);
    const nulls = Array.from({ length: 40 }, () => null);
    // Complexity cannot be measured with these variables (graphql's coercion refuses them later)...
    expect(checkOperationLimits(schema, doc, undefined, { keys: nulls }, limits)).toEqual([]);
    // ...and the same shape with good variables is measured, not waved through.
    const real = Array.from({ length: 40 }, (_, i) => `k${i}`);
    expect(checkOperationLimits(schema, doc, undefined, { keys: real }, limits)[0]?.extensions.code).toBe("QUERY_TOO_COMPLEX");
  });

  it("keys complexity on the declared variables only, so crafted extra names cannot collide", () => {
    const doc = parse(`query($n: Int) { items(first: $n) { id children(first: $n) { id } } }`);
    expect(checkOperationLimits(schema, doc, undefined, { n: 1, "z:s,n": 1000, 'n":[1000': 1 }, limits)).toEqual([]);
    expect(checkOperationLimits(schema, doc, undefined, { n: 1000, "z:s,n": 1, 'n":[1': 1 }, limits)[0]?.extensions.code).toBe("QUERY_TOO_COMPLEX");
  });

  it("still finds NUL characters in every request's variables, and in literals", () => {
    const doc = parse(`query($id: ID!) { item(id: $id) { id } }`);
    expect(checkOperationLimits(schema, doc, undefined, { id: "ok" }, limits)).toEqual([]);
    const nul = checkOperationLimits(schema, doc, undefined, { id: "a\u0000b" }, limits);
    expect(nul[0]?.extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "id" });
    const literal = parse(`{ item(id: "a\\u0000b") { id } }`);
    expect(checkOperationLimits(schema, literal, undefined, {}, limits)[0]?.message).toContain("NUL");
  });

  it("refuses depth, aliases and root fields by the document's own shape", () => {
    expect(checkOperationLimits(schema, parse(`{ items { children { children { children { children { id } } } } } }`), undefined, {}, limits)[0]?.message).toContain("depth 6");
    expect(checkOperationLimits(schema, parse(`{ a: item(id: 1) { id } b: item(id: 2) { id } c: item(id: 3) { id } }`), undefined, {}, limits)[0]?.message).toContain("3 aliases");
    const fourRoots = parse(`{ items { id } item(id: 1) { id } x: items { id } y: items { id } }`);
    expect(checkOperationLimits(schema, fourRoots, undefined, {}, { ...limits, maxAliases: 10 })[0]?.message).toContain("4 root fields");
    // The verdict depends on the limits too: with a larger limit the same document passes.
    expect(checkOperationLimits(schema, fourRoots, undefined, {}, { ...limits, maxAliases: 10, maxRootFields: 5 })).toEqual([]);
  });

  it("counts root fields and aliases through fragments: what runs, not how it is written", () => {
    const loose = { ...limits, maxAliases: 100, maxRootFields: 100 };
    // Root fields behind an inline fragment or a spread are root fields (previously: 1).
    const inline = parse(`{ ... on Query { a: items { id } b: items { id } c: items { id } d: items { id } } }`);
    expect(checkOperationLimits(schema, inline, undefined, {}, { ...loose, maxRootFields: 3 })[0]?.message).toContain("4 root fields");
    const spread = parse(`{ ...Roots } fragment Roots on Query { a: items { id } b: items { id } c: items { id } d: items { id } }`);
    expect(checkOperationLimits(schema, spread, undefined, {}, { ...loose, maxRootFields: 3 })[0]?.message).toContain("4 root fields");
    // A fragment's aliases count once per spread (previously: once per document).
    const reused = parse(`{ items { ...Pair } item(id: 1) { ...Pair } x: items { ...Pair } } fragment Pair on Item { p: id q: id }`);
    expect(checkOperationLimits(schema, reused, undefined, {}, { ...loose, maxAliases: 6 })[0]?.message).toContain("7 aliases");
    expect(checkOperationLimits(schema, reused, undefined, {}, { ...loose, maxAliases: 7 })).toEqual([]);
    // Nested spreads multiply without blowing up the count's own cost.
    const levels = Array.from({ length: 30 }, (_, i) => `fragment F${i} on Item { a: children { ...F${i + 1} } b: children { ...F${i + 1} } }`).join("\n");
    const deep = parse(`{ items { ...F0 } } ${levels} fragment F30 on Item { id }`);
    expect(checkOperationLimits(schema, deep, undefined, {}, { ...loose, maxDepth: 100 })[0]?.message).toMatch(/\d+ aliases exceed/);
    // The same at the root, where root fields are counted: 2^40 paths (walking them all would
    // outlast jest's timeout by years), counted by visiting each fragment once.
    const rootLevels = Array.from({ length: 40 }, (_, i) => `fragment R${i} on Query { ...R${i + 1} ...R${i + 1} }`).join("\n");
    expect(checkOperationLimits(schema, parse(`{ ...R0 } ${rootLevels} fragment R40 on Query { items { id } }`), undefined, {}, loose)).toEqual([]);
  });
});

describe("NUL characters in variables", () => {
  it("names the path of the first one, through lists and input objects", () => {
    const doc = parse(`query($keys: [String!]) { items(keys: $keys) { id } }`);
    const errors = checkOperationLimits(schema, doc, undefined, { keys: ["a", "b", "c\u0000"] }, limits);
    expect(errors[0]?.extensions.field).toBe("keys[2]");
    const nested = checkOperationLimits(schema, doc, undefined, { input: { points: [{ key: "ok" }, { key: "x\u0000" }] } }, limits);
    expect(nested[0]?.extensions.field).toBe("input.points[1].key");
    expect(checkOperationLimits(schema, doc, undefined, { keys: ["a", "b"], n: [1, 2, null] }, limits)).toEqual([]);
  });
});
