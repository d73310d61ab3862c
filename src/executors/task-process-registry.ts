import fs from "node:fs";
import path from "node:path";
import type { Logger } from "pino";

/** What is recorded per running task: its process group, the task and the executor that started it. */
interface GroupRecord {
  pgid: number;
  /** Start time of the group leader (clock ticks since boot, /proc/<pid>/stat field 22). */
  leaderStart: string;
  /** The task run whose process leads the group (its environment says so). */
  taskRunId: string;
  agentPid: number;
  agentStart: string;
  /** Which boot and which pid namespace these pids and start times belong to. */
  bootId: string;
  pidNamespace: string;
}

/**
 * Task processes run in their own process group (a stop reaches the whole tree), which also means
 * they outlive an executor killed with -9 and would keep its GPUs busy under the next executor's
 * feet. Each running task's group is recorded in `<workdirBase>/mlgraph-task-groups/`; an
 * executor starting with the same work directory stops, before it registers, the groups whose
 * executor is gone. A group is signalled only when its leader is the very process recorded: same
 * pid, same start time, same boot and pid namespace, and `MLGRAPH_TASK_RUN_ID` of the recorded task
 * in its environment. So a reused pid, a group whose leader already exited, another container's
 * processes or those of an executor still running (several may share a machine and directory)
 * are never touched. Linux only (/proc); elsewhere nothing is recorded.
 */
export class TaskProcessRegistry {
  private readonly dir: string;
  private readonly self: { pid: number; start: string; bootId: string; pidNamespace: string } | null;

  constructor(workdirBase: string) {
    this.dir = path.join(workdirBase, "mlgraph-task-groups");
    const start = startTimeOf(process.pid);
    const bootId = readText("/proc/sys/kernel/random/boot_id");
    const pidNamespace = readLink("/proc/self/ns/pid");
    this.self = start && bootId && pidNamespace ? { pid: process.pid, start, bootId, pidNamespace } : null;
  }

  /** Records a task's process group (its leader's pid) while it runs. Never throws. */
  record(pgid: number, taskRunId: string, log: Logger): void {
    const leaderStart = startTimeOf(pgid);
    if (!this.self || !leaderStart) return;
    const entry: GroupRecord = { pgid, leaderStart, taskRunId, agentPid: this.self.pid, agentStart: this.self.start, bootId: this.self.bootId, pidNamespace: this.self.pidNamespace };
    try {
      fs.mkdirSync(this.dir, { recursive: true });
      fs.writeFileSync(this.file(pgid), JSON.stringify(entry));
    } catch (err) {
      log.warn({ err: (err as Error).message }, "could not record a task's process group; a successor could not stop it after a crash");
    }
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
      if (entry.pidNamespace !== this.self.pidNamespace) continue; // another container's: not ours to judge
      if (entry.bootId !== this.self.bootId) {
        fs.rmSync(file, { force: true }); // from before a reboot: those processes are gone
        continue;
      }
      if (startTimeOf(entry.agentPid) === entry.agentStart) continue; // its executor still runs
      if (isRecordedLeader(entry)) orphans.push(entry);
      else fs.rmSync(file, { force: true });
    }
    if (orphans.length === 0) return 0;
    log.warn({ groups: orphans.map((o) => o.pgid) }, "stopping task processes left by an executor that died");
    for (const o of orphans) signalGroup(o.pgid, "SIGTERM");
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline && orphans.some(isRecordedLeader)) await new Promise((r) => setTimeout(r, 100));
    for (const o of orphans) {
      if (isRecordedLeader(o)) signalGroup(o.pgid, "SIGKILL");
      this.forget(o.pgid);
    }
    return orphans.length;
  }

  private file(pgid: number): string {
    return path.join(this.dir, String(pgid));
  }
}

/** Whether the recorded leader still runs: same pid and start time, leading its group, running the recorded task. */
function isRecordedLeader(entry: GroupRecord): boolean {
  const stat = procStat(entry.pgid);
  // Fields from the third on: pgrp is field 5 (index 2), starttime field 22 (index 19).
  if (!stat || stat[19] !== entry.leaderStart || Number(stat[2]) !== entry.pgid) return false;
  const environ = readText(`/proc/${entry.pgid}/environ`);
  return environ !== null && environ.split("\0").includes(`MLGRAPH_TASK_RUN_ID=${entry.taskRunId}`);
}

/** Field 22 of /proc/<pid>/stat, or null when there is no such process (or no /proc). */
function startTimeOf(pid: number): string | null {
  const stat = procStat(pid);
  return stat ? (stat[19] ?? null) : null;
}

/** /proc/<pid>/stat fields from the third (state) on; the command name may hold spaces. */
function procStat(pid: number): string[] | null {
  const text = readText(`/proc/${pid}/stat`);
  return text === null ? null : text.slice(text.lastIndexOf(")") + 2).split(" ");
}

function readText(file: string): string | null {
  try {
    return fs.readFileSync(file, "utf8").trim();
  } catch {
    return null;
  }
}

function readLink(file: string): string | null {
  try {
    return fs.readlinkSync(file);
  } catch {
    return null;
  }
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // already gone
  }
}
