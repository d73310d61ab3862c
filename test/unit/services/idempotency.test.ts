import { DomainError } from "../../../src/services/errors.js";
import { keyedCall } from "../../../src/services/idempotency.js";

/** A resend must fingerprint like its first call; any other call must not. */
describe("keyedCall", () => {
  const fingerprint = (input: Record<string, unknown>) => keyedCall("k", input)!.fingerprint;

  it("is null without a key, and keeps the key as given", () => {
    expect(keyedCall(null, { a: 1 })).toBeNull();
    expect(keyedCall(undefined, { a: 1 })).toBeNull();
    expect(keyedCall(" key 1 ", { a: 1 })!.key).toBe(" key 1 ");
    expect(fingerprint({ a: 1 })).toMatch(/^[0-9a-f]{64}$/);
  });

  it("reads an absent field as null, ignores the order of object keys, and keeps list order", () => {
    expect(fingerprint({ name: undefined, priority: 1 })).toBe(fingerprint({ priority: 1, name: null }));
    // A field added to the input by a later release, unused, leaves the fingerprint as it was.
    expect(fingerprint({ priority: 1, addedLater: null })).toBe(fingerprint({ priority: 1 }));
    expect(fingerprint({ params: { lr: 0.1, epochs: 3 } })).toBe(fingerprint({ params: { epochs: 3, lr: 0.1 } }));
    expect(fingerprint({ tags: [{ key: "a", value: "1" }] })).toBe(fingerprint({ tags: [{ value: "1", key: "a" }] }));
    expect(fingerprint({ tags: [{ key: "a", value: "1" }, { key: "b", value: "2" }] })).not.toBe(fingerprint({ tags: [{ key: "b", value: "2" }, { key: "a", value: "1" }] }));
    expect(fingerprint({ startTime: new Date("2025-01-01T00:00:00Z") })).toBe(fingerprint({ startTime: new Date(Date.UTC(2025, 0, 1)) }));
  });

  it("tells other input apart, types included", () => {
    const base = fingerprint({ pipelineName: "p", version: null, params: { n: 1 }, priority: null });
    expect(fingerprint({ pipelineName: "p", version: 1, params: { n: 1 }, priority: null })).not.toBe(base);
    expect(fingerprint({ pipelineName: "p", version: null, params: { n: "1" }, priority: null })).not.toBe(base);
    expect(fingerprint({ pipelineName: "p", version: null, params: {}, priority: null })).not.toBe(base);
    expect(fingerprint({ name: "a,b" })).not.toBe(fingerprint({ name: ["a", "b"] }));
  });

  it.each([
    ["that is empty", "", "must not be empty"],
    ["that is blank", "   ", "must not be empty"],
    ["of 251 characters", "k".repeat(251), "longer than 250 characters"],
    ["with a NUL", "a\u0000b", "NUL"],
  ])("refuses a key %s as BAD_USER_INPUT on input.idempotencyKey", (_label, key, message) => {
    const refusal = (() => {
      try {
        keyedCall(key, {});
      } catch (err) {
        return err;
      }
    })() as DomainError;
    expect(refusal).toBeInstanceOf(DomainError);
    expect(refusal).toMatchObject({ code: "BAD_USER_INPUT", field: "input.idempotencyKey" });
    expect(refusal.message).toContain(message);
    expect(keyedCall("k".repeat(250), {})!.key).toHaveLength(250);
  });
});
