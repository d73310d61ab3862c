import { execFileSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import pino from "pino";
import { ExecutorAgent } from "../../../src/executors/agent";

/**
 * A stand-in for the server's executor protocol, so a test decides exactly what the agent hears
 * and when: `answer` sees each operation and returns its data, or "503" (a proxy's error page while
 * the server is away) or "lose" (the connection is cut instead of answering: an answer lost on the
 * way). One task is handed out by the first claim answered; later claims wait and get none.
 */
async function startStubServer(task: { command: string[]; leaseSeconds: number; timeoutSeconds?: number }, answer: (op: string, variables: any) => unknown | "503" | "lose" = () => undefined) {
  const calls: { op: string; at: number; variables: any; answered: boolean }[] = [];
  let claimed = false;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const { query, variables } = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { query: string; variables: any };
      const op = /\{\s*(\w+)\s*\(/.exec(query)![1]!;
      const call = { op, at: Date.now(), variables, answered: false };
      calls.push(call);
      const custom = answer(op, variables);
      if (custom === "lose") {
        req.socket.destroy();
        return;
      }
      if (custom === "503") {
        res.writeHead(503, { "content-type": "text/html" }).end("<html>503 Service Unavailable</html>");
        return;
      }
      const send = (data: unknown) => {
        call.answered = true;
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ data: { [op]: data } }));
      };
      if (custom && typeof custom === "object" && "graphqlErrors" in custom) {
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ errors: (custom as { graphqlErrors: unknown }).graphqlErrors }));
        return;
      }
      if (custom !== undefined) return send(custom);
      switch (op) {
        case "registerExecutor":
          return send({ id: "00000000-0000-4000-8000-000000000001" });
        case "claimTasks":
          if (claimed) return void setTimeout(() => send([]), 200);
          claimed = true;
          return send([
            {
              taskRun: { id: "00000000-0000-4000-8000-0000000000aa", taskId: "t", attempt: 1, logLines: 0 },
              leaseToken: "lease",
              leaseExpiresAt: new Date(Date.now() + task.leaseSeconds * 1000).toISOString(),
              leaseSeconds: task.leaseSeconds,
              command: task.command,
              operator: "command",
              env: { MLGRAPH_TASK_RUN_ID: "00000000-0000-4000-8000-0000000000aa" },
              gpus: [],
              runId: "00000000-0000-4000-8000-0000000000bb",
              timeoutSeconds: task.timeoutSeconds ?? 3600,
            },
          ]);
        case "heartbeatTask":
          return send({ cancelRequested: false });
        case "appendTaskLogs":
          return send(true);
        default:
          return send(op === "completeTasks" ? variables.inputs.map((i: any) => ({ id: i.taskRunId })) : { id: variables.input.taskRunId });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as import("node:net").AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    calls,
    /** Completions the stub accepted. */
    completions: () => calls.filter((c) => c.answered && /^completeTasks?$/.test(c.op)).flatMap((c) => c.variables.inputs ?? [c.variables.input]),
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function waitUntil(what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A logger whose messages the test can read (warn and above). */
function capturedLog() {
  const lines: string[] = [];
  const log = pino({ level: "warn" }, { write: (line: string) => void lines.push(line) });
  return { log, messages: () => lines.map((l) => (JSON.parse(l) as { msg: string }).msg) };
}

let workdirBase: string;
beforeEach(() => {
  workdirBase = fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-agent-test-"));
});
// rm, not fs.rmSync: a test leaves a tree too deep for fs.rmSync behind.
afterEach(() => execFileSync("rm", ["-rf", workdirBase]));

function agentFor(url: string, options: Partial<ConstructorParameters<typeof ExecutorAgent>[0]> = {}) {
  return new ExecutorAgent({
    server: url,
    pool: "p",
    gpus: "none",
    concurrency: 1,
    cpu: 1,
    memoryMb: 1024,
    workdirBase,
    taskBaseEnv: { PATH: process.env.PATH ?? "" },
    waitSeconds: 1,
    graceSeconds: 0.2,
    log: pino({ level: "silent" }),
    ...options,
  });
}

describe("ExecutorAgent against a stand-in server", () => {
  it("keeps reporting a finished attempt while its lease may still hold, though no heartbeat got through for most of it", async () => {
    // The server is away from the first completion on, for 1.7 s of a 2-s lease (last confirmed
    // at the claim). The task has already ended, so there is nothing to stop; the self-stop that
    // fires at 1.3 s made the agent give the outcome up at its next failed try, and stop the
    // heartbeats that would have kept the lease once the server was back.
    let awayFrom: number | null = null;
    const stub = await startStubServer({ command: ["true"], leaseSeconds: 2 }, (op) => {
      if (op === "completeTask" || op === "completeTasks") awayFrom ??= Date.now();
      return awayFrom !== null && Date.now() - awayFrom < 1_700 && op !== "claimTasks" ? "503" : undefined;
    });
    const agent = agentFor(stub.url);
    try {
      await agent.start();
      await waitUntil("the outcome to be reported", () => stub.completions().length > 0, 10_000).catch(() => undefined);
      expect(stub.completions()).toMatchObject([{ outcome: "SUCCEEDED", leaseToken: "lease" }]);
      // Heartbeats went on once the server was back, keeping the lease until the outcome landed.
      expect(stub.calls.some((c) => c.op === "heartbeatTask" && c.answered && c.at - awayFrom! >= 1_700)).toBe(true);
    } finally {
      await agent.stop();
      await stub.close();
    }
  });

  it("stops with a clear error when the server is too old for a runtime that needs the claim's image and resources", async () => {
    const stub = await startStubServer({ command: ["true"], leaseSeconds: 10 }, (op) =>
      op === "claimTasks" ? { graphqlErrors: [{ message: 'Cannot query field "image" on type "TaskAssignment".', extensions: { code: "GRAPHQL_VALIDATION_FAILED" } }] } : undefined,
    );
    const runtime = { needsContainerFields: true, init: async () => undefined, gpus: async () => [], start: () => { throw new Error("no task is claimed"); } };
    const agent = agentFor(stub.url, { runtime });
    try {
      await agent.start();
      await expect(agent.finished()).rejects.toThrow(/server is too old for this runtime.*Cannot query field "image"/);
      // Not retried every second forever.
      expect(stub.calls.filter((c) => c.op === "claimTasks")).toHaveLength(1);
    } finally {
      await agent.stop();
      await stub.close();
    }
  });

  it("reports the outcome of a task whose working directory cannot be removed", async () => {
    // fs.rmSync fails on a tree deeper than PATH_MAX (as on a read-only directory for a non-root
    // executor, e.g. Go's module cache): the attempt ended without a report, its heartbeats
    // stopped, and the server re-ran a task that had succeeded as EXECUTOR_LOST.
    const deep = `d=$(printf 'a%.0s' $(seq 200)); for i in $(seq 20); do mkdir $d && cd $d; done; mkdir $d && echo made`;
    const stub = await startStubServer({ command: ["sh", "-c", deep], leaseSeconds: 10 });
    const agent = agentFor(stub.url);
    try {
      await agent.start();
      await waitUntil("the outcome to be reported", () => stub.completions().length > 0, 10_000).catch(() => undefined);
      expect(stub.completions()).toMatchObject([{ outcome: "SUCCEEDED", exitCode: 0 }]);
      expect(stub.calls.filter((c) => c.op === "appendTaskLogs").flatMap((c) => c.variables.lines)).toEqual(["made"]);
    } finally {
      await agent.stop();
      await stub.close();
    }
  });

  it("hands back an attempt whose working directory cannot be created as NOT_STARTED, saying why, and claims nothing until a probe passes", async () => {
    const stub = await startStubServer({ command: ["true"], leaseSeconds: 10 });
    // Something that cannot hold directories (a full disk fails the same way, ENOSPC).
    const notADirectory = path.join(workdirBase, "file");
    fs.writeFileSync(notADirectory, "");
    const logged = capturedLog();
    const agent = agentFor(stub.url, { workdirBase: notADirectory, log: logged.log });
    try {
      await agent.start();
      // Previously nothing was reported (the attempt waited out its lease and failed as
      // EXECUTOR_LOST), then it was reported FAILED, using a retry; and the executor claimed again.
      await waitUntil("the outcome to be reported", () => stub.completions().length > 0, 10_000);
      expect(stub.completions()).toMatchObject([{ outcome: "NOT_STARTED", exitCode: null }]);
      expect(stub.completions()[0].error).toContain(`could not create a working directory under ${notADirectory}`);
      const claimsThen = stub.calls.filter((c) => c.op === "claimTasks").length;
      await waitUntil("two failed probes", () => logged.messages().filter((m) => m === "the work directory is still unusable: claiming nothing").length >= 2);
      expect(stub.calls.filter((c) => c.op === "claimTasks")).toHaveLength(claimsThen);
      fs.rmSync(notADirectory);
      await waitUntil("a claim once the work directory is usable", () => stub.calls.filter((c) => c.op === "claimTasks").length > claimsThen);
    } finally {
      await agent.stop();
      await stub.close();
    }
  });

  it("reports NOT_STARTED as FAILED to a server from before that outcome", async () => {
    const stub = await startStubServer({ command: ["true"], leaseSeconds: 10 }, (op, variables) =>
      /^completeTasks?$/.test(op) && JSON.stringify(variables).includes("NOT_STARTED")
        ? { graphqlErrors: [{ message: 'Variable "$input" got invalid value "NOT_STARTED" at "input.outcome"; Value "NOT_STARTED" does not exist in "TaskOutcome" enum.', extensions: { code: "BAD_USER_INPUT" } }] }
        : undefined,
    );
    const notADirectory = path.join(workdirBase, "file");
    fs.writeFileSync(notADirectory, "");
    const agent = agentFor(stub.url, { workdirBase: notADirectory });
    try {
      await agent.start();
      await waitUntil("the outcome to be reported", () => stub.completions().length > 0, 10_000);
      expect(stub.completions()).toMatchObject([{ outcome: "FAILED", exitCode: null }]);
    } finally {
      await agent.stop();
      await stub.close();
    }
  });

  it("resends a claim call whose answer was lost with the same claim id, and makes the next call with a new one", async () => {
    let cut = false;
    const stub = await startStubServer({ command: ["true"], leaseSeconds: 10 }, (op) => (op === "claimTasks" && !cut ? ((cut = true), "lose") : undefined));
    const agent = agentFor(stub.url);
    try {
      await agent.start();
      await waitUntil("the outcome to be reported", () => stub.completions().length > 0, 10_000);
      await waitUntil("a claim after the task", () => stub.calls.filter((c) => c.op === "claimTasks").length >= 3);
      const [lost, resent, next] = stub.calls.filter((c) => c.op === "claimTasks").map((c) => c.variables.claimId);
      expect(lost).toMatch(/^[0-9a-f-]{36}$/);
      // The resend got the task (the stub's first answered claim) and ran it once.
      expect(resent).toBe(lost);
      expect(stub.completions()).toMatchObject([{ outcome: "SUCCEEDED" }]);
      expect(next).not.toBe(lost);
    } finally {
      await agent.stop();
      await stub.close();
    }
  });

  it("claims without claim ids from a server from before them", async () => {
    const stub = await startStubServer({ command: ["true"], leaseSeconds: 10 }, (op, variables) =>
      op === "claimTasks" && "claimId" in variables
        ? { graphqlErrors: [{ message: 'Unknown argument "claimId" on field "Mutation.claimTasks".', extensions: { code: "GRAPHQL_VALIDATION_FAILED" } }] }
        : undefined,
    );
    const agent = agentFor(stub.url);
    try {
      await agent.start();
      await waitUntil("the outcome to be reported", () => stub.completions().length > 0, 10_000);
      expect(stub.completions()).toMatchObject([{ outcome: "SUCCEEDED" }]);
      expect(stub.calls.filter((c) => c.op === "claimTasks").map((c) => "claimId" in c.variables)).toEqual([true, false, ...Array(stub.calls.filter((c) => c.op === "claimTasks").length - 2).fill(false)]);
    } finally {
      await agent.stop();
      await stub.close();
    }
  });
});
