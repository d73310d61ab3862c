import { PrintedPoints } from "../../../src/cli/printed-points";

const at = (ms: number) => new Date(Date.UTC(2026, 0, 1) + ms).toISOString();

describe("PrintedPoints (runs watch --from-step across reconnects)", () => {
  it("lets each point through once, however often it is replayed", () => {
    const printed = new PrintedPoints();
    const points = [0, 1, 2].map((step) => ({ key: "loss", step, timestamp: at(step), value: 1 / (step + 1) }));
    expect(points.map((p) => printed.firstTime(p))).toEqual([true, true, true]);
    expect(points.map((p) => printed.firstTime({ ...p }))).toEqual([false, false, false]);
    // Same step, another timestamp or value: another point (a run logging everything at step 0).
    expect(printed.firstTime({ key: "loss", step: 0, timestamp: at(10), value: 1 })).toBe(true);
    expect(printed.firstTime({ key: "loss", step: 0, timestamp: at(0), value: 0.5 })).toBe(true);
    expect(printed.firstTime({ key: "acc", step: 0, timestamp: at(0), value: 1 })).toBe(true);
  });

  it("stays bounded: beyond the cap the oldest fold into a per-key watermark that still stops their replay", () => {
    const printed = new PrintedPoints(100);
    const point = (step: number, key = "loss") => ({ key, step, timestamp: at(step), value: step });
    for (let step = 0; step < 1000; step++) expect(printed.firstTime(point(step))).toBe(true);
    expect(printed.size).toBe(100);
    // The whole replay after a reconnect: nothing is printed twice.
    for (let step = 0; step < 1000; step++) expect(printed.firstTime(point(step))).toBe(false);
    // New points go through: later ones, another key, and an old step logged now.
    expect(printed.firstTime(point(1000))).toBe(true);
    expect(printed.firstTime(point(5, "acc"))).toBe(true);
    expect(printed.firstTime({ key: "loss", step: 5, timestamp: at(5000), value: 1 })).toBe(true);
  });
});
