import { DomainError } from "../../../src/services/errors.js";
import {
  MAX_POINTS_PER_CALL,
  validateMetricColumns,
  validateMetricPoints,
} from "../../../src/stores/metric-store/metric-validation.js";

function errorOf(fn: () => unknown): DomainError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(DomainError);
    return err as DomainError;
  }
  throw new Error("expected a DomainError");
}

const ok = (i: number) => ({ key: "loss/train", step: i, value: i / 2 });

describe("validateMetricPoints", () => {
  it("returns columns and defaults timestamps to now", () => {
    const cols = validateMetricPoints([ok(0), { key: "acc val.top-1", step: 7, value: -1.5, timestamp: new Date(5) }], 1234);
    expect(cols).toEqual({ keys: ["loss/train", "acc val.top-1"], steps: [0, 7], values: [0, -1.5], timestamps: [1234, 5] });
  });

  it.each([
    [{ key: "k", step: 0, value: Number.NaN }, "points[3].value", "points[3].value: must be a finite number"],
    [{ key: "k", step: 0, value: Infinity }, "points[3].value", "points[3].value: must be a finite number"],
    [{ key: "k", step: -1, value: 1 }, "points[3].step", "points[3].step: must be a non-negative integer"],
    [{ key: "k", step: 1.5, value: 1 }, "points[3].step", "points[3].step: must be a non-negative integer"],
    [{ key: "k", step: 2 ** 60, value: 1 }, "points[3].step", "points[3].step: must be a non-negative integer"],
    [{ key: "bad*key", step: 1, value: 1 }, "points[3].key", undefined],
    [{ key: "", step: 1, value: 1 }, "points[3].key", undefined],
    [{ key: "x".repeat(251), step: 1, value: 1 }, "points[3].key", undefined],
    [{ key: "k", step: 1, value: 1, timestamp: -5 }, "points[3].timestamp", undefined],
    [{ key: "k", step: 1, value: 1, timestamp: new Date(Number.NaN) }, "points[3].timestamp", undefined],
  ])("rejects %j naming index and field", (bad, field, message) => {
    const err = errorOf(() => validateMetricPoints([ok(0), ok(1), ok(2), bad as never]));
    expect(err.code).toBe("BAD_USER_INPUT");
    expect(err.field).toBe(field);
    if (message) expect(err.message).toBe(message);
    else expect(err.message.startsWith(`${field}: `)).toBe(true);
  });

  it("rejects more than the per-call limit", () => {
    const points = Array.from({ length: MAX_POINTS_PER_CALL + 1 }, (_, i) => ok(i));
    const err = errorOf(() => validateMetricPoints(points));
    expect(err.field).toBe("points");
    expect(err.message).toContain(String(MAX_POINTS_PER_CALL));
    expect(() => validateMetricPoints(points.slice(1))).not.toThrow();
  });
});

describe("validateMetricColumns", () => {
  it("applies the same rules with column-named fields", () => {
    const err = errorOf(() => validateMetricColumns({ keys: ["a", "b"], steps: [0, 1], values: [1, Number.NaN] }));
    expect(err.field).toBe("values[1]");
    expect(err.message).toBe("values[1]: must be a finite number");
    expect(errorOf(() => validateMetricColumns({ keys: ["a", "b/"], steps: [0, -1], values: [1, 2] })).field).toBe("steps[1]");
  });

  it("requires equal lengths", () => {
    expect(errorOf(() => validateMetricColumns({ keys: ["a", "b"], steps: [0], values: [1, 2] })).field).toBe("steps");
    expect(errorOf(() => validateMetricColumns({ keys: ["a"], steps: [0], values: [1], timestamps: [] })).field).toBe("timestamps");
  });

  it("accepts typed arrays", () => {
    const cols = validateMetricColumns({ keys: ["a", "a"], steps: Int32Array.from([1, 2]), values: Float64Array.from([0.5, 1]) }, 9);
    expect(cols).toEqual({ keys: ["a", "a"], steps: [1, 2], values: [0.5, 1], timestamps: [9, 9] });
  });
});
