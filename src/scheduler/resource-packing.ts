import { allocateGpus } from "../executors/gpu-detection.js";

/** What an executor has left after the tasks it is running. */
export interface FreeResources {
  cpu: number;
  memoryMb: number;
  /** Free GPUs with their normalised type (see `normalizeGpuType`). */
  gpus: { index: number; type: string }[];
}

/** What a queued task asks for. */
export interface TaskDemand {
  cpu: number;
  memoryMb: number;
  gpus: number;
  /** Required GPU type, or null for any. */
  gpuType: string | null;
}

/**
 * Picks, in the order given (priority order), the candidates that fit the executor's free
 * resources together, at most `max`, and the GPU indices each one gets. A candidate that does not
 * fit what is left is skipped, not waited for: the executor takes what it can run now, as a
 * single claim always did. Pure, so the batch claim's packing is unit-tested without a database.
 */
export function packTasks<T extends TaskDemand>(free: FreeResources, candidates: readonly T[], max: number): { task: T; gpus: number[] }[] {
  let cpu = free.cpu;
  let memoryMb = free.memoryMb;
  let gpus = free.gpus;
  const chosen: { task: T; gpus: number[] }[] = [];
  for (const task of candidates) {
    if (chosen.length >= max) break;
    // Cores are fractional (0.5); the epsilon keeps 0.1 + 0.2 from refusing a 0.3-core remainder.
    if (task.cpu > cpu + 1e-9 || task.memoryMb > memoryMb) continue;
    const eligible = task.gpuType ? gpus.filter((g) => g.type === task.gpuType) : gpus;
    const assigned = allocateGpus(
      eligible.map((g) => g.index),
      task.gpus,
    );
    if (assigned === null) continue;
    cpu -= task.cpu;
    memoryMb -= task.memoryMb;
    if (assigned.length > 0) gpus = gpus.filter((g) => !assigned.includes(g.index));
    chosen.push({ task, gpus: assigned });
  }
  return chosen;
}
