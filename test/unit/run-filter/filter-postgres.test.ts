import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { Client } from "pg";
import {
  compileFilter,
  type ComparisonNode,
  type FilterNode,
  compileOrderBy,
  parseFilter,
  parseOrderBy,
  printFilter,
  type MetricOperator,
  type MetricTerm,
} from "../../../src/services/run-filter/index.js";

/**
 * Runs the compiled SQL on a real PostgreSQL (a throwaway database on TEST_DATABASE_URL) to prove
 * it executes and selects the right runs. Without TEST_DATABASE_URL these tests are reported as
 * SKIPPED with a loud warning (the e2e run-search tests still cover the SQL on embedded
 * PostgreSQL); CI sets MLGRAPH_REQUIRE_ALL_SERVICES, where a missing service is a failure.
 */

const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL;
if (!TEST_DATABASE_URL) {
  if (process.env.MLGRAPH_REQUIRE_ALL_SERVICES) throw new Error("filter-postgres: TEST_DATABASE_URL is required in CI");
  console.warn("filter-postgres: SKIPPED: TEST_DATABASE_URL is not set (no external PostgreSQL)");
}
const ADMIN = { connectionString: TEST_DATABASE_URL, connectionTimeoutMillis: 3000 };
const DATABASE = `mlgraph_filter_test_${randomBytes(6).toString("hex")}`;

const E1 = "e0000000-0000-4000-8000-000000000001";
const E2 = "e0000000-0000-4000-8000-000000000002";
const R1 = "00000000-0000-4000-8000-000000000001";
const R2 = "00000000-0000-4000-8000-000000000002";
const R3 = "00000000-0000-4000-8000-000000000003";
const R4 = "00000000-0000-4000-8000-000000000004";
const R5 = "00000000-0000-4000-8000-000000000005";
const NAMES: Record<string, string> = { [R1]: "r1", [R2]: "r2", [R3]: "r3", [R4]: "r4", [R5]: "r5" };

// Last metric values, as the metric store would hold them.
const METRICS: Record<string, Record<string, number>> = {
  val_loss: { [R1]: 0.2, [R2]: 0.5, [R4]: 0.3 },
  "acc 1": { [R1]: 0.9 },
};

