import fs from "node:fs";
import path from "node:path";
import fc from "fast-check";
import {
  buildSchema,
  getNamedType,
  isEnumType,
  isInputObjectType,
  isListType,
  isNonNullType,
  isObjectType,
  isScalarType,
  type GraphQLField,
  type GraphQLInputType,
  type GraphQLObjectType,
  type GraphQLSchema,
} from "graphql";
import { startTestServer, type TestServer } from "../helpers/test-server";

/**
 * Property tests against a live server: generated GraphQL documents and variables — valid,
 * mutated and hostile — never produce a 5xx, a crash, an unhandled rejection or an error without
 * a code, and never an INTERNAL_SERVER_ERROR (which would mean an unmapped failure).
 */
const schema: GraphQLSchema = buildSchema(fs.readFileSync(path.resolve(__dirname, "../../schema/schema.graphql"), "utf8"));

const hostileString = fc.oneof(
  fc.string(),
  fc.constantFrom("", "../../etc/passwd", "' or 1=1 --", "\u0000", "a".repeat(10_000), "💥".repeat(100), "00000000-0000-4000-8000-000000000000", "NaN", "-1", "{{x}}", "<script>"),
);
const hostileNumber = fc.oneof(fc.integer(), fc.constantFrom(0, -1, 2 ** 31, -(2 ** 53), 1e308), fc.double());

function valueFor(type: GraphQLInputType, depth: number): fc.Arbitrary<unknown> {
  if (isNonNullType(type)) return valueFor(type.ofType, depth);
  if (isListType(type)) return depth > 3 ? fc.constant([]) : fc.array(valueFor(type.ofType, depth + 1), { maxLength: 3 });
  if (isEnumType(type)) return fc.oneof(fc.constantFrom(...type.getValues().map((v) => v.value)), fc.constant("NOT_AN_ENUM"));
  if (isInputObjectType(type)) {
    if (depth > 3) return fc.constant({});
    const fields = Object.values(type.getFields());
    return fc.record(Object.fromEntries(fields.map((f) => [f.name, valueFor(f.type, depth + 1)])), { requiredKeys: fields.filter((f) => isNonNullType(f.type)).map((f) => f.name) });
  }
  const name = getNamedType(type).name;
  if (name === "Int" || name === "SafeInt") return fc.oneof(hostileNumber, fc.constant("1"));
  if (name === "Float") return hostileNumber;
  if (name === "Boolean") return fc.oneof(fc.boolean(), fc.constant("true"));
  if (name === "DateTime") return fc.oneof(fc.date({ noInvalidDate: true }).map((d) => d.toISOString()), hostileString);
  if (name === "JSON") return fc.oneof(fc.jsonValue(), hostileString);
  return hostileString;
}

function selectionFor(type: GraphQLObjectType, depth: number): string {
  const fields = Object.values(type.getFields()).filter((f) => f.args.every((a) => !isNonNullType(a.type)));
  const parts = fields.slice(0, 6).map((f) => {
    const named = getNamedType(f.type);
    if (isScalarType(named) || isEnumType(named)) return f.name;
    if (isObjectType(named) && depth < 2) return `${f.name} { ${selectionFor(named, depth + 1)} }`;
    return null;
  });
  return ["__typename", ...parts.filter(Boolean)].join(" ");
}

function operationArb(kind: "query" | "mutation", root: GraphQLObjectType) {
  const fields = Object.values(root.getFields());
  return fc.constantFrom(...fields).chain((field: GraphQLField<unknown, unknown>) =>
    fc.record(Object.fromEntries(field.args.map((a) => [a.name, valueFor(a.type, 0)])), { requiredKeys: [] }).map((variables) => {
      const defs = field.args.map((a) => `$${a.name}: ${a.type.toString()}`);
      const args = field.args.map((a) => `${a.name}: $${a.name}`);
      const named = getNamedType(field.type);
      const selection = isObjectType(named) ? ` { ${selectionFor(named, 0)} }` : "";
      return { query: `${kind}${defs.length ? `(${defs.join(", ")})` : ""} { ${field.name}${args.length ? `(${args.join(", ")})` : ""}${selection} }`, variables };
    }),
  );
}

/** Raw garbage and near-miss documents. */
const garbageArb = fc.oneof(
  fc.string().map((q) => ({ query: q, variables: {} })),
  fc.constantFrom(
    { query: "{ experiments(first: -1) { totalCount } }", variables: {} },
    { query: "{ experiments(first: 99999999999) { totalCount } }", variables: {} },
    { query: "query { " + "experiment(name: \"x\") { ".repeat(50), variables: {} },
    { query: "fragment A on Query { ...B } fragment B on Query { ...A } { ...A }", variables: {} },
    { query: "{ __schema { types { name fields { name } } } }", variables: {} },
    { query: "mutation { createExperiment(input: null) { id } }", variables: {} },
  ),
);

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server?.stop();
});

async function send(body: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(server.url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = { nonJson: text.slice(0, 200) };
  }
  return { status: res.status, json };
}

function checkAnswer(status: number, json: any): void {
  expect(status).toBeLessThan(500);
  for (const error of json.errors ?? []) {
    expect(typeof error.extensions?.code).toBe("string");
    expect(error.extensions.code).not.toBe("INTERNAL_SERVER_ERROR");
    expect(JSON.stringify(error)).not.toMatch(/stacktrace|\n\s+at /);
  }
}

describe("fuzzing the live API", () => {
  it("valid-shaped operations with hostile arguments never fail the server", async () => {
    const ops = fc.oneof(operationArb("query", schema.getQueryType()!), operationArb("mutation", schema.getMutationType()!));
    await fc.assert(
      fc.asyncProperty(ops, async (op) => {
        const { status, json } = await send(op);
        checkAnswer(status, json);
      }),
      { numRuns: 400 },
    );
  });

  it("garbage documents are answered with coded errors", async () => {
    await fc.assert(
      fc.asyncProperty(garbageArb, async (op) => {
        const { status, json } = await send(op);
        checkAnswer(status, json);
        if (json.errors === undefined && json.data === undefined) expect(status).toBe(400);
      }),
      { numRuns: 150 },
    );
  });

  it("the server is still healthy and logged no crash or unhandled rejection", async () => {
    const health = await fetch(server.url.replace(/\/graphql$/, "/healthz"));
    expect(health.status).toBe(200);
    expect(server.process.exitCode).toBeNull();
    expect(server.output()).not.toMatch(/unhandled|uncaught|FATAL/i);
    expect(server.output()).not.toMatch(/"level":50.*unexpected error in resolver/);
  });
});
