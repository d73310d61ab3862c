import { isUnavailable } from "../../../src/services/errors.js";

/** Which store failures the API answers UNAVAILABLE (clients retry those) rather than INTERNAL_SERVER_ERROR. */
describe("isUnavailable", () => {
  const withCode = (message: string, code: string) => Object.assign(new Error(message), { code });

  it("counts ClickHouse overloads and timeouts as passing, by code or by the embedded engine's message", () => {
    // Previously these reached clients as INTERNAL_SERVER_ERROR, which the metric logger does not
    // retry: the batch was dropped although resending it (same idempotency key) was safe.
    expect(isUnavailable(new Error("Code: 252. DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts"))).toBe(true);
    expect(isUnavailable(new Error("Code: 241. DB::Exception: Memory limit (total) exceeded"))).toBe(true);
    expect(isUnavailable(withCode("Too many simultaneous queries", "202"))).toBe(true);
    expect(isUnavailable(new Error("Timeout error."))).toBe(true);
    expect(isUnavailable(withCode("connect ECONNREFUSED 127.0.0.1:8123", "ECONNREFUSED"))).toBe(true);
  });

  it("leaves errors that would fail again as they are", () => {
    expect(isUnavailable(new Error("Code: 62. DB::Exception: Syntax error"))).toBe(false);
    expect(isUnavailable(withCode("Unknown table", "60"))).toBe(false);
    expect(isUnavailable(new Error("something broke"))).toBe(false);
    expect(isUnavailable("not an error")).toBe(false);
  });
});