const compare = (a: number, op: MetricOperator, b: number): boolean =>
  ({ "=": a === b, "!=": a !== b, "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b })[op];
const resolveMetricTerm = async (term: MetricTerm): Promise<string[]> =>
  Object.entries(METRICS[term.key] ?? {})
    .filter(([, v]) => compare(v, term.op, term.value))
    .map(([id]) => id);
const resolveMetricLastValues = async (key: string): Promise<Map<string, number>> => new Map(Object.entries(METRICS[key] ?? {}));

let admin: Client | undefined;
let db: Client | undefined;

beforeAll(async () => {
  if (!TEST_DATABASE_URL) return;
  const probe = new Client(ADMIN);
  await probe.connect();
  admin = probe;
  await admin.query(`CREATE DATABASE ${DATABASE}`);
  const dbUrl = new URL(TEST_DATABASE_URL);
  dbUrl.pathname = `/${DATABASE}`;
  db = new Client({ connectionString: dbUrl.toString() });
  await db.connect();
  await db.query(`
    CREATE TABLE runs (id uuid PRIMARY KEY, experiment_id uuid NOT NULL, name text, status text NOT NULL,
                       start_time timestamptz, end_time timestamptz, deleted_at timestamptz);
    CREATE TABLE run_params (run_id uuid NOT NULL REFERENCES runs(id), key text NOT NULL, value text NOT NULL, PRIMARY KEY (run_id, key));
    CREATE TABLE run_tags (run_id uuid NOT NULL REFERENCES runs(id), key text NOT NULL, value text NOT NULL, PRIMARY KEY (run_id, key));
  `);
  await db.query(
    `INSERT INTO runs VALUES
      ($1, $6, 'bert-base',  'FINISHED', '2024-01-01T00:00:00.000Z', '2024-01-01T01:00:00.000Z', NULL),
      ($2, $6, 'bert-large', 'FINISHED', '2024-01-02T00:00:00.000Z', '2024-01-02T05:00:00.000Z', NULL),
      ($3, $7, 'ResNet',     'RUNNING',  '2024-01-03T00:00:00.000Z', NULL, NULL),
      ($4, $7, 'evil',       'FAILED',   '2024-01-04T00:00:00.123Z', '2024-01-04T00:00:01.000Z', NULL),
      ($5, $7, 'gone',       'FINISHED', '2024-01-05T00:00:00.000Z', NULL, now())`,
    [R1, R2, R3, R4, R5, E1, E2],
  );
  await db.query(
    `INSERT INTO run_params VALUES ($1, 'lr', '0.01'), ($1, 'opt', 'adam'), ($2, 'lr', '0.001'), ($2, 'opt', 'sgd'),
                                   ($3, 'lr', '0.01'), ($4, 'x', '1'' or 1=1 --'), ($5, 'lr', '0.01')`,
    [R1, R2, R3, R4, R5],
  );
  await db.query(
    `INSERT INTO run_tags VALUES ($1, 'team', 'nlp'), ($1, 'my key', 'x'), ($2, 'team', 'vision'), ($3, 'team', 'it''s')`,
    [R1, R2, R4],
  );
});

afterAll(async () => {
  await db?.end();
  if (admin !== undefined) {
    await admin.query(`DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`);
    await admin.end();
  }
});

// The seeded data again, for the reference evaluator of the differential test below.
interface SeedRun {
  id: string;
  experimentId: string;
  name: string;
  status: string;
  start: number;
  end: number | null;
  params: Record<string, string>;
  tags: Record<string, string>;
}
const SEED: SeedRun[] = [
  { id: R1, experimentId: E1, name: "bert-base", status: "FINISHED", start: Date.parse("2024-01-01T00:00:00.000Z"), end: Date.parse("2024-01-01T01:00:00.000Z"), params: { lr: "0.01", opt: "adam" }, tags: { team: "nlp", "my key": "x" } },
  { id: R2, experimentId: E1, name: "bert-large", status: "FINISHED", start: Date.parse("2024-01-02T00:00:00.000Z"), end: Date.parse("2024-01-02T05:00:00.000Z"), params: { lr: "0.001", opt: "sgd" }, tags: { team: "vision" } },
  { id: R3, experimentId: E2, name: "ResNet", status: "RUNNING", start: Date.parse("2024-01-03T00:00:00.000Z"), end: null, params: { lr: "0.01" }, tags: {} },
  { id: R4, experimentId: E2, name: "evil", status: "FAILED", start: Date.parse("2024-01-04T00:00:00.123Z"), end: Date.parse("2024-01-04T00:00:01.000Z"), params: { x: "1' or 1=1 --" }, tags: { team: "it's" } },
];

/** SQL LIKE without escapes (the generator never produces a backslash). */
function like(value: string, pattern: string): boolean {
  const memo = new Map<string, boolean>();
  const match = (i: number, j: number): boolean => {
    const key = `${i},${j}`;
    const known = memo.get(key);
    if (known !== undefined) return known;
    let result: boolean;
    if (j === pattern.length) result = i === value.length;
    else if (pattern[j] === "%") result = match(i, j + 1) || (i < value.length && match(i + 1, j));
    else result = i < value.length && (pattern[j] === "_" || pattern[j] === value[i]) && match(i + 1, j + 1);
    memo.set(key, result);
    return result;
  };
  return match(0, 0);
}

function holds(actual: string | number | null | undefined, op: ComparisonNode["op"], expected: ComparisonNode["value"]): boolean {
  if (actual === null || actual === undefined) return false;
  switch (op) {
    case "IN":
      return (expected as string[]).includes(actual as string);
    case "NOT IN":
      return !(expected as string[]).includes(actual as string);
    case "LIKE":
      return like(actual as string, expected as string);
    case "ILIKE":
      return like((actual as string).toLowerCase(), (expected as string).toLowerCase());
    default: {
      const b = typeof actual === "number" && typeof expected === "string" ? Date.parse(expected) : (expected as string | number);
      return compare(actual as never, op, b as never);
    }
  }
}

function evaluate(node: FilterNode, run: SeedRun): boolean {
  if (node.kind === "and") return node.operands.every((o) => evaluate(o, run));
  if (node.kind === "or") return node.operands.some((o) => evaluate(o, run));
  const actual =
    node.entity === "params" ? run.params[node.key]
    : node.entity === "tags" ? run.tags[node.key]
    : node.entity === "metrics" ? METRICS[node.key]?.[run.id]
    : { status: run.status, name: run.name, start_time: run.start, end_time: run.end, run_id: run.id, experiment_id: run.experimentId }[node.key];
  return holds(actual, node.op, node.value);
}

/** Runs a search the way the runs service will: scope, soft-delete, filter, order. */
async function search(filter: string, orderBy: string[] = []): Promise<string[] | undefined> {
  if (db === undefined) return undefined;
  const scope = [[E1, E2]];
  const where = await compileFilter(parseFilter(filter), { paramOffset: scope.length, resolveMetricTerm });
  const order = await compileOrderBy(parseOrderBy(orderBy), {
    paramOffset: scope.length + where.params.length,
    resolveMetricLastValues,
  });
  const sql = `SELECT r.id FROM runs r ${order.joins.join(" ")}
               WHERE r.experiment_id = ANY($1::uuid[]) AND r.deleted_at IS NULL AND ${where.sql}
               ORDER BY ${order.orderBy}`;
  const result = await db.query<{ id: string }>(sql, [...scope, ...where.params, ...order.params]);
  return result.rows.map((row) => NAMES[row.id]);
}

const cases: [string, string[]][] = [
  ["", ["r1", "r2", "r3", "r4"]],
  ["params.lr = '0.01'", ["r1", "r3"]],
  ["params.lr = '0.01' and (tags.team = 'nlp' or attributes.status = 'RUNNING')", ["r1", "r3"]],
  ["params.lr = '0.01' and tags.team = 'nlp' or attributes.status = 'RUNNING'", ["r1", "r3"]],
  ["params.lr != '0.01'", ["r2"]],
  ["params.opt IN ('adam', 'sgd')", ["r1", "r2"]],
  ["params.opt NOT IN ('adam')", ["r2"]],
  ["tags.team LIKE '%i%'", ["r2", "r4"]],
  ["tags.team = 'it''s'", ["r4"]],
  ["tags.`my key` = 'x'", ["r1"]],
  ["run_name ILIKE 'BERT%'", ["r1", "r2"]],
  ["run_name LIKE 'BERT%'", []],
  ["status != 'FINISHED'", ["r3", "r4"]],
  ["metrics.val_loss < 0.3", ["r1"]],
  ["metrics.val_loss <= 0.3 and params.x = '1'' or 1=1 --'", ["r4"]],
  ["metrics.val_loss < 0.3 or status = 'FAILED'", ["r1", "r4"]],
  ["metrics.unknown > 0", []],
  ["params.x = '1'' or 1=1 --'", ["r4"]],
  ["params.lr = '1'' OR ''1''=''1'", []],
  ["attributes.start_time >= 1704153600000", ["r2", "r3", "r4"]],
  ["attributes.start_time = 1704326400123", ["r4"]],
  ["end_time < '2024-01-02'", ["r1"]],
  [`run_id IN ('${R1}', '${R3}', '${R5}')`, ["r1", "r3"]],
  [`experiment_id = '${E2}'`, ["r3", "r4"]],
  [`experiment_id != '${E2}' and run_id NOT IN ('${R2}')`, ["r1"]],
];

(TEST_DATABASE_URL ? describe : describe.skip)("compiled filters on PostgreSQL", () => {
  it.each(cases)("%s", async (filter, expected) => {
    const rows = await search(filter, ["run_id"]);
    expect(rows).toEqual(expected);
  });

  it.each<[string[], string[]]>([
    [["metrics.val_loss DESC"], ["r2", "r4", "r1", "r3"]],
    [["metrics.val_loss ASC"], ["r1", "r4", "r2", "r3"]],
    [["params.lr ASC"], ["r2", "r1", "r3", "r4"]],
    [["params.lr DESC"], ["r1", "r3", "r2", "r4"]],
    [["start_time DESC"], ["r4", "r3", "r2", "r1"]],
    [["end_time DESC"], ["r4", "r2", "r1", "r3"]],
    [["status", "metrics.`acc 1` DESC"], ["r4", "r1", "r2", "r3"]],
    [["tags.team", "run_name DESC"], ["r4", "r1", "r2", "r3"]],
  ])("orderBy %j", async (orderBy, expected) => {
    const rows = await search("", orderBy);
    expect(rows).toEqual(expected);
  });

  it("agrees with a reference evaluator on random filters (differential)", async () => {
    const text = fc.constantFrom("0.01", "0.001", "adam", "sgd", "nlp", "vision", "x", "it's", "1' or 1=1 --", "FINISHED", "RUNNING", "bert-base", "ResNet", "");
    const pattern = fc.array(fc.constantFrom("%", "_", "0", "1", ".", "a", "s", "n", "B", "e", "'"), { maxLength: 5 }).map((cs) => cs.join(""));
    const stringTerm = (entity: ComparisonNode["entity"], key: fc.Arbitrary<string>): fc.Arbitrary<ComparisonNode> =>
      fc.oneof(
        fc.record({ kind: fc.constant("comparison" as const), entity: fc.constant(entity), key, op: fc.constantFrom("=" as const, "!=" as const), value: text }),
        fc.record({ kind: fc.constant("comparison" as const), entity: fc.constant(entity), key, op: fc.constantFrom("LIKE" as const, "ILIKE" as const), value: pattern }),
        fc.record({ kind: fc.constant("comparison" as const), entity: fc.constant(entity), key, op: fc.constantFrom("IN" as const, "NOT IN" as const), value: fc.array(text, { minLength: 1, maxLength: 3 }) }),
      );
    const term: fc.Arbitrary<ComparisonNode> = fc.oneof(
      stringTerm("params", fc.constantFrom("lr", "opt", "x", "missing")),
      stringTerm("tags", fc.constantFrom("team", "my key")),
      stringTerm("attributes", fc.constantFrom("status", "name")),
      fc.record({
        kind: fc.constant("comparison" as const),
        entity: fc.constant("metrics" as const),
        key: fc.constantFrom("val_loss", "acc 1", "missing"),
        op: fc.constantFrom("=" as const, "!=" as const, "<" as const, ">" as const, "<=" as const, ">=" as const),
        value: fc.constantFrom(0, 0.2, 0.25, 0.3, 0.5, 0.9, 1),
      }),
      fc.record({
        kind: fc.constant("comparison" as const),
        entity: fc.constant("attributes" as const),
        key: fc.constantFrom("start_time", "end_time"),
        op: fc.constantFrom("=" as const, "!=" as const, "<" as const, ">" as const, "<=" as const, ">=" as const),
        value: fc.oneof(
          fc.constantFrom(...SEED.map((r) => r.start), Date.parse("2024-01-02T05:00:00.000Z")),
          fc.constantFrom("2024-01-02", "2024-01-03T00:00:00Z", "2024-01-04T00:00:00.123Z"),
        ),
      }),
      fc.record({
        kind: fc.constant("comparison" as const),
        entity: fc.constant("attributes" as const),
        key: fc.constantFrom("run_id" as const, "experiment_id" as const),
        op: fc.constantFrom("IN" as const, "NOT IN" as const),
        value: fc.array(fc.constantFrom(R1, R2, R3, E1, E2), { minLength: 1, maxLength: 3 }),
      }),
    );
    const filter: fc.Arbitrary<FilterNode> = fc.letrec<{ node: FilterNode }>((tie) => ({
      node: fc.oneof(
        { depthSize: "small" },
        term,
        fc.record({ kind: fc.constantFrom("and" as const, "or" as const), operands: fc.array(tie("node"), { minLength: 2, maxLength: 3 }) }),
      ),
    })).node;
    await fc.assert(
      fc.asyncProperty(filter, async (ast) => {
        const rows = await search(printFilter(ast), ["run_id"]);
        const expected = SEED.filter((run) => evaluate(ast, run)).map((run) => NAMES[run.id]);
        expect(rows).toEqual(expected);
      }),
      { numRuns: 300 },
    );
  });

  it("filters and orders together with continuous parameter numbering", async () => {
    const rows = await search("metrics.val_loss > 0 and params.lr IN ('0.01', '0.001')", ["metrics.val_loss DESC", "params.opt"]);
    expect(rows).toEqual(["r2", "r1"]);
  });
});
