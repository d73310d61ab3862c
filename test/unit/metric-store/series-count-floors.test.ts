import { SeriesCountFloors } from "../../../src/services/series-count-floors.js";

describe("SeriesCountFloors", () => {
  it("remembers the largest count seen per (run, key) and never lowers it", () => {
    const floors = new SeriesCountFloors();
    expect(floors.get("r1", "loss")).toBeUndefined();
    floors.record("r1", "loss", 10);
    floors.record("r1", "loss", 5); // an older read answering late
    expect(floors.get("r1", "loss")).toBe(10);
    floors.record("r1", "loss", 12);
    expect(floors.get("r1", "loss")).toBe(12);
    expect(floors.get("r1", "acc")).toBeUndefined();
    expect(floors.get("r2", "loss")).toBeUndefined();
  });

  it("keeps run and key apart even when their text could run together", () => {
    const floors = new SeriesCountFloors();
    floors.record("ab", "c", 1);
    expect(floors.get("a", "bc")).toBeUndefined();
  });

  it("starts over when full instead of growing without bound", () => {
    const floors = new SeriesCountFloors(2);
    floors.record("r", "a", 1);
    floors.record("r", "b", 2);
    floors.record("r", "c", 3);
    expect(floors.get("r", "c")).toBe(3);
    expect(floors.get("r", "a")).toBeUndefined();
  });
});
