import { lttb } from "../../../src/stores/metric-store/lttb.js";

const series = (len: number, f: (i: number) => number) => Array.from({ length: len }, (_, i) => ({ step: i * 3, value: f(i) }));

describe("lttb", () => {
  it("returns every point when n covers them, and handles tiny n", () => {
    const pts = series(5, (i) => i);
    expect(lttb(pts, 5)).toEqual(pts);
    expect(lttb(pts, 50)).toEqual(pts);
    expect(lttb(pts, 50)).not.toBe(pts);
    expect(lttb([], 3)).toEqual([]);
    expect(lttb(pts, 1)).toEqual([pts[0]]);
    expect(lttb(pts, 2)).toEqual([pts[0], pts[4]]);
  });

  it("keeps first and last, returns exactly n points with increasing steps, and keeps a spike", () => {
    const pts = series(10_000, (i) => (i === 4_321 ? 100 : Math.sin(i / 50)));
    for (const n of [3, 10, 137, 1_000, 9_999]) {
      const out = lttb(pts, n);
      expect(out).toHaveLength(n);
      expect(out[0]).toBe(pts[0]);
      expect(out[n - 1]).toBe(pts[pts.length - 1]);
      for (let i = 1; i < out.length; i++) expect(out[i].step).toBeGreaterThan(out[i - 1].step);
      if (n >= 10) expect(out.some((p) => p.value === 100)).toBe(true);
    }
  });

  it("keeps extra fields of the points it picks", () => {
    const pts = series(100, (i) => i % 7).map((p) => ({ ...p, timestamp: p.step * 10 }));
    for (const p of lttb(pts, 10)) expect(p.timestamp).toBe(p.step * 10);
  });
});
