import { spawn, type ChildProcess } from "node:child_process";
import { setLongTimeout } from "../long-timer.js";

/** How a local process ended. */
export interface ProcessResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  cancelled: boolean;
  /** The spawn itself failed (e.g. the program does not exist). */
  spawnError?: string;
}

export interface LocalProcessOptions {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  timeoutMs: number;
  /** Between SIGTERM and SIGKILL when stopping (cancel, timeout, agent shutdown). */
  graceMs: number;
  /** Between a timeout's SIGTERM and its SIGKILL, when shorter than `graceMs`. */
  timeoutGraceMs?: number;
  /** Complete lines as they are written, per stream. */
  onLines: (stream: "stdout" | "stderr", lines: string[]) => void;
}

/**
 * Runs one task attempt as a local process: argv as given (a shell only when argv says `sh -c`,
 * which the spec's `operator: shell` produces), in its own process group so a stop reaches the
 * whole tree; stdout/stderr split into lines; timeout and cancellation send SIGTERM, then SIGKILL
 * after the grace period.
 */
export class LocalProcess {
  private child: ChildProcess | null = null;
  private killTimer: NodeJS.Timeout | null = null;
  /** When the pending SIGKILL is due (epoch ms). */
  private killAt = Infinity;
  private timedOut = false;
  private cancelled = false;
  /** The group leader (the process started) has exited; its group may live on. */
  private leaderExited = false;
  readonly done: Promise<ProcessResult>;

  constructor(private readonly options: LocalProcessOptions) {
    this.done = this.start();
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  private start(): Promise<ProcessResult> {
    const { argv, env, cwd, timeoutMs } = this.options;
    return new Promise<ProcessResult>((resolve) => {
      let child: ChildProcess;
      try {
        child = spawn(argv[0]!, argv.slice(1), { cwd, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
      } catch (err) {
        resolve({ exitCode: null, signal: null, timedOut: false, cancelled: false, spawnError: (err as Error).message });
        return;
      }
      this.child = child;
      const flushers = [this.pipeLines(child.stdout!, "stdout"), this.pipeLines(child.stderr!, "stderr")];
      const timer = setLongTimeout(() => {
        this.timedOut = true;
        this.stop(Math.min(this.options.graceMs, this.options.timeoutGraceMs ?? Infinity));
      }, timeoutMs);
      let spawnError: string | undefined;
      child.once("error", (err) => {
        spawnError = err.message;
      });
      let streamsTimer: NodeJS.Timeout | undefined;
      // The attempt ends with its main process, as a container ends with its first process: what
      // is left of its group (a background job, a child still holding stdout) is stopped. Without
      // this, "close" waited for the leftovers, so neither timeout nor cancel nor a lost lease
      // could end the attempt, and the leftovers kept their GPUs.
      child.once("exit", () => {
        this.leaderExited = true;
        if (groupExists(child.pid!)) this.stop();
        // Pipes held by processes outside the group (one that called setsid) would still keep
        // "close" away: once the group had its SIGKILL, stop reading them.
        streamsTimer = setTimeout(() => {
          child.stdout?.destroy();
          child.stderr?.destroy();
        }, this.options.graceMs + 1000);
      });
      child.once("close", (code, signal) => {
        timer.clear();
        clearTimeout(streamsTimer);
        if (this.killTimer) clearTimeout(this.killTimer);
        flushers.forEach((f) => f());
        resolve({ exitCode: code, signal, timedOut: this.timedOut, cancelled: this.cancelled, spawnError });
      });
    });
  }

  private pipeLines(stream: NodeJS.ReadableStream, name: "stdout" | "stderr"): () => void {
    let partial = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      const parts = (partial + chunk).split(/\r?\n/);
      partial = parts.pop() ?? "";
      if (parts.length) this.options.onLines(name, parts);
    });
    return () => {
      if (partial) this.options.onLines(name, [partial]);
      partial = "";
    };
  }

  /** Asks the process to stop because its task was cancelled. */
  cancel(): void {
    this.cancelled = true;
    this.stop();
  }

  /**
   * SIGTERM to the process group, SIGKILL after the grace period (or `graceMs` when given). A
   * second stop with an earlier deadline brings the SIGKILL forward (a timeout or a lost lease
   * must not wait out the grace an earlier, gentler stop allowed); a later one changes nothing.
   */
  stop(graceMs = this.options.graceMs): void {
    const pid = this.child?.pid;
    if (!pid) return;
    const killAt = Date.now() + graceMs;
    if (this.killTimer) {
      if (killAt >= this.killAt) return;
      clearTimeout(this.killTimer);
    } else {
      // Once the leader exited its pid can be reused, but not while its group still has members
      // (the kernel keeps a group's id allocated): signal only a group that still exists.
      if (this.leaderExited && !groupExists(pid)) return;
      signalGroup(pid, "SIGTERM", !this.leaderExited);
    }
    this.killAt = killAt;
    this.killTimer = setTimeout(() => {
      // After the leader exited, the group id is ours only while the group lasts: checked again.
      if (this.leaderExited && !groupExists(pid)) return;
      signalGroup(pid, "SIGKILL", !this.leaderExited);
    }, graceMs);
  }
}

/** Whether a process group with this id still has members. */
function groupExists(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Signals the group; `orLeader`: the leader alone when the group cannot be signalled (it is still ours). */
function signalGroup(pid: number, signal: NodeJS.Signals, orLeader: boolean): void {
  try {
    process.kill(-pid, signal);
  } catch {
    if (!orLeader) return;
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}
