import { normalizeGpuType, paramEnvName, validatePool } from "../../../src/scheduler/task-queue";
import { PendingEvents, pipelineTopics } from "../../../src/scheduler/pipeline-events";
import { QueueNotifier } from "../../../src/scheduler/queue-notifier";
import { InProcessEventBus } from "../../../src/stores/event-bus/in-process-event-bus";
import { rows } from "../../../src/scheduler/sql";
import { parseNvidiaSmiCsv } from "../../../src/executors/gpu-detection";

describe("task queue helpers", () => {
  it("matches nvidia-smi product names with node-label spelling", () => {
    expect(normalizeGpuType("NVIDIA H100 80GB HBM3")).toBe("NVIDIA-H100-80GB-HBM3");
    expect(normalizeGpuType("NVIDIA-H100-80GB-HBM3")).toBe("NVIDIA-H100-80GB-HBM3");
  });

  it("matches a spec's gpu_type label against what nvidia-smi printed on a real H100 host", () => {
    // Captured verbatim from `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits`.
    const [gpu] = parseNvidiaSmiCsv("0, NVIDIA H100 80GB HBM3, 81559\n");
    expect(gpu).toEqual({ index: 0, model: "NVIDIA H100 80GB HBM3", memoryMb: 81559 });
    expect(normalizeGpuType(gpu!.model)).toBe(normalizeGpuType("NVIDIA-H100-80GB-HBM3"));
  });

  it("names param env vars safely", () => {
    expect(paramEnvName("lr")).toBe("MLGRAPH_PARAM_LR");
    expect(paramEnvName("batch-size.v2")).toBe("MLGRAPH_PARAM_BATCH_SIZE_V2");
  });

  it("validates pool names and names the field", () => {
    expect(validatePool("gpu-h100", "input.pool")).toBe("gpu-h100");
    expect(() => validatePool("", "input.pool")).toThrow(/input.pool/);
    expect(() => validatePool("a b", "input.pool")).toThrow(/input.pool/);
  });

  it("evens out typeorm's [rows, count] answers", async () => {
    expect(await rows({ query: async () => [[{ a: 1 }], 1] }, "UPDATE")).toEqual([{ a: 1 }]);
    expect(await rows({ query: async () => [{ a: 1 }, { a: 2 }] }, "SELECT")).toEqual([{ a: 1 }, { a: 2 }]);
  });
});

describe("QueueNotifier", () => {
  it("wakes a waiter registered before the notification, even when it starts waiting afterwards", async () => {
    const bus = new InProcessEventBus();
    const notifier = new QueueNotifier(bus);
    const waiter = await notifier.register("cpu");
    const events = new PendingEvents();
    events.pools.add("cpu");
    await events.publish(bus);
    await new Promise((r) => setImmediate(r));
    expect(await waiter.wait(5_000)).toBe(true);
    waiter.dispose();
    await notifier.close();
    await bus.close();
  });

  it("does not wake waiters of other pools, and times out", async () => {
    const bus = new InProcessEventBus();
    const notifier = new QueueNotifier(bus);
    const waiter = await notifier.register("gpu");
    await bus.publish(pipelineTopics.queue("cpu"), {});
    expect(await waiter.wait(50)).toBe(false);
    waiter.dispose();
    await notifier.close();
    await bus.close();
  });

  it("close() ends every wait at once", async () => {
    const bus = new InProcessEventBus();
    const notifier = new QueueNotifier(bus);
    const waiter = await notifier.register("cpu");
    const waiting = waiter.wait(60_000);
    await notifier.close();
    expect(await waiting).toBe(true);
    await bus.close();
  });
});
