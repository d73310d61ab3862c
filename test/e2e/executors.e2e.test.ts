import { ok, sleep, startTestServer, type TestServer, waitFor } from "../helpers/test-server";
import { startExecutor, type TestExecutor } from "../helpers/executors";

/**
 * Executor bookkeeping: silent executors go OFFLINE, and OFFLINE ones are deleted after the
 * retention (every executor start registers a new one, so the list would otherwise only grow).
 * The server here marks an executor OFFLINE after 1 s and deletes it 4 s later.
 */
let server: TestServer;
const executors: TestExecutor[] = [];

beforeAll(async () => {
  server = await startTestServer({
    env: { MLGRAPH_EXECUTOR_OFFLINE_SECONDS: "1", MLGRAPH_EXECUTOR_RETENTION_SECONDS: "4", MLGRAPH_SCHEDULER_INTERVAL_MS: "200", MLGRAPH_LEASE_SECONDS: "30" },
  });
});
afterAll(async () => {
  await Promise.all(executors.map((e) => e.stop()));
  await server?.stop();
});

const REGISTER = `mutation($pool: String!) { registerExecutor(input: {pool: $pool, cpu: 1, memoryMb: 512}) { id status } }`;
const LIST = `query($pool: String, $status: String) { executors(pool: $pool, status: $status) { id status } }`;
const CLAIM = `mutation($id: ID!) { claimTask(executorId: $id, waitSeconds: 0) { taskRun { id } leaseToken } }`;


describe("executor retention", () => {
  it("marks a silent executor OFFLINE, deletes it after the retention keeping its tasks' history, and keeps executors still seen", async () => {
    const old = ok(await server.gql(REGISTER, { pool: "retention" })).registerExecutor;
    expect(old.status).toBe("ONLINE");
    ok(await server.gql(`mutation { createPipeline(input: {spec: {pipeline: {name: "retention", tasks: [{id: "only", command: ["true"], pool: "retention"}]}}}) { id } }`));
    const run = ok(await server.gql(`mutation { submitPipelineRun(input: {pipelineName: "retention"}) { id } }`)).submitPipelineRun;
    const claimed = ok(await server.gql(CLAIM, { id: old.id })).claimTask;
    ok(await server.gql(`mutation($id: ID!, $lease: String!) { completeTask(input: {taskRunId: $id, leaseToken: $lease, outcome: SUCCEEDED}) { status } }`, { id: claimed.taskRun.id, lease: claimed.leaseToken }));

    // Another executor that keeps claiming stays.
    const live = ok(await server.gql(REGISTER, { pool: "retention-live" })).registerExecutor;
    let keepAlive = true;
    const heartbeat = (async () => {
      while (keepAlive) {
        ok(await server.gql(CLAIM, { id: live.id }));
        await sleep(200);
      }
    })();
    try {
      await waitFor("the silent executor to be listed OFFLINE", async () =>
        ok(await server.gql(LIST, { pool: "retention", status: "OFFLINE" })).executors.some((e: { id: string }) => e.id === old.id),
      );
      await waitFor("the silent executor to be deleted", async () => ok(await server.gql(LIST, { pool: "retention" })).executors.length === 0);
      // Still registered: its claims never met NOT_FOUND (they would have failed the heartbeat
      // loop). It is listed ONLINE again by its next claim should a claim on a loaded machine
      // have come later than the 1-s offline timeout at this moment.
      await waitFor("the claiming executor to be listed ONLINE", async () =>
        ok(await server.gql(LIST, { status: "ONLINE" })).executors.some((e: { id: string }) => e.id === live.id),
      5_000);
    } finally {
      keepAlive = false;
      await heartbeat;
    }

    // The pipeline run keeps its task and attempt, only without the executor link.
    const read = ok(
      await server.gql(`query($id: ID!) { pipelineRun(id: $id) { status tasks { status executor { id } attempts { outcome executorId } } } }`, { id: run.id }),
    ).pipelineRun;
    expect(read.status).toBe("SUCCEEDED");
    expect(read.tasks).toEqual([{ status: "SUCCEEDED", executor: null, attempts: [{ outcome: "SUCCEEDED", executorId: null }] }]);
    // A claim under the deleted registration is told so (the agent then registers again).
    const gone = await server.gql(CLAIM, { id: old.id });
    expect(gone.errors?.[0].extensions).toMatchObject({ code: "NOT_FOUND", field: "executorId" });
    const bad = await server.gql(LIST, { status: "BUSY" });
    expect(bad.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "status" });
  });

  it("an executor agent deleted while it long-polls registers again and runs the task that woke it", async () => {
    // Its 5-s long polls leave it unseen for longer than this server's 1-s offline timeout.
    const agent = await startExecutor(server.url, ["--pool", "retention-agent"]);
    executors.push(agent);
    await waitFor("the agent's registration to be deleted", async () => !ok(await server.gql(LIST, { pool: "retention-agent" })).executors.some((e: { id: string }) => e.id === agent.id));
    ok(await server.gql(`mutation { createPipeline(input: {spec: {pipeline: {name: "retention-agent", tasks: [{id: "only", command: ["true"], pool: "retention-agent"}]}}}) { id } }`));
    const run = ok(await server.gql(`mutation { submitPipelineRun(input: {pipelineName: "retention-agent"}) { id } }`)).submitPipelineRun;
    const done = await waitFor("the pipeline run to succeed", async () => {
      const r = ok(await server.gql(`query($id: ID!) { pipelineRun(id: $id) { status tasks { attempts { executorId } } } }`, { id: run.id })).pipelineRun;
      return r.status === "SUCCEEDED" ? r : null;
    }, 30_000);
    const ranOn = done.tasks[0].attempts[0].executorId;
    expect(ranOn).toEqual(expect.any(String)); // its new registration (read well inside that one's 5 s)
    expect(ranOn).not.toBe(agent.id);
    expect(agent.output()).toContain("registering again");
  });
});
