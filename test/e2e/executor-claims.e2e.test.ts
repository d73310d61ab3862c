import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { startFlakyProxy } from "../helpers/flaky-proxy";
import { ok, startTestServer, type TestServer, waitFor } from "../helpers/test-server";
import { startExecutor, type TestExecutor } from "../helpers/executors";

/**
 * Claims whose answer is lost (claim ids), and attempts an executor could not set up on its side
 * (NOT_STARTED). Through the public API, with real executor processes where the agent matters.
 */
let server: TestServer;
const executors: TestExecutor[] = [];
let scratch: string;

beforeAll(async () => {
  // A 20-s lease: long enough that a task left CLAIMED by nobody would show up as EXECUTOR_LOST
  // well after the task it should have run alongside finished.
  server = await startTestServer({ env: { MLGRAPH_LEASE_SECONDS: "20", MLGRAPH_SCHEDULER_INTERVAL_MS: "200" } });
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-claims-"));
});
afterAll(async () => {
  await Promise.all(executors.map((e) => e.stop()));
  await server?.stop();
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
});

const CLAIM = `mutation($id: ID!, $max: Int!, $wait: Int, $claimId: ID) {
  claimTasks(executorId: $id, maxTasks: $max, waitSeconds: $wait, claimId: $claimId) { taskRun { id taskId attempt } leaseToken runId env } }`;
const HEARTBEAT = `mutation($input: HeartbeatInput!) { heartbeatTask(input: $input) { cancelRequested } }`;
const COMPLETE = `mutation($inputs: [CompleteTaskInput!]!) { completeTasks(inputs: $inputs) { id status attempt uncountedAttempts } }`;
const RUN = `query($id: ID!) { pipelineRun(id: $id) { id status tasks { id taskId status attempt maxAttempts uncountedAttempts failureKind error
  attempts { attempt outcome executorId error } } } }`;
const LOG_PARAM = `mutation($r: ID!) { logParams(runId: $r, params: [{key: "k", value: "v"}]) { id } }`;

async function register(s: TestServer, pool: string): Promise<string> {
  return ok(await s.gql(`mutation($pool: String!) { registerExecutor(input: {pool: $pool, cpu: 8, memoryMb: 8192}) { id } }`, { pool })).registerExecutor.id;
}

async function pipelineRun(s: TestServer, name: string, tasks: unknown[]): Promise<string> {
  ok(await s.gql(`mutation($input: CreatePipelineInput!) { createPipeline(input: $input) { id } }`, { input: { spec: { pipeline: { name, tasks } } } }));
  return ok(await s.gql(`mutation($name: String!) { submitPipelineRun(input: {pipelineName: $name}) { id } }`, { name })).submitPipelineRun.id;
}

async function readRun(id: string, s: TestServer = server) {
  return ok(await s.gql(RUN, { id })).pipelineRun;
}

const tasksOf = (pool: string, ids: string[], extra: Record<string, unknown> = {}) => ids.map((id) => ({ id, command: ["true"], pool, ...extra }));
const byStatus = (run: { tasks: { taskId: string; status: string }[] }, status: string) => run.tasks.filter((t) => t.status === status).map((t) => t.taskId).sort();

