import type { Logger } from "pino";
import type { GpuInfo } from "../gpu-detection.js";

/** What the agent knows about one claimed attempt when it hands it to a runtime. */
export interface AttemptRequest {
  taskRunId: string;
  taskId: string;
  attempt: number;
  command: string[];
  /** The assignment's variables plus MLGRAPH_URL; a runtime adds its own (working directory, base env). */
  env: Record<string, string>;
  timeoutSeconds: number;
  /** The task's container image; null when its spec names none. */
  image: string | null;
  resources: { cpu: number; memoryMb: number; gpus: number; gpuType: string | null };
  /** GPU indices the server gave this attempt (local GPU slots). */
  gpus: number[];
  /** Between asking the task to stop and forcing it. */
  graceMs: number;
  /** The force after a timeout must come before the server gives the attempt up (one lease past it). */
  timeoutGraceMs: number;
  /** Complete output lines (stdout and stderr, in arrival order). */
  onLines: (lines: string[]) => void;
  log: Logger;
}

/**
 * How an attempt ended. EXECUTOR_LOST (the task's machine or pod went away under it) is not an
 * outcome an executor may report: the agent reports nothing, and the server's lease reaper fails
 * the attempt as EXECUTOR_LOST, the retry policy's "lost" case. NOT_STARTED: the runtime could not
 * set the attempt up on this executor (its working directory could not be created), nothing of
 * the task ran; the agent hands it back to the queue without using a retry and stops claiming
 * until `probe` succeeds. For Kubernetes: the API server could not be reached or took no Job
 * (5xx, 429, a quota exceeded).
 */
export interface AttemptResult {
  outcome: "SUCCEEDED" | "FAILED" | "TIMED_OUT" | "CANCELLED" | "EXECUTOR_LOST" | "NOT_STARTED";
  exitCode: number | null;
  error: string | null;
}

/** One attempt being run. `stop`/`cancel` may be called more than once and after the end. */
export interface RunningAttempt {
  readonly done: Promise<AttemptResult>;
  /** Stop it (lease lost, executor shutting down); `graceMs` bounds how long it may take to die. */
  stop(graceMs?: number): void;
  /** Stop it because its task was cancelled: the outcome is CANCELLED. */
  cancel(): void;
}

/** Where the agent runs attempts: local processes, Kubernetes Jobs. */
export interface AttemptRuntime {
  /** Whether attempts need the task's image and resources from the claim (older servers lack those fields). */
  readonly needsContainerFields: boolean;
  /** Before the executor registers: cleanup left by a predecessor. */
  init(): Promise<void>;
  /** The GPU slots the executor registers (the server hands them out to tasks). */
  gpus(): Promise<GpuInfo[]>;
  /** Starts an attempt; a failure to start resolves `done` with FAILED (or NOT_STARTED) rather than throwing. */
  start(request: AttemptRequest): RunningAttempt;
  /**
   * Checks that attempts can be set up here again after one came back NOT_STARTED (for local
   * processes: a directory can be created and removed in the work base); rejects while not.
   * Absent: the runtime never answers NOT_STARTED.
   */
  probe?(): Promise<void>;
  /** What `probe` checks, as the agent's log names it ("the work directory", "the Kubernetes API"). */
  readonly probeSubject?: string;
}
