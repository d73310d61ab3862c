import { ok, startTestServer, type TestServer } from "../helpers/test-server";

let server: TestServer;
let expA: string;
let expB: string;

const SEARCH = `query($e: [ID!], $f: String, $o: [String!], $first: Int, $after: String) {
  runs(experimentIds: $e, filter: $f, orderBy: $o, first: $first, after: $after) { edges { node { name } } pageInfo { hasNextPage endCursor } }
}`;

async function names(filter: string | null, orderBy?: string[], experimentIds = [expA, expB]): Promise<string[]> {
  const res = ok(await server.gql(SEARCH, { e: experimentIds, f: filter, o: orderBy, first: 100 }));
  return res.runs.edges.map((e: any) => e.node.name);
}

beforeAll(async () => {
  server = await startTestServer();
  expA = ok(await server.gql(`mutation { createExperiment(input: {name: "search-a"}) { id } }`)).createExperiment.id;
  expB = ok(await server.gql(`mutation { createExperiment(input: {name: "search-b"}) { id } }`)).createExperiment.id;
  const runs: [string, string, Record<string, string>, Record<string, string>, string][] = [
    ["r1", expA, { lr: "0.01", opt: "adam" }, { team: "nlp" }, "FINISHED"],
    ["r2", expA, { lr: "0.1", opt: "sgd" }, { team: "cv" }, "FINISHED"],
    ["r3", expB, { lr: "0.01" }, { team: "cv" }, "RUNNING"],
    ["r4", expB, { lr: "0.001", opt: "adam" }, {}, "FAILED"],
  ];
  let t = Date.parse("2025-01-01T00:00:00Z");
  for (const [name, experimentId, params, tags, status] of runs) {
    const run = ok(
      await server.gql(`mutation($i: CreateRunInput!) { createRun(input: $i) { id } }`, {
        i: {
          experimentId,
          name,
          startTime: new Date((t += 60_000)).toISOString(),
          params: Object.entries(params).map(([key, value]) => ({ key, value })),
          tags: Object.entries(tags).map(([key, value]) => ({ key, value })),
        },
      }),
    ).createRun;
    if (status !== "RUNNING") ok(await server.gql(`mutation($id: ID!, $s: RunStatus) { updateRun(input: {runId: $id, status: $s}) { id } }`, { id: run.id, s: status }));
  }
});
afterAll(async () => {
  await server?.stop();
});

