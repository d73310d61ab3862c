import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { LocalProcess } from "../../../src/executors/runtimes/local-process";
import { graphqlEndpoint, logCalls, resolveScriptPaths } from "../../../src/executors/agent";

function run(argv: string[], options: { timeoutMs?: number; graceMs?: number } = {}) {
  const lines: string[] = [];
  const proc = new LocalProcess({
    argv,
    env: { PATH: process.env.PATH ?? "", GREETING: "hello" },
    cwd: os.tmpdir(),
    timeoutMs: options.timeoutMs ?? 10_000,
    graceMs: options.graceMs ?? 500,
    onLines: (stream, l) => lines.push(...l.map((x) => `${stream}:${x}`)),
  });
  return { proc, lines };
}

/** The process's state letter from /proc, null when it is gone or a zombie (dead, not yet reaped). */
function runningState(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state === "Z" ? null : state;
  } catch {
    return null;
  }
}

/** The state once a dying process has had `withinMs` to finish exiting: null when it did. */
async function stateAfterExit(pid: number, withinMs: number): Promise<string | null> {
  const until = Date.now() + withinMs;
  while (runningState(pid) !== null && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  return runningState(pid);
}

describe("LocalProcess", () => {
  it("runs argv with the given env and splits stdout/stderr into lines, including a last partial line", async () => {
    const { proc, lines } = run(["sh", "-c", 'echo "$GREETING"; echo oops >&2; printf tail']);
    const result = await proc.done;
    expect(result).toMatchObject({ exitCode: 0, timedOut: false, cancelled: false });
    expect(lines.sort()).toEqual(["stderr:oops", "stdout:hello", "stdout:tail"]);
  });

  it("lets a task with a 30-day timeout run (a plain 32-bit timer would time it out at once)", async () => {
    const result = await run(["sh", "-c", "sleep 0.3; echo done"], { timeoutMs: 30 * 86_400_000 }).proc.done;
    expect(result).toMatchObject({ exitCode: 0, timedOut: false });
  });

  it("reports a non-zero exit and a program that does not exist", async () => {
    expect((await run(["sh", "-c", "exit 3"]).proc.done).exitCode).toBe(3);
    const missing = await run(["/nonexistent/program"]).proc.done;
    expect(missing.spawnError).toMatch(/ENOENT/);
  });

  it("stops the whole process group on timeout: SIGTERM, then SIGKILL after the grace period", async () => {
    // The shell ignores SIGTERM, so only the SIGKILL after the grace period ends it.
    const { proc } = run(["sh", "-c", "trap '' TERM; sleep 30 & wait"], { timeoutMs: 200, graceMs: 300 });
    const result = await proc.done;
    expect(result.timedOut).toBe(true);
    expect(result.signal).toBe("SIGKILL");
  });

  it("kills a timed-out process after the timeout's own grace when that is shorter", async () => {
    const started = Date.now();
    const proc = new LocalProcess({
      argv: ["sh", "-c", "trap '' TERM; sleep 30 & wait"],
      env: { PATH: process.env.PATH ?? "" },
      cwd: os.tmpdir(),
      timeoutMs: 200,
      graceMs: 30_000,
      timeoutGraceMs: 300,
      onLines: () => undefined,
    });
    const result = await proc.done;
    expect(result).toMatchObject({ timedOut: true, signal: "SIGKILL" });
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("ends the attempt when its main process exits, stopping what it left running in its group", async () => {
    // Previously `done` waited for the background job (it holds stdout): 30 s, and neither the
    // timeout nor a cancel could end it because the leader had already exited.
    const started = Date.now();
    const { proc, lines } = run(["sh", "-c", "sleep 30 & echo $!; exit 4"], { timeoutMs: 60_000, graceMs: 300 });
    const result = await proc.done;
    expect(result).toMatchObject({ exitCode: 4, timedOut: false });
    expect(Date.now() - started).toBeLessThan(15_000); // the job sleeps 30 s; headroom for a loaded machine
    const leftover = Number(lines[0]!.replace("stdout:", ""));
    // A killed process closes its pipes (what ends the attempt) before it becomes a zombie: on a
    // loaded machine /proc can still show it "R" in between, for a moment. Left running, the
    // background sleep would stay "S" for 30 s.
    expect(await stateAfterExit(leftover, 5_000)).toBeNull();
  });

  it("stops reading pipes held by a process that left the group, once the group is gone", async () => {
    const started = Date.now();
    // sh exits only once the setsid'd process has left its group (its pgrp, field 5, differs).
    const script = `setsid sleep 30 & p=$!; while [ "$(cut -d' ' -f5 /proc/$p/stat)" = "$(cut -d' ' -f5 /proc/$$/stat)" ]; do sleep 0.02; done; echo $p`;
    const { proc, lines } = run(["sh", "-c", script], { timeoutMs: 60_000, graceMs: 200 });
    const result = await proc.done;
    expect(result.exitCode).toBe(0);
    expect(Date.now() - started).toBeLessThan(15_000); // the job sleeps 30 s; headroom for a loaded machine
    const escaped = Number(lines[0]!.replace("stdout:", ""));
    expect(runningState(escaped)).not.toBeNull(); // not the executor's to stop: it left the group
    process.kill(escaped, "SIGKILL");
  });

  it("brings a pending SIGKILL forward when a later stop allows less grace, never back", async () => {
    const started = Date.now();
    const { proc } = run(["sh", "-c", "trap '' TERM; sleep 30 & wait"], { graceMs: 30_000 });
    setTimeout(() => proc.stop(), 100); // a gentle stop: 30 s of grace
    setTimeout(() => proc.stop(300), 300); // then a deadline (a timeout, a lost lease)
    setTimeout(() => proc.stop(60_000), 400); // a gentler one after it changes nothing
    const result = await proc.done;
    expect(result.signal).toBe("SIGKILL");
    // Previously the first stop's 30 s grace stood.
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it("forwards cancellation as SIGTERM", async () => {
    const { proc } = run(["sleep", "30"]);
    setTimeout(() => proc.cancel(), 100);
    const result = await proc.done;
    expect(result).toMatchObject({ cancelled: true, signal: "SIGTERM", timedOut: false });
  });
});

describe("agent helpers", () => {
  it("splits an attempt's lines into log calls bounded in lines and size, NUL removed and long lines cut", () => {
    expect(logCalls(["a\u0000b", "c"])).toEqual([["ab", "c"]]);
    const long = "x".repeat(20_000);
    const [[cut]] = logCalls([long]);
    expect(cut).toBe(`${"x".repeat(16_000)}…`);
    // 5,000 lines of 16,000 characters: one call used to carry all of them (80 MB, over the body limit).
    const calls = logCalls(Array.from({ length: 5_000 }, () => long));
    expect(calls.flat()).toHaveLength(5_000);
    for (const call of calls) expect(call.reduce((n, l) => n + l.length, 0)).toBeLessThanOrEqual(256_001);
    expect(logCalls(Array.from({ length: 12_000 }, (_, i) => String(i))).map((c) => c.length)).toEqual([5_000, 5_000, 2_000]);
  });

  it("accepts the server as base URL or endpoint", () => {
    expect(graphqlEndpoint("http://h:4000")).toBe("http://h:4000/graphql");
    expect(graphqlEndpoint("http://h:4000/")).toBe("http://h:4000/graphql");
    expect(graphqlEndpoint("http://h:4000/graphql")).toBe("http://h:4000/graphql");
  });

  it("makes relative script paths under the pipeline dir absolute, leaving everything else alone", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-agent-"));
    fs.mkdirSync(path.join(dir, "scripts"));
    fs.writeFileSync(path.join(dir, "scripts/train.py"), "");
    expect(resolveScriptPaths(["python3", "scripts/train.py", "--lr", "0.01", "missing/x.py", "/abs/y.py"], dir)).toEqual([
      "python3",
      path.join(dir, "scripts/train.py"),
      "--lr",
      "0.01",
      "missing/x.py",
      "/abs/y.py",
    ]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
