import fs from "node:fs";
import path from "node:path";
import type { Logger } from "pino";

/** What is recorded per running task: its process group and the executor that started it. */
interface GroupRecord {
  pgid: number;
  /** Start time of the group leader (clock ticks since boot, /proc/<pid>/stat field 22). */
  leaderStart: string;
  agentPid: number;
  agentStart: string;
}

/**
 * Task processes run in their own process group (a stop reaches the whole tree), which also means
 * they outlive an executor killed with -9 and would keep its GPUs busy under the next executor's
 * feet. Each running task's group is recorded in `<workdirBase>/mlgraph-task-groups/`; an
 * executor starting with the same work directory stops, before it registers, the groups whose
 * executor is gone. Identities are (pid, start time) pairs, so a reused pid is never mistaken for
 * the process it used to be, and groups of executors still running are left alone (several may
 * share one machine and directory). Linux only (/proc); elsewhere nothing is recorded.
 */
export class TaskProcessRegistry {
  private readonly dir: string;
  private readonly self: { pid: number; start: string } | null;

  constructor(workdirBase: string) {
    this.dir = path.join(workdirBase, "mlgraph-task-groups");
    const start = startTimeOf(process.pid);
    this.self = start ? { pid: process.pid, start } : null;
  }

  /** Records a task's process group (its leader's pid) while it runs. */
  record(pgid: number): void {
    const leaderStart = startTimeOf(pgid);
    if (!this.self || !leaderStart) return;
    fs.mkdirSync(this.dir, { recursive: true });
    const entry: GroupRecord = { pgid, leaderStart, agentPid: this.self.pid, agentStart: this.self.start };
    fs.writeFileSync(this.file(pgid), JSON.stringify(entry));
  }

  /** The task ended (its group is gone or being stopped by this executor). */
  forget(pgid: number): void {
    fs.rmSync(this.file(pgid), { force: true });
  }

  /**
   * Stops the recorded groups whose executor is no longer running: SIGTERM, then SIGKILL after
   * `graceMs`. Returns how many groups it stopped.
   */
  async stopOrphans(graceMs: number, log: Logger): Promise<number> {
    if (!this.self || !fs.existsSync(this.dir)) return 0;
    const orphans: GroupRecord[] = [];
    for (const name of fs.readdirSync(this.dir)) {
      const file = path.join(this.dir, name);
      let entry: GroupRecord;
      try {
        entry = JSON.parse(fs.readFileSync(file, "utf8")) as GroupRecord;
      } catch {
        fs.rmSync(file, { force: true });
        continue;
      }
      if (startTimeOf(entry.agentPid) === entry.agentStart) continue; // its executor still runs
      if (groupAlive(entry)) orphans.push(entry);
      else fs.rmSync(file, { force: true });
    }
    if (orphans.length === 0) return 0;
    log.warn({ groups: orphans.map((o) => o.pgid) }, "stopping task processes left by an executor that died");
    for (const o of orphans) signalGroup(o.pgid, "SIGTERM");
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline && orphans.some(groupAlive)) await new Promise((r) => setTimeout(r, 100));
    for (const o of orphans) {
      if (groupAlive(o)) signalGroup(o.pgid, "SIGKILL");
      this.forget(o.pgid);
    }
    return orphans.length;
  }

  private file(pgid: number): string {
    return path.join(this.dir, String(pgid));
  }
}

/** Field 22 of /proc/<pid>/stat, or null when there is no such process (or no /proc). */
function startTimeOf(pid: number): string | null {
  const stat = procStat(pid);
  return stat ? (stat[19] ?? null) : null;
}

/** /proc/<pid>/stat fields from the third (state) on; the command name may hold spaces. */
function procStat(pid: number): string[] | null {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return text.slice(text.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

/**
 * Whether the recorded group still has members: its leader (same start time), or, once the
 * leader exited, any process in the group started no earlier than it (not a later reuse).
 */
function groupAlive(entry: GroupRecord): boolean {
  if (startTimeOf(entry.pgid) === entry.leaderStart) return true;
  let pids: string[];
  try {
    pids = fs.readdirSync("/proc").filter((n) => /^\d+$/.test(n));
  } catch {
    return false;
  }
  return pids.some((p) => {
    const stat = procStat(Number(p));
    // Fields from the third on: pgrp is field 5 (index 2), starttime field 22 (index 19).
    return stat !== null && Number(stat[2]) === entry.pgid && BigInt(stat[19] ?? "0") >= BigInt(entry.leaderStart);
  });
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // already gone
  }
}
