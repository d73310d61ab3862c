import fs from "node:fs";
import path from "node:path";
import type { Logger } from "pino";
import { detectGpus, type GpuInfo, type GpuSpec } from "../gpu-detection.js";
import { TaskProcessRegistry } from "../task-process-registry.js";
import type { AttemptRequest, AttemptResult, AttemptRuntime, RunningAttempt } from "./attempt-runtime.js";
import { LocalProcess } from "./local-process.js";

export interface LocalAttemptRuntimeOptions {
  gpus: GpuSpec;
  /** Parent of each attempt's fresh working directory. */
  workdirBase: string;
  /** Where relative script paths in a task's argv are found. */
  pipelineDir: string;
  /** Environment every task process starts from (the agent's own); the attempt's variables go on top. */
  taskBaseEnv: Record<string, string>;
  graceMs: number;
  log: Logger;
}

/**
 * Argv elements that are relative paths of files under the pipeline directory become absolute,
 * so a spec can say `examples/pipelines/scripts/train.py` while the task runs in a fresh directory.
 */
export function resolveScriptPaths(argv: string[], pipelineDir: string): string[] {
  return argv.map((arg, i) => {
    if (i === 0 && !arg.includes("/")) return arg; // a program on PATH
    if (path.isAbsolute(arg) || arg.startsWith("-") || !/[/.]/.test(arg)) return arg;
    const candidate = path.resolve(pipelineDir, arg);
    return fs.existsSync(candidate) && fs.statSync(candidate).isFile() ? candidate : arg;
  });
}

/** Attempts as local processes, each in a fresh working directory and its own process group. */
export class LocalAttemptRuntime implements AttemptRuntime {
  readonly needsContainerFields = false;
  /** Process groups of running tasks, so a successor can stop them if this executor dies. */
  private readonly taskGroups: TaskProcessRegistry;

  constructor(private readonly options: LocalAttemptRuntimeOptions) {
    this.taskGroups = new TaskProcessRegistry(options.workdirBase);
  }

  async init(): Promise<void> {
    // Tasks an executor killed with -9 left running here would hold their GPUs and CPU while the
    // server hands out new tasks for them: stopped before this executor offers anything.
    await this.taskGroups.stopOrphans(this.options.graceMs, this.options.log);
  }

  gpus(): Promise<GpuInfo[]> {
    return detectGpus(this.options.gpus, undefined, (problem) => this.options.log.warn(problem));
  }

  /** A fresh directory under the work base (created first if missing). */
  private makeWorkdir(prefix: string): string {
    fs.mkdirSync(this.options.workdirBase, { recursive: true });
    return fs.mkdtempSync(path.join(this.options.workdirBase, prefix));
  }

  readonly probeSubject = "the work directory";

  /** What a task's set-up does (a fresh directory under the work base), undone at once. */
  async probe(): Promise<void> {
    fs.rmdirSync(this.makeWorkdir("mlgraph-probe-"));
  }

  start(req: AttemptRequest): RunningAttempt {
    const base = this.options.workdirBase;
    let workdir: string;
    try {
      workdir = this.makeWorkdir(`mlgraph-task-${req.taskId.replace(/[^A-Za-z0-9_.-]/g, "_")}-`);
    } catch (err) {
      // A full disk, say: this executor's problem, not the task's. Reported NOT_STARTED, so the
      // task goes back to the queue without using a retry (as FAILED, an executor with a full disk
      // burnt its pool's retries in seconds), and the agent stops claiming until probe() passes.
      // Unreported, the attempt would wait out its lease and fail as EXECUTOR_LOST, its cause nowhere.
      req.log.error({ err: (err as Error).message }, "could not create the task's working directory");
      const error = `mlgraph executor: could not create a working directory under ${base}: ${(err as Error).message}`;
      return { done: Promise.resolve({ outcome: "NOT_STARTED", exitCode: null, error }), stop() {}, cancel() {} };
    }
    const pipelineDir = this.options.pipelineDir;
    const proc = new LocalProcess({
      argv: resolveScriptPaths(req.command, pipelineDir),
      env: { ...this.options.taskBaseEnv, ...req.env, MLGRAPH_WORKDIR: workdir, MLGRAPH_PIPELINE_DIR: pipelineDir },
      cwd: workdir,
      timeoutMs: req.timeoutSeconds * 1000,
      graceMs: req.graceMs,
      timeoutGraceMs: req.timeoutGraceMs,
      onLines: (_stream, lines) => req.onLines(lines),
    });
    const pgid = proc.pid;
    if (pgid !== undefined) this.taskGroups.record(pgid, req.taskRunId, req.log);
    const done = proc.done.then((result): AttemptResult => {
      if (pgid !== undefined) this.taskGroups.forget(pgid);
      if (result.spawnError) req.onLines([`mlgraph executor: could not start ${req.command[0]}: ${result.spawnError}`]);
      try {
        fs.rmSync(workdir, { recursive: true, force: true });
      } catch (err) {
        // A directory the executor cannot remove (read-only subdirectories of a non-root task, a
        // tree deeper than PATH_MAX) must not cost the attempt its outcome.
        req.log.warn({ err: (err as Error).message, workdir }, "could not remove the task's working directory");
      }
      const outcome = result.cancelled ? "CANCELLED" : result.timedOut ? "TIMED_OUT" : result.exitCode === 0 ? "SUCCEEDED" : "FAILED";
      const error =
        outcome === "SUCCEEDED"
          ? null
          : result.spawnError ?? (result.timedOut ? `timed out after ${req.timeoutSeconds} s` : result.cancelled ? "cancelled" : `exited with ${result.exitCode ?? result.signal}`);
      return { outcome, exitCode: result.exitCode, error };
    });
    return { done, stop: (graceMs) => proc.stop(graceMs), cancel: () => proc.cancel() };
  }
}
