import { iterateTopic } from "../../../src/stores/event-bus/event-bus.js";
import { InProcessEventBus } from "../../../src/stores/event-bus/in-process-event-bus.js";

describe("iterateTopic queue bounds", () => {
  it("ends a stream whose queued events outweigh maxQueuedWeight, and counts taken events out of the weight", async () => {
    const bus = new InProcessEventBus();
    const events = iterateTopic<{ points: number[] }>(bus, "t", { weigh: (e) => e.points.length, maxQueuedWeight: 25 });
    await events.ready;
    const batch = (n: number) => ({ points: Array.from({ length: n }, (_, i) => i) });
    await bus.publish("t", batch(10));
    await bus.publish("t", batch(10));
    // Taking one frees its weight: 10 queued, then 10 + 10 = 20 fits.
    expect((await events.next()).value.points).toHaveLength(10);
    await bus.publish("t", batch(10));
    expect(events.queued).toBe(2);
    // 20 queued + 10 > 25: the stream fails instead of holding ever more for a reader that stopped.
    await bus.publish("t", batch(10));
    await expect(events.next()).resolves.toMatchObject({ done: false });
    await expect(events.next()).resolves.toMatchObject({ done: false });
    await expect(events.next()).rejects.toThrow(/fell behind by more than 25 queued items/);
    await bus.close();
  });

  it("counts events when no weight is given", async () => {
    const bus = new InProcessEventBus();
    const events = iterateTopic<number>(bus, "t", { maxQueue: 2 });
    await events.ready;
    for (const n of [1, 2, 3]) await bus.publish("t", n);
    await expect(events.next()).resolves.toEqual({ value: 1, done: false });
    await expect(events.next()).resolves.toEqual({ value: 2, done: false });
    await expect(events.next()).rejects.toThrow(/fell behind by more than 2 events/);
    await bus.close();
  });
});