describe("claim ids: a claim call whose answer was lost", () => {
  it("is answered again with the tasks the lost answer held, under fresh lease and task tokens, and claims nothing more", async () => {
    const exec = await register(server, "replay");
    const runId = await pipelineRun(server, "replay", tasksOf("replay", ["a", "b", "c"]));
    // The server commits the claim, the proxy cuts the connection instead of passing the answer on.
    const proxy = await startFlakyProxy(server.url, (body) => (/claimTasks/.test(body) ? "lose-answer" : false));
    let lost: any;
    try {
      const cut = await fetch(proxy.url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ query: CLAIM, variables: { id: exec, max: 2, wait: 5, claimId: "claim-1" } }),
      }).then(
        (res) => res.text(),
        (err: Error) => err,
      );
      expect(cut).toMatchObject({ message: "fetch failed" });
      expect(proxy.lostAnswers).toHaveLength(1);
      lost = JSON.parse(proxy.lostAnswers[0]!).data.claimTasks;
    } finally {
      await proxy.close();
    }
    expect(lost).toHaveLength(2);
    const lostIds = lost.map((a: any) => a.taskRun.taskId).sort();

    // The executor resends the call with the same claim id: the same two tasks, nothing else claimed.
    const again = ok(await server.gql(CLAIM, { id: exec, max: 2, wait: 5, claimId: "claim-1" })).claimTasks;
    expect(again.map((a: any) => a.taskRun.taskId).sort()).toEqual(lostIds);
    let run = await readRun(runId);
    expect(byStatus(run, "CLAIMED")).toEqual(lostIds);
    expect(byStatus(run, "QUEUED")).toHaveLength(1);
    for (const a of again) {
      const before = lost.find((l: any) => l.taskRun.id === a.taskRun.id);
      // Same attempt and tracking run, new credentials: the lost ones no longer work.
      expect(a.taskRun.attempt).toBe(1);
      expect(a.runId).toBe(before.runId);
      expect(a.leaseToken).not.toBe(before.leaseToken);
      expect(a.env.MLGRAPH_TOKEN).not.toBe(before.env.MLGRAPH_TOKEN);
      const stale = await server.gql(HEARTBEAT, { input: { taskRunId: a.taskRun.id, leaseToken: before.leaseToken } });
      expect(stale.errors?.[0].extensions?.code).toBe("CONFLICT");
      expect((await server.gql(LOG_PARAM, { r: a.runId }, before.env.MLGRAPH_TOKEN)).errors?.[0].extensions?.code).toBe("UNAUTHENTICATED");
      ok(await server.gql(LOG_PARAM, { r: a.runId }, a.env.MLGRAPH_TOKEN));
    }

    // One of them has started (heartbeat): only the other is handed out by a third send.
    const [started, notYet] = again;
    ok(await server.gql(HEARTBEAT, { input: { taskRunId: started.taskRun.id, leaseToken: started.leaseToken } }));
    const third = ok(await server.gql(CLAIM, { id: exec, max: 2, wait: 5, claimId: "claim-1" })).claimTasks;
    expect(third.map((a: any) => a.taskRun.id)).toEqual([notYet.taskRun.id]);
    ok(await server.gql(COMPLETE, { inputs: [{ taskRunId: notYet.taskRun.id, leaseToken: third[0].leaseToken, outcome: "SUCCEEDED" }] }));
    // Nothing of that claim is left to hand out: answered at once, empty, though a task is queued.
    expect(ok(await server.gql(CLAIM, { id: exec, max: 2, wait: 5, claimId: "claim-1" })).claimTasks).toEqual([]);
    // A new call (a new id) claims the queued task.
    const next = ok(await server.gql(CLAIM, { id: exec, max: 2, wait: 5, claimId: "claim-2" })).claimTasks;
    expect(next.map((a: any) => a.taskRun.taskId)).toEqual(byStatus(run, "QUEUED"));
    ok(
      await server.gql(COMPLETE, {
        inputs: [
          { taskRunId: started.taskRun.id, leaseToken: started.leaseToken, outcome: "SUCCEEDED" },
          { taskRunId: next[0].taskRun.id, leaseToken: next[0].leaseToken, outcome: "SUCCEEDED" },
        ],
      }),
    );
    run = await readRun(runId);
    expect(run.status).toBe("SUCCEEDED");
    expect(run.tasks.map((t: any) => t.attempts.map((a: any) => a.outcome))).toEqual([["SUCCEEDED"], ["SUCCEEDED"], ["SUCCEEDED"]]);
    // Without a claim id every call claims anew, as before (older executors).
    expect((await server.gql(CLAIM, { id: exec, max: 1, wait: 0, claimId: "not a claim id!" })).errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "claimId" });
  });

  it("lets only one of several concurrent calls with one claim id claim, and only the latest one's leases hold", async () => {
    const exec = await register(server, "concurrent-ids");
    const runId = await pipelineRun(server, "concurrent-ids", tasksOf("concurrent-ids", ["a", "b", "c", "d", "e", "f"]));
    for (let round = 0; round < 3; round++) {
      const claimId = `same-${round}`;
      const answers: any[][] = await Promise.all(
        Array.from({ length: 6 }, async () => ok(await server.gql(CLAIM, { id: exec, max: 2, wait: 0, claimId })).claimTasks),
      );
      const run = await readRun(runId);
      // One claim of two tasks, whatever the calls saw; every answer holds (some of) those two.
      const claimedNow = run.tasks.filter((t: any) => t.status === "CLAIMED").map((t: any) => t.id);
      expect(claimedNow).toHaveLength(2);
      for (const answer of answers) for (const a of answer) expect(claimedNow).toContain(a.taskRun.id);
      // Per task exactly one handed-out lease is valid (the one the last call minted).
      for (const id of claimedNow) {
        const leases = answers.flat().filter((a) => a.taskRun.id === id).map((a) => a.leaseToken);
        expect(leases.length).toBeGreaterThan(0);
        const valid = [];
        for (const lease of new Set(leases)) {
          const res = await server.gql(HEARTBEAT, { input: { taskRunId: id, leaseToken: lease } });
          if (!res.errors) valid.push(lease);
        }
        expect(valid).toHaveLength(1);
        ok(await server.gql(COMPLETE, { inputs: [{ taskRunId: id, leaseToken: valid[0], outcome: "SUCCEEDED" }] }));
      }
    }
    expect((await readRun(runId)).status).toBe("SUCCEEDED");
  });

  it("is answered again by a restarted server (the claim is stored in PostgreSQL)", async () => {
    const first = await startTestServer({ env: { MLGRAPH_LEASE_SECONDS: "60" }, keep: true });
    let second: TestServer | null = null;
    try {
      const exec = await register(first, "restart");
      const runId = await pipelineRun(first, "restart", tasksOf("restart", ["a", "b"]));
      const proxy = await startFlakyProxy(first.url, (body) => (/claimTasks/.test(body) ? "lose-answer" : false));
      try {
        await fetch(proxy.url, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ query: CLAIM, variables: { id: exec, max: 1, wait: 5, claimId: "before-restart" } }),
        }).catch(() => undefined);
      } finally {
        await proxy.close();
      }
      const lost = JSON.parse(proxy.lostAnswers[0]!).data.claimTasks;
      expect(lost).toHaveLength(1);
      await first.stop();
      second = await startTestServer({ dataDir: first.dataDir, databaseUrl: first.databaseUrl, embeddedPostgres: !first.databaseUrl, keep: true });
      const again = ok(await second.gql(CLAIM, { id: exec, max: 1, wait: 5, claimId: "before-restart" })).claimTasks;
      expect(again.map((a: any) => a.taskRun.id)).toEqual([lost[0].taskRun.id]);
      const run = await readRun(runId, second);
      expect(byStatus(run, "QUEUED")).toHaveLength(1);
    } finally {
      await first.stop();
      if (second) await second.stop();
      // keep: true left the data dir and database for the restart; nothing uses them now.
      fs.rmSync(first.dataDir, { recursive: true, force: true });
      if (first.databaseUrl && process.env.TEST_DATABASE_URL) {
        const admin = new pg.Client({ connectionString: process.env.TEST_DATABASE_URL });
        await admin.connect();
        await admin.query(`DROP DATABASE IF EXISTS ${new URL(first.databaseUrl).pathname.slice(1)} WITH (FORCE)`);
        await admin.end();
      }
    }
  });

  it("an executor agent whose claim answer is lost runs the tasks that answer held, each once, none lost", async () => {
    // Queued before the executor starts, so its first claim takes one of them at once.
    const runId = await pipelineRun(server, "agent-replay", tasksOf("agent-replay", ["a", "b", "c"]));
    let lostOne = false;
    const proxy = await startFlakyProxy(server.url, (body) => (!lostOne && /claimTasks/.test(body) ? ((lostOne = true), "lose-answer") : false));
    try {
      const exec = await startExecutor(proxy.url, ["--pool", "agent-replay", "--gpus", "none", "--concurrency", "1"]);
      executors.push(exec);
      const lost = await waitFor("the first claim's answer to be lost", () => proxy.lostAnswers[0]);
      const lostTask = JSON.parse(lost).data.claimTasks[0].taskRun.taskId;
      const run = await waitFor("the run to end", async () => {
        const r = await readRun(runId);
        return ["SUCCEEDED", "FAILED"].includes(r.status) && r;
      }, 60_000);
      expect(proxy.failures()).toBe(1);
      // Previously the resent call claimed another task, and the lost one sat CLAIMED until its
      // lease ran out (EXECUTOR_LOST, then a second attempt).
      expect(run.status).toBe("SUCCEEDED");
      const attempts = run.tasks.map((t: any) => [t.taskId, t.attempts.map((a: any) => [a.outcome, a.executorId])]);
      expect(attempts.sort((x: any, y: any) => x[0].localeCompare(y[0]))).toEqual(
        ["a", "b", "c"].map((id) => [id, [["SUCCEEDED", exec.id]]]),
      );
      expect(lostTask).toMatch(/^[abc]$/);
    } finally {
      await proxy.close();
    }
  });
});

