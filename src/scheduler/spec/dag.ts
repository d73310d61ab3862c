import type { PipelineSpec } from "./pipeline-spec.js";

/** Minimal view of a task for graph algorithms. */
export interface DagNode {
  id: string;
  depends_on: readonly string[];
}

/** A dependency cycle: `ids[0]` depends on `ids[1]` … depends on `ids[0]` again. */
export interface DependencyCycle {
  ids: string[];
  /** Index (in the node list) of the task whose `depends_on` entry closes the cycle. */
  closingTaskIndex: number;
  /** Index of that entry within its `depends_on`. */
  closingDependencyIndex: number;
}

/**
 * Finds one cycle per strongly connected component that has one (Tarjan), so a spec with two
 * separate cycles reports both. Unknown dependencies and repeated ids (first one wins) are ignored
 * here; they are reported by their own checks. Deterministic: follows declaration order.
 */
export function findCycles(nodes: readonly DagNode[]): DependencyCycle[] {
  const indexOf = new Map<string, number>();
  nodes.forEach((node, i) => {
    if (!indexOf.has(node.id)) indexOf.set(node.id, i);
  });
  const edges = nodes.map((node, i) =>
    indexOf.get(node.id) === i ? node.depends_on.map((dep) => indexOf.get(dep)).filter((j): j is number => j !== undefined) : [],
  );

  // Iterative Tarjan: pipelines may hold 1,000 tasks in a chain, deeper than is wise to recurse.
  const order = new Array<number>(nodes.length).fill(-1);
  const low = new Array<number>(nodes.length).fill(0);
  const onStack = new Array<boolean>(nodes.length).fill(false);
  const stack: number[] = [];
  const components: number[][] = [];
  let counter = 0;
  for (let start = 0; start < nodes.length; start++) {
    if (order[start] !== -1) continue;
    const work: [number, number][] = [[start, 0]];
    order[start] = low[start] = counter++;
    stack.push(start);
    onStack[start] = true;
    while (work.length > 0) {
      const frame = work[work.length - 1]!;
      const [v, edgeIndex] = frame;
      const next = edges[v]![edgeIndex];
      if (next !== undefined) {
        frame[1]++;
        if (order[next] === -1) {
          order[next] = low[next] = counter++;
          stack.push(next);
          onStack[next] = true;
          work.push([next, 0]);
        } else if (onStack[next]) {
          low[v] = Math.min(low[v]!, order[next]!);
        }
        continue;
      }
      work.pop();
      if (work.length > 0) {
        const parent = work[work.length - 1]![0];
        low[parent] = Math.min(low[parent]!, low[v]!);
      }
      if (low[v] === order[v]) {
        const component: number[] = [];
        let w: number;
        do {
          w = stack.pop()!;
          onStack[w] = false;
          component.push(w);
        } while (w !== v);
        components.push(component);
      }
    }
  }

  const cycles: DependencyCycle[] = [];
  for (const component of components) {
    const members = new Set(component);
    const first = Math.min(...component);
    if (component.length === 1 && !edges[first]!.includes(first)) continue;
    const path = shortestCycleFrom(first, edges, members);
    const closing = path[path.length - 1]!;
    cycles.push({
      ids: [...path, first].map((i) => nodes[i]!.id),
      closingTaskIndex: closing,
      closingDependencyIndex: nodes[closing]!.depends_on.indexOf(nodes[first]!.id),
    });
  }
  return cycles.sort((a, b) => a.closingTaskIndex - b.closingTaskIndex || a.closingDependencyIndex - b.closingDependencyIndex);
}

/** BFS inside one strongly connected component: the shortest way from `start` back to itself. */
function shortestCycleFrom(start: number, edges: number[][], members: Set<number>): number[] {
  const parent = new Map<number, number>();
  const queue = [start];
  for (let head = 0; head < queue.length; head++) {
    const v = queue[head]!;
    for (const w of edges[v]!) {
      if (!members.has(w)) continue;
      if (w === start) {
        const path = [v];
        while (path[0] !== start) path.unshift(parent.get(path[0]!)!);
        return path;
      }
      if (!parent.has(w) && w !== start) {
        parent.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start]; // unreachable for a real cycle
}

/**
 * Task ids in an order where every task comes after all of its dependencies (Kahn). Ties are
 * broken by declaration order, so the result is stable. The spec must be validated (acyclic).
 */
export function topologicalOrder(spec: PipelineSpec): string[] {
  const tasks = spec.pipeline.tasks;
  const position = new Map(tasks.map((t, i) => [t.id, i]));
  const remaining = tasks.map((t) => t.depends_on.length);
  const dependents: number[][] = tasks.map(() => []);
  tasks.forEach((t, i) => t.depends_on.forEach((dep) => dependents[position.get(dep)!]!.push(i)));

  // A sorted "ready" list keeps declaration order among tasks that become ready together.
  const ready = tasks.map((_, i) => i).filter((i) => remaining[i] === 0);
  const out: string[] = [];
  while (ready.length > 0) {
    const next = ready.shift()!;
    out.push(tasks[next]!.id);
    for (const d of dependents[next]!) {
      remaining[d]!--;
      if (remaining[d] === 0) insertSorted(ready, d);
    }
  }
  if (out.length !== tasks.length) throw new Error("topologicalOrder: spec has a dependency cycle (validate it first)");
  return out;
}

/** Tasks with no dependencies, in declaration order: what a new pipeline run queues first. */
export function roots(spec: PipelineSpec): string[] {
  return spec.pipeline.tasks.filter((t) => t.depends_on.length === 0).map((t) => t.id);
}

/** Ids of the tasks that list `taskId` in their `depends_on`, in declaration order. */
export function dependentsOf(spec: PipelineSpec, taskId: string): string[] {
  return spec.pipeline.tasks.filter((t) => t.depends_on.includes(taskId)).map((t) => t.id);
}

function insertSorted(list: number[], value: number): void {
  let i = list.length;
  while (i > 0 && list[i - 1]! > value) i--;
  list.splice(i, 0, value);
}