describe("runs(filter:, orderBy:)", () => {
  it("filters on params, tags and attributes with AND, OR and parentheses", async () => {
    expect(await names(`params.lr = '0.01' and (tags.team = 'nlp' or attributes.status = 'RUNNING')`, ["attributes.start_time ASC"])).toEqual(["r1", "r3"]);
    expect(await names(`params.opt IN ('adam', 'sgd') and params.lr != '0.1'`, ["start_time ASC"])).toEqual(["r1", "r4"]);
    expect(await names(`tags.team LIKE 'c%'`, ["start_time ASC"])).toEqual(["r2", "r3"]);
    expect(await names(`attributes.status = 'FAILED'`)).toEqual(["r4"]);
    expect(await names(null, ["params.lr DESC", "start_time ASC"])).toEqual(["r2", "r1", "r3", "r4"]);
    expect(await names(`params.lr = '0.01'`, undefined, [expB])).toEqual(["r3"]);
  });

  it("pages through results in a stable order", async () => {
    const seen: string[] = [];
    let after: string | null = null;
    for (let i = 0; i < 10; i++) {
      const page: any = ok(await server.gql(SEARCH, { e: [expA, expB], f: null, o: ["params.opt ASC"], first: 1, after })).runs;
      seen.push(...page.edges.map((e: any) => e.node.name));
      if (!page.pageInfo.hasNextPage) break;
      after = page.pageInfo.endCursor;
    }
    expect(seen.sort()).toEqual(["r1", "r2", "r3", "r4"]);
  });

  it("pages by key: one run a page gives the one-page order under any ordering, nulls last", async () => {
    const orderings = [["params.opt ASC"], ["params.opt DESC", "start_time DESC"], ["attributes.end_time DESC"], ["name ASC"], ["tags.team ASC", "params.lr DESC"], []];
    for (const o of orderings) {
      const walked: string[] = [];
      for (let after: string | null = null, more = true; more; ) {
        const page: any = ok(await server.gql(SEARCH, { e: [expA, expB], f: null, o, first: 1, after })).runs;
        walked.push(...page.edges.map((e: any) => e.node.name));
        [more, after] = [page.pageInfo.hasNextPage, page.pageInfo.endCursor];
        expect(walked.length).toBeLessThanOrEqual(4);
      }
      expect(walked).toEqual(await names(null, o.length ? o : undefined));
    }
  });

  it("repeats no run when one starts between two pages (newest first), and refuses a cursor from another ordering", async () => {
    const exp = ok(await server.gql(`mutation { createExperiment(input: {name: "search-keyset"}) { id } }`)).createExperiment.id;
    const create = async (name: string) => ok(await server.gql(`mutation($i: CreateRunInput!) { createRun(input: $i) { id } }`, { i: { experimentId: exp, name } })).createRun.id;
    for (const name of ["k1", "k2", "k3"]) await create(name);
    const first: any = ok(await server.gql(SEARCH, { e: [exp], first: 2 })).runs;
    expect(first.edges.map((e: any) => e.node.name)).toEqual(["k3", "k2"]);
    await create("k4");
    // Previously (offsets) this page was ["k2"]: k4 pushed every run down by one.
    const second: any = ok(await server.gql(SEARCH, { e: [exp], first: 2, after: first.pageInfo.endCursor })).runs;
    expect(second.edges.map((e: any) => e.node.name)).toEqual(["k1"]);
    expect(second.pageInfo.hasNextPage).toBe(false);

    const otherOrder = await server.gql(SEARCH, { e: [exp], o: ["name ASC"], first: 2, after: first.pageInfo.endCursor });
    expect(otherOrder.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "after" });
    expect(otherOrder.errors?.[0].message).toMatch(/another orderBy/);
    // Experiment.runs: a cursor continues its own experiment's runs; another experiment's page is refused, not cut short.
    const PER_EXPERIMENT = `query($after: String) { a: experiment(id: "${exp}") { runs(first: 2, after: $after) { edges { node { name } } } } b: experiment(id: "${expA}") { runs(first: 2, after: $after) { edges { node { name } } } } }`;
    const perExperiment = await server.gql(PER_EXPERIMENT, { after: first.pageInfo.endCursor });
    expect(perExperiment.data.a.runs.edges.map((e: any) => e.node.name)).toEqual(["k1"]);
    expect(perExperiment.data.b).toBeNull();
    expect(perExperiment.errors?.[0]).toMatchObject({ path: ["b", "runs"], extensions: { code: "BAD_USER_INPUT", field: "after" } });
    const key = Buffer.from(first.pageInfo.endCursor, "base64url").toString();
    for (const forged of [key.replace(/\[.*\]$/, '["x", "y"]'), key.replace(/\[.*\]$/, "[1]"), `${key}x`, "k:elsewhere"]) {
      const answer = await server.gql(SEARCH, { e: [exp], first: 2, after: Buffer.from(forged).toString("base64url") });
      expect(answer.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "after" });
    }
  });

  it("reports malformed filters with the position", async () => {
    const res = await server.gql(SEARCH, { e: [expA], f: "params.lr = " });
    expect(res.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "filter" });
    expect(res.errors?.[0].message).toMatch(/expected a value at position 13/);
    const unbalanced = await server.gql(SEARCH, { e: [expA], f: "(params.lr = '1'" });
    expect(unbalanced.errors?.[0].message).toMatch(/position/);
    const badOrder = await server.gql(SEARCH, { e: [expA], o: ["params.lr SIDEWAYS"] });
    expect(badOrder.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "orderBy[0]" });
  });

  it("treats injection attempts as plain values and changes nothing", async () => {
    expect(await names(`params.lr = '1'' or 1=1 --'`)).toEqual([]);
    const dropped = await server.gql(SEARCH, { e: [expA], f: `params.lr = '0.01'; DROP TABLE runs; --'` });
    expect(dropped.errors?.[0].extensions?.code).toBe("BAD_USER_INPUT");
    expect(await names(`tags.team = 'nlp'`)).toEqual(["r1"]);
    expect((await names(null)).length).toBe(4);
  });
});
