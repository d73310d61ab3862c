import crypto from "node:crypto";
import fs from "node:fs";
import { collect, createTestDatabase, ok, sleep, startTestServer, type TestServer, untilSubscribedOnRedis, waitFor } from "../helpers/test-server";

/**
 * Two API server processes on one PostgreSQL database and one Redis, each with its own chdb data
 * dir (chdb is per process): the scale-out column of the design. The scheduler runs on exactly one
 * of them (advisory lock), claims through both never hand a task out twice, events cross replicas,
 * and a kill -9'd leader is replaced by the survivor.
 */

const HAVE_SERVICES = !!process.env.TEST_DATABASE_URL && !!process.env.REDIS_URL;
if (!HAVE_SERVICES) {
  const message = "replicas: SKIPPING: two replicas need a shared PostgreSQL (TEST_DATABASE_URL) and Redis (REDIS_URL), which this environment lacks";
  if (process.env.MLGRAPH_REQUIRE_ALL_SERVICES) throw new Error(`${message} (MLGRAPH_REQUIRE_ALL_SERVICES is set)`);
  console.warn(message);
}

const TASKS = 60;
const EXECUTORS_PER_REPLICA = 12;

/** A sample's value from Prometheus text, or undefined when absent. */
function sample(text: string, name: string, labels = ""): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(labels ? `${name}{${labels}} ` : `${name} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

async function scrape(server: TestServer): Promise<string> {
  const res = await fetch(server.url.replace(/\/graphql$/, "/metrics"));
  expect(res.status).toBe(200);
  return res.text();
}

async function leaderFlags(servers: TestServer[]): Promise<number[]> {
  return Promise.all(servers.map(async (s) => sample(await scrape(s), "mlgraph_scheduler_leader") ?? NaN));
}


const CREATE = `mutation($spec: JSON!) { createPipeline(input: {spec: $spec}) { id } }`;
const SUBMIT = `mutation($name: String!) { submitPipelineRun(input: {pipelineName: $name}) { id } }`;
const REGISTER = `mutation($pool: String!) { registerExecutor(input: {pool: $pool, cpu: 4, memoryMb: 8192}) { id } }`;
const CLAIM = `mutation($id: ID!) { claimTask(executorId: $id, waitSeconds: 1) { taskRun { id } leaseToken } }`;
const COMPLETE = `mutation($id: ID!, $lease: String!) { completeTask(input: {taskRunId: $id, leaseToken: $lease, outcome: SUCCEEDED}) { status } }`;

(HAVE_SERVICES ? describe : describe.skip)("two replicas on one PostgreSQL and Redis", () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let a: TestServer;
  let b: TestServer;

  beforeAll(async () => {
    db = await createTestDatabase();
    const redis = { prefix: `mlgraph-replicas-${crypto.randomBytes(4).toString("hex")}:` };
    // A fast scheduler so a new leader takes over within a fraction of a second; short leases so a lost one is reaped soon.
    const env = { MLGRAPH_SCHEDULER_INTERVAL_MS: "200", MLGRAPH_LEASE_SECONDS: "3" };
    // One after the other: the first runs the migrations, the second finds them applied.
    a = await startTestServer({ databaseUrl: db!.url, redis, env });
    b = await startTestServer({ databaseUrl: db!.url, redis, env });
  });
  afterAll(async () => {
    for (const s of [a, b]) {
      if (!s) continue;
      if (s.process.exitCode === null && s.process.signalCode === null) await s.stop();
      else fs.rmSync(s.dataDir, { recursive: true, force: true }); // kill -9 left its data dir behind
    }
    await db?.drop();
  });

  it("runs the scheduler on exactly one replica at every observation", async () => {
    // The second replica's first tick may still be pending right after start; then the count is stable.
    await waitFor("one leader", async () => (await leaderFlags([a, b])).reduce((x, y) => x + y, 0) === 1, 10_000);
    const leaders = new Set<number>();
    for (let i = 0; i < 8; i++) {
      const flags = await leaderFlags([a, b]);
      expect([...flags].sort()).toEqual([0, 1]);
      leaders.add(flags.indexOf(1));
      await sleep(150);
    }
    // Nobody resigns while healthy: the same replica leads throughout.
    expect(leaders.size).toBe(1);
  });

  it("never hands one task to two executors claiming through both replicas, and B's subscribers see A's writes", async () => {
    ok(await a.gql(CREATE, { spec: { pipeline: { name: "replicas", tasks: Array.from({ length: TASKS }, (_, i) => ({ id: `t${i}`, command: ["true"], pool: "replicas" })) } } }));
    const executors: string[] = [];
    for (const server of [a, b]) {
      for (let i = 0; i < EXECUTORS_PER_REPLICA; i++) executors.push(ok(await server.gql(REGISTER, { pool: "replicas" })).registerExecutor.id);
    }
    const pipelineRunId = ok(await a.gql(SUBMIT, { name: "replicas" })).submitPipelineRun.id as string;

    // Both replicas read the same queue: the gauges agree.
    for (const server of [a, b]) {
      const text = await scrape(server);
      expect(sample(text, "mlgraph_task_queue_depth", `pool="replicas"`)).toBe(TASKS);
      expect(sample(text, "mlgraph_executors_online", `pool="replicas"`)).toBe(2 * EXECUTORS_PER_REPLICA);
    }

    // Every task's final state, as seen by a subscriber on B (half the completions go through A).
    const onB = collect<{ taskRunUpdated: { id: string; status: string } }>(
      b.ws(),
      `subscription($id: ID!) { taskRunUpdated(pipelineRunId: $id) { id status } }`,
      { id: pipelineRunId },
      10_000,
      60_000,
    );
    // Open on B, and on Redis (A's events reach B through it), before the first claim.
    await untilSubscribedOnRedis(b, `pipelines:run:${pipelineRunId}:tasks`);

    const claimedBy = new Map<string, string[]>();
    const completedVia = new Map<string, TestServer>();
    const deadline = Date.now() + 40_000;
    // Each round, every executor claims through A and through B at the same time; claimed tasks
    // are completed right away through the replica that handed them out.
    while (completedVia.size < TASKS && Date.now() < deadline) {
      const attempts = executors.flatMap((id) => [a, b].map((via) => ({ id, via })));
      await Promise.all(
        attempts.map(async ({ id, via }) => {
          const assignment = ok(await via.gql(CLAIM, { id })).claimTask;
          if (!assignment) return;
          const taskId = assignment.taskRun.id as string;
          claimedBy.set(taskId, [...(claimedBy.get(taskId) ?? []), `${id}@${via === a ? "A" : "B"}`]);
          expect(ok(await via.gql(COMPLETE, { id: taskId, lease: assignment.leaseToken })).completeTask.status).toBe("SUCCEEDED");
          completedVia.set(taskId, via);
        }),
      );
    }
    const twice = [...claimedBy].filter(([, by]) => by.length > 1);
    expect(twice).toEqual([]);
    expect(claimedBy.size).toBe(TASKS);
    const viaA = [...completedVia].filter(([, via]) => via === a).map(([id]) => id);
    expect(viaA.length).toBeGreaterThan(0);
    expect(viaA.length).toBeLessThan(TASKS);

    const run = ok(await b.gql(`query($id: ID!) { pipelineRun(id: $id) { status tasks { id status } } }`, { id: pipelineRunId })).pipelineRun;
    expect(run.status).toBe("SUCCEEDED");
    expect(new Set(run.tasks.map((t: { id: string }) => t.id))).toEqual(new Set(claimedBy.keys()));

    const succeededOnB = () => new Set(onB.events.filter((e) => e.data?.taskRunUpdated.status === "SUCCEEDED").map((e) => e.data!.taskRunUpdated.id));
    await waitFor("B's subscriber to see every completion", async () => succeededOnB().size === TASKS, 15_000);
    for (const id of viaA) expect(succeededOnB().has(id)).toBe(true);
    onB.unsubscribe();
    expect(sample(await scrape(b), "mlgraph_task_queue_depth", `pool="replicas"`)).toBe(0);

    // runUpdated too: a run finished through A reaches a subscriber on B.
    const exp = ok(await a.gql(`mutation { createExperiment(input: {name: "replicas-tracking"}) { id } }`)).createExperiment;
    const runId = ok(await a.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e, name: "cross"}) { id } }`, { e: exp.id })).createRun.id;
    const runOnB = collect<{ runUpdated: { id: string; status: string } }>(b.ws(), `subscription($r: ID) { runUpdated(runId: $r) { id status } }`, { r: runId }, 1, 15_000);
    await untilSubscribedOnRedis(b, "runs:updated");
    ok(await a.gql(`mutation($r: ID!) { updateRun(input: {runId: $r, status: FINISHED}) { id } }`, { r: runId }));
    expect((await runOnB.done).map((e) => e.data?.runUpdated)).toEqual([{ id: runId, status: "FINISHED" }]);
  });

  it("hands the scheduler to the survivor when the leader is kill -9'd, and the survivor reaps the lease the dead leader's executor left", async () => {
    const flags = await leaderFlags([a, b]);
    expect([...flags].sort()).toEqual([0, 1]);
    const [leader, survivor] = flags[0] === 1 ? [a, b] : [b, a];

    // A task claimed through the leader by an executor that then goes silent with it.
    ok(await leader.gql(CREATE, { spec: { pipeline: { name: "replicas-lost", tasks: [{ id: "lost", command: ["true"], pool: "replicas-lost", retries: 0 }] } } }));
    const executorId = ok(await leader.gql(REGISTER, { pool: "replicas-lost" })).registerExecutor.id;
    const pipelineRunId = ok(await leader.gql(SUBMIT, { name: "replicas-lost" })).submitPipelineRun.id;
    const claim = ok(await leader.gql(`mutation($id: ID!) { claimTask(executorId: $id, waitSeconds: 5) { taskRun { id } } }`, { id: executorId })).claimTask;
    expect(claim).not.toBeNull();

    await leader.kill9();
    // The dead process's PostgreSQL session ends with its sockets, and with it the advisory lock.
    await waitFor("the survivor to lead", async () => sample(await scrape(survivor), "mlgraph_scheduler_leader") === 1, 15_000);

    const TASK = `query($id: ID!) { pipelineRun(id: $id) { status tasks { id status failureKind attempts { attempt outcome } } } }`;
    const run = await waitFor(
      "the lost lease to be reaped",
      async () => {
        const r = ok(await survivor.gql(TASK, { id: pipelineRunId })).pipelineRun;
        return r.status === "FAILED" ? r : null;
      },
      15_000,
    );
    expect(run.tasks).toEqual([{ id: claim.taskRun.id, status: "FAILED", failureKind: "EXECUTOR_LOST", attempts: [{ attempt: 1, outcome: "EXECUTOR_LOST" }] }]);
  });
});
