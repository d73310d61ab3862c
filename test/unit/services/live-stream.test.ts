import type { RequestContext } from "../../../src/services/context";
import { liveStream } from "../../../src/services/live-stream";
import type { EventBus } from "../../../src/stores/event-bus/event-bus";
import { InProcessEventBus } from "../../../src/stores/event-bus/in-process-event-bus";

/** The in-process bus, counting subscriptions held and unsubscribe calls. */
class CountingBus implements EventBus {
  private readonly inner = new InProcessEventBus();
  held = 0;
  unsubscribes = 0;
  publish(topic: string, payload: unknown) {
    return this.inner.publish(topic, payload);
  }
  async subscribe(topic: string, handler: (payload: unknown) => void) {
    const off = await this.inner.subscribe(topic, handler);
    this.held++;
    return async () => {
      this.unsubscribes++;
      this.held--;
      await off();
    };
  }
  close() {
    return this.inner.close();
  }
}

// Bounds for "never settles" (the bugs hung): generous, as a loaded machine may pause a process.
const within = <T>(p: Promise<T>, ms = 5_000) =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`not settled within ${ms} ms`)), ms))]);

const until = async (test: () => boolean) => {
  for (const deadline = Date.now() + 5_000; Date.now() < deadline && !test(); ) await new Promise((r) => setTimeout(r, 5));
  expect(test()).toBe(true);
};

describe("liveStream", () => {
  const ctxOn = (bus: EventBus) => ({ services: { bus }, principal: { role: "viewer" } }) as unknown as RequestContext;

  it("releases its topic at once when ended while waiting on a quiet topic", async () => {
    const bus = new CountingBus();
    const stream = liveStream<number, number>(ctxOn(bus), "run:quiet", { map: (e) => e });
    const waiting = stream.next(); // parked: nothing is ever published
    await until(() => bus.held === 1);
    await expect(within(stream.return(undefined))).resolves.toEqual({ value: undefined, done: true });
    await expect(within(waiting)).resolves.toEqual({ value: undefined, done: true });
    expect(bus.held).toBe(0);
    expect(bus.unsubscribes).toBe(1); // once, though both the consumer and the stream's own cleanup end it
  });

  it("delivers events, then releases its topic when ended between events", async () => {
    const bus = new CountingBus();
    const stream = liveStream<number, number>(ctxOn(bus), "run:busy", { map: (e) => e * 10, filter: (e) => e !== 2 });
    const first = stream.next();
    await until(() => bus.held === 1);
    await bus.publish("run:busy", 1);
    await bus.publish("run:busy", 2);
    await bus.publish("run:busy", 3);
    expect(await within(first)).toEqual({ value: 10, done: false });
    expect(await within(stream.next())).toEqual({ value: 30, done: false });
    await within(stream.return(undefined));
    expect([bus.held, bus.unsubscribes]).toEqual([0, 1]);
    expect(await stream.next()).toEqual({ value: undefined, done: true });
  });

  it("releases its topic when ended during the replay", async () => {
    const bus = new CountingBus();
    async function* replay() {
      yield 1;
      yield 2;
    }
    const stream = liveStream<number, number>(ctxOn(bus), "run:replay", { map: (e) => e, replay: () => replay() });
    expect(await within(stream.next())).toEqual({ value: 1, done: false });
    await within(stream.return(undefined));
    expect([bus.held, bus.unsubscribes]).toEqual([0, 1]);
  });
});