describe("attempts an executor could not set up (NOT_STARTED)", () => {
  it("go back to the queue without using a retry, up to 10 per task; later ones count as failed", async () => {
    const exec = await register(server, "not-started");
    const runId = await pipelineRun(server, "not-started", tasksOf("not-started", ["only"], { retries: 1, retry_backoff_seconds: 0 }));
    const handBack = async () => {
      const [a] = ok(await server.gql(CLAIM, { id: exec, max: 1, wait: 5 })).claimTasks;
      return ok(await server.gql(COMPLETE, { inputs: [{ taskRunId: a.taskRun.id, leaseToken: a.leaseToken, outcome: "NOT_STARTED", error: "disk full" }] })).completeTasks[0];
    };
    for (let i = 1; i <= 10; i++) {
      // Previously (as FAILED, the only outcome for it) the second hand-back failed the task for good.
      expect(await handBack()).toMatchObject({ status: "QUEUED", attempt: i + 1, uncountedAttempts: i });
    }
    // The 11th and 12th count: the task's one retry, then the end.
    expect(await handBack()).toMatchObject({ status: "QUEUED", attempt: 12, uncountedAttempts: 10 });
    expect(await handBack()).toMatchObject({ status: "FAILED", attempt: 12, uncountedAttempts: 10 });
    const run = await readRun(runId);
    expect(run.status).toBe("FAILED");
    expect(run.tasks[0]).toMatchObject({ failureKind: "NOT_STARTED", error: "disk full", maxAttempts: 2 });
    expect(run.tasks[0].attempts.map((a: any) => a.outcome)).toEqual(Array(12).fill("NOT_STARTED"));
  });

  it("an executor that cannot create its work directory hands the task back, claims nothing until a probe passes, then runs it", async () => {
    // A file where the work base should be: no directory can be made under it (a full disk fails
    // the same way, ENOSPC, but cannot be made here without root and a mount).
    const base = path.join(scratch, "workdirs");
    fs.writeFileSync(base, "not a directory");
    const runId = await pipelineRun(server, "broken-workdir", tasksOf("broken-workdir", ["only"], { retries: 0 }));
    const exec = await startExecutor(server.url, ["--pool", "broken-workdir", "--gpus", "none", "--workdir-base", base]);
    executors.push(exec);
    const handedBack = await waitFor("the attempt to be handed back", async () => {
      const task = (await readRun(runId)).tasks[0];
      return task.attempts.length > 0 && task.attempts[0].outcome !== null && task;
    });
    // Previously FAILED for good: the task has no retries.
    expect(handedBack).toMatchObject({ status: "QUEUED", uncountedAttempts: 1, failureKind: "NOT_STARTED" });
    expect(handedBack.attempts).toEqual([{ attempt: 1, outcome: "NOT_STARTED", executorId: exec.id, error: expect.stringContaining(`could not create a working directory under ${base}`) }]);
    // It probes instead of claiming: by its second failed probe, a claiming executor would have
    // taken the task again (it waits in the queue, and nothing else serves this pool).
    await waitFor("two failed probes", () => (exec.output().match(/the work directory is still unusable/g) ?? []).length >= 2).catch((err: Error) => {
      throw new Error(`${err.message}; the executor said:\n${exec.output()}`);
    });
    const waiting = (await readRun(runId)).tasks[0];
    expect(waiting).toMatchObject({ status: "QUEUED", attempt: 2 });
    expect(waiting.attempts).toHaveLength(1);

    fs.rmSync(base);
    const run = await waitFor("the run to end", async () => {
      const r = await readRun(runId);
      return ["SUCCEEDED", "FAILED"].includes(r.status) && r;
    }, 60_000);
    expect(run.status).toBe("SUCCEEDED");
    expect(run.tasks[0].attempts.map((a: any) => [a.attempt, a.outcome])).toEqual([
      [1, "NOT_STARTED"],
      [2, "SUCCEEDED"],
    ]);
    expect(run.tasks[0].uncountedAttempts).toBe(1);
  });
});
