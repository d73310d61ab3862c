import { packTasks, type TaskDemand } from "../../../src/scheduler/resource-packing";

const task = (id: string, demand: Partial<TaskDemand> = {}) => ({ id, cpu: 1, memoryMb: 512, gpus: 0, gpuType: null, ...demand });
const ids = (picked: { task: { id: string } }[]) => picked.map((p) => p.task.id);

describe("packTasks", () => {
  it("takes candidates in order while cores and memory last, skipping one that no longer fits", () => {
    const free = { cpu: 3, memoryMb: 2048, gpus: [] };
    const picked = packTasks(free, [task("a", { cpu: 2 }), task("b", { cpu: 2 }), task("c"), task("d")], 10);
    expect(ids(picked)).toEqual(["a", "c"]);
    expect(ids(packTasks({ cpu: 8, memoryMb: 1000, gpus: [] }, [task("a"), task("b"), task("c", { memoryMb: 100 })], 10))).toEqual(["a", "c"]);
  });

  it("stops at max", () => {
    expect(ids(packTasks({ cpu: 100, memoryMb: 1e6, gpus: [] }, [task("a"), task("b"), task("c")], 2))).toEqual(["a", "b"]);
  });

  it("never gives one GPU to two tasks, and honours the GPU type", () => {
    const free = {
      cpu: 16,
      memoryMb: 1e6,
      gpus: [
        { index: 0, type: "A100" },
        { index: 1, type: "A100" },
        { index: 2, type: "H100" },
      ],
    };
    const picked = packTasks(free, [task("two", { gpus: 2 }), task("any", { gpus: 1 }), task("a100", { gpus: 1, gpuType: "A100" }), task("h100", { gpus: 1, gpuType: "H100" })], 10);
    expect(picked.map((p) => [p.task.id, p.gpus])).toEqual([
      ["two", [0, 1]],
      ["any", [2]],
    ]);
    const typed = packTasks(free, [task("h", { gpus: 1, gpuType: "H100" }), task("a", { gpus: 2, gpuType: "A100" }), task("more", { gpus: 1 })], 10);
    expect(typed.map((p) => [p.task.id, p.gpus])).toEqual([
      ["h", [2]],
      ["a", [0, 1]],
    ]);
  });

  it("adds fractional cores without refusing an exact fit", () => {
    const picked = packTasks({ cpu: 0.3, memoryMb: 1e6, gpus: [] }, [task("a", { cpu: 0.1 }), task("b", { cpu: 0.2 }), task("c", { cpu: 0.1 })], 10);
    expect(ids(picked)).toEqual(["a", "b"]);
  });
});
