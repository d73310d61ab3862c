import { decodeRunCursor, encodeRunCursor, orderSignature, seekCondition } from "../../../src/services/run-search-cursor";
import type { CompiledSortKey } from "../../../src/services/run-filter";
import { encodeCursor, encodeKeyCursor } from "../../../src/services/pagination";

const KEYS: CompiledSortKey[] = [
  { expression: "r.end_time", direction: "DESC", type: "timestamptz", nullable: true },
  { expression: "m0.v", direction: "ASC", type: "float8", nullable: true },
  { expression: "r.id", direction: "ASC", type: "uuid", nullable: false },
];
const ID = "0b4f6a1e-6c55-4c1b-9a43-3f0f6e2f9a10";
const EXP = "7d0c2f7e-1b2a-4c3d-8e4f-5a6b7c8d9e0f";

describe("run search key cursors", () => {
  const sig = orderSignature([{ entity: "attributes", key: "end_time", direction: "DESC" }, { entity: "metrics", key: "loss", direction: "ASC" }]);

  it("round-trips the sort-key values of the last run, nulls included", () => {
    const values = ["2026-11-27T10:00:00.123456", null, ID];
    expect(decodeRunCursor(encodeRunCursor(sig, EXP, values), sig, KEYS)).toEqual({ experimentId: EXP, values });
  });

  it("leaves offset cursors (and no cursor) to offset paging", () => {
    expect(decodeRunCursor(encodeCursor(4), sig, KEYS)).toBeUndefined();
    expect(decodeRunCursor(null, sig, KEYS)).toBeUndefined();
  });

  it("refuses a cursor of another ordering, and values that would not cast back, naming after", () => {
    const otherSig = orderSignature([{ entity: "attributes", key: "end_time", direction: "ASC" }, { entity: "metrics", key: "loss", direction: "ASC" }]);
    expect(otherSig).not.toBe(sig);
    const refused = (cursor: string) => expect(() => decodeRunCursor(cursor, sig, KEYS)).toThrow(expect.objectContaining({ code: "BAD_USER_INPUT", field: "after" }));
    refused(encodeRunCursor(otherSig, EXP, ["2026-11-27T10:00:00.123456", null, ID]));
    refused(encodeRunCursor(sig, EXP, ["yesterday", null, ID]));
    // Values PostgreSQL would refuse to cast back (answered as a storage error, not naming after).
    refused(encodeRunCursor(sig, EXP, ["2026-13-27T10:00:00.123456", null, ID]));
    refused(encodeRunCursor(sig, EXP, ["2026-02-30T10:00:00.123456", null, ID]));
    refused(encodeRunCursor(sig, EXP, ["2026-11-27T10:00:00.123456", "1e999", ID]));
    refused(encodeRunCursor(sig, EXP, ["2026-11-27T10:00:00.123456", null, "------------------------------------"]));
    refused(encodeRunCursor(sig, EXP, ["2026-11-27T10:00:00.123456", "1; DROP TABLE runs", ID]));
    refused(encodeRunCursor(sig, EXP, ["2026-11-27T10:00:00.123456", null]));
    refused(encodeRunCursor(sig, "not-an-experiment-id", ["2026-11-27T10:00:00.123456", null, ID]));
    refused(encodeKeyCursor(`runs:${sig}:not json`));
    refused(encodeKeyCursor("7"));
  });

  it("seeks past the last run: equal on earlier keys and after on one, where nothing follows a null but ties", () => {
    const params: string[] = [];
    const sql = seekCondition(KEYS, [null, "0.5", ID], (v) => (params.push(v), `$${params.length}`));
    expect(params).toEqual(["0.5", ID]);
    expect(sql).toBe(
      "((r.end_time IS NULL AND (m0.v > CAST($1 AS float8) OR m0.v IS NULL)) OR " +
        "(r.end_time IS NULL AND m0.v = CAST($1 AS float8) AND r.id > CAST($2 AS uuid)))",
    );
    const withTime = seekCondition(KEYS, ["2026-11-27T10:00:00.123456", null, ID], () => "$9");
    expect(withTime).toContain("(r.end_time < (CAST($9 AS timestamp) AT TIME ZONE 'UTC') OR r.end_time IS NULL)");
  });
});
