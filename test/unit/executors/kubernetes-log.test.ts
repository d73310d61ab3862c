import { LogLineDedupe, parseTimestamped, sinceTimeOf } from "../../../src/executors/runtimes/kubernetes-log";

describe("kubernetes log rereads", () => {
  it("parses the kubelet's RFC3339Nano prefix, fraction cut or absent, offsets included", () => {
    expect(parseTimestamped("2026-11-26T10:00:00.5Z hello world")).toEqual({ ts: 1795687200_500_000_000n, text: "hello world" });
    expect(parseTimestamped("2026-11-26T11:00:00.000000001+01:00 x")).toEqual({ ts: 1795687200_000_000_001n, text: "x" });
    expect(parseTimestamped("2026-11-26T10:00:00Z ")).toEqual({ ts: 1795687200_000_000_000n, text: "" });
    expect(parseTimestamped("no timestamp here")).toBeNull();
    expect(sinceTimeOf(1795687200_999_999_999n)).toBe("2026-11-26T10:00:00Z");
  });

  it("drops what a reread repeats: older lines, and as many at the newest timestamp as were forwarded", () => {
    const lines = new LogLineDedupe();
    expect(lines.sinceTime()).toBeUndefined();
    const first = lines.read();
    const t = (ns: number, text: string) => `2026-11-26T10:00:00.${String(ns).padStart(9, "0")}Z ${text}`;
    expect([t(1, "a"), t(2, "b"), t(2, "c")].map(first)).toEqual(["a", "b", "c"]);
    expect(lines.sinceTime()).toBe("2026-11-26T10:00:00Z");
    // The reread starts at the second: a, b and c again, then a fourth line sharing c's timestamp, then new ones.
    const second = lines.read();
    expect([t(1, "a"), t(2, "b"), t(2, "c"), t(2, "d"), t(3, "e"), "untimestamped"].map(second)).toEqual([null, null, null, "d", "e", "untimestamped"]);
    const third = lines.read();
    expect([t(2, "d"), t(3, "e"), t(3, "f")].map(third)).toEqual([null, null, "f"]);
  });
});
