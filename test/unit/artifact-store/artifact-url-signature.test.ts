import { parseRange } from "../../../src/stores/artifact-store/local-artifact-router.js";
import { signArtifactUrl, verifyArtifactSignature } from "../../../src/stores/artifact-store/artifact-url-signature.js";
import { planParts, validateUploadRequest, MIN_PART_SIZE, MAX_PARTS } from "../../../src/stores/artifact-store/artifact-store.js";

const secret = "0123456789abcdef0123456789abcdef";
const now = Date.UTC(2030, 0, 1);

describe("artifact URL signatures", () => {
  const grant = { method: "PUT" as const, key: "runs/r/artifacts/a b.txt", expiresAt: new Date(now + 60_000), size: 10 };

  it("round-trips a grant", () => {
    const query = new URLSearchParams(signArtifactUrl(grant, secret));
    const check = verifyArtifactSignature("PUT", grant.key, query, secret, now);
    expect(check).toEqual({ ok: true, grant: { ...grant } });
  });

  it("refuses another method, key, size, part, secret or a tampered signature", () => {
    const query = new URLSearchParams(signArtifactUrl(grant, secret));
    expect(verifyArtifactSignature("GET", grant.key, query, secret, now)).toEqual({ ok: false, reason: "invalid" });
    expect(verifyArtifactSignature("PUT", grant.key + "x", query, secret, now)).toEqual({ ok: false, reason: "invalid" });
    expect(verifyArtifactSignature("PUT", grant.key, query, secret + "x", now)).toEqual({ ok: false, reason: "invalid" });
    const bigger = new URLSearchParams(query);
    bigger.set("size", "11");
    expect(verifyArtifactSignature("PUT", grant.key, bigger, secret, now).ok).toBe(false);
    const part = new URLSearchParams(query);
    part.set("partNumber", "2");
    expect(verifyArtifactSignature("PUT", grant.key, part, secret, now).ok).toBe(false);
    const tampered = new URLSearchParams(query);
    const sig = tampered.get("signature")!;
    tampered.set("signature", (sig[0] === "A" ? "B" : "A") + sig.slice(1));
    expect(verifyArtifactSignature("PUT", grant.key, tampered, secret, now)).toEqual({ ok: false, reason: "invalid" });
    const short = new URLSearchParams(query);
    short.set("signature", "abc");
    expect(verifyArtifactSignature("PUT", grant.key, short, secret, now)).toEqual({ ok: false, reason: "invalid" });
  });

  it("signs a body checksum: dropped, changed or malformed, the URL is refused; URLs without one verify as before", () => {
    const withSum = { ...grant, sha256: "ab".repeat(32) };
    const query = new URLSearchParams(signArtifactUrl(withSum, secret));
    expect(verifyArtifactSignature("PUT", grant.key, query, secret, now)).toEqual({ ok: true, grant: withSum });
    const other = new URLSearchParams(query);
    other.set("sha256", "cd".repeat(32));
    expect(verifyArtifactSignature("PUT", grant.key, other, secret, now)).toEqual({ ok: false, reason: "invalid" });
    const dropped = new URLSearchParams(query);
    dropped.delete("sha256");
    expect(verifyArtifactSignature("PUT", grant.key, dropped, secret, now)).toEqual({ ok: false, reason: "invalid" });
    const malformed = new URLSearchParams(query);
    malformed.set("sha256", "AB".repeat(32));
    expect(verifyArtifactSignature("PUT", grant.key, malformed, secret, now)).toEqual({ ok: false, reason: "malformed" });
    // A URL signed before checksums were signed (same secret, no sha256) still verifies.
    expect(verifyArtifactSignature("PUT", grant.key, new URLSearchParams(signArtifactUrl(grant, secret)), secret, now).ok).toBe(true);
  });

  it("refuses expired and unsigned URLs", () => {
    const query = new URLSearchParams(signArtifactUrl(grant, secret));
    expect(verifyArtifactSignature("PUT", grant.key, query, secret, now + 60_000)).toEqual({ ok: false, reason: "expired" });
    expect(verifyArtifactSignature("PUT", grant.key, new URLSearchParams(), secret, now)).toEqual({ ok: false, reason: "missing" });
    const later = new URLSearchParams(query);
    later.set("expires", "99999999999");
    expect(verifyArtifactSignature("PUT", grant.key, later, secret, now)).toEqual({ ok: false, reason: "invalid" });
  });
});

describe("Range parsing", () => {
  it.each([
    [undefined, 10, null],
    ["bytes=0-3", 10, { start: 0, end: 3 }],
    ["bytes=5-", 10, { start: 5, end: 9 }],
    ["bytes=-3", 10, { start: 7, end: 9 }],
    ["bytes=-30", 10, { start: 0, end: 9 }],
    ["bytes=8-100", 10, { start: 8, end: 9 }],
    ["bytes=10-", 10, "unsatisfiable"],
    ["bytes=5-2", 10, "unsatisfiable"],
    ["bytes=-0", 10, "unsatisfiable"],
    ["bytes=abc", 10, "unsatisfiable"],
    ["bytes=0-0", 0, "unsatisfiable"],
    ["bytes=0-1,4-5", 10, null],
    ["items=0-1", 10, null],
  ])("%s of %d bytes", (header, size, expected) => {
    expect(parseRange(header, size)).toEqual(expected);
  });
});

describe("upload planning", () => {
  it("splits into parts of the preferred size", () => {
    const { partSize, partSizes } = planParts(64 * 1024 * 1024 + 5, 16 * 1024 * 1024);
    expect(partSize).toBe(16 * 1024 * 1024);
    expect(partSizes).toEqual([partSize, partSize, partSize, partSize, 5]);
  });

  it("never goes below S3's minimum or above its part count", () => {
    expect(planParts(20 * 1024 * 1024, 1024).partSize).toBe(MIN_PART_SIZE);
    const huge = planParts(1024 ** 4, 16 * 1024 * 1024);
    expect(huge.partSizes.length).toBeLessThanOrEqual(MAX_PARTS);
    expect(huge.partSizes.reduce((a, b) => a + b, 0)).toBe(1024 ** 4);
  });

  it("validates upload requests", () => {
    expect(validateUploadRequest({ key: "k", size: 1, sha256: "A".repeat(64) }).sha256).toBe("a".repeat(64));
    expect(() => validateUploadRequest({ key: "k", size: -1 }, { fieldPrefix: "input." })).toThrow(/^input\.size:/);
    expect(() => validateUploadRequest({ key: "k", size: 1.5 })).toThrow(/size/);
    expect(() => validateUploadRequest({ key: "k", size: 11 }, { maxSize: 10 })).toThrow(/limit/);
    expect(() => validateUploadRequest({ key: "k", size: 1, sha256: "xyz" })).toThrow(/sha256/);
    expect(() => validateUploadRequest({ key: "k", size: 1, contentType: "text/html\r\nx: y" })).toThrow(/contentType/);
    expect(validateUploadRequest({ key: "k", size: 1, contentType: "text/csv; charset=utf-8" }).contentType).toBe("text/csv; charset=utf-8");
  });
});
