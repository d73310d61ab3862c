import { createHmac, timingSafeEqual } from "node:crypto";

/**
 * Signed, expiring URLs for the local artifact store (the local counterpart of S3 presigned
 * URLs). The signature is HMAC-SHA256 over the method, the decoded key, the expiry and, when
 * present, the upload id, part number, exact byte count and SHA-256 of the body, so a URL cannot be
 * reused for another object, another method, another part, a larger body or (single uploads)
 * other bytes.
 */

/** What a signed artifact URL authorizes. */
export interface ArtifactUrlGrant {
  method: "GET" | "PUT";
  /** Decoded store key, e.g. `runs/r1/artifacts/model.pkl`. */
  key: string;
  /** When the URL stops working; second precision. */
  expiresAt: Date;
  /** Multipart upload id (PUT of one part). */
  uploadId?: string;
  /** 1-based part number (PUT of one part). */
  partNumber?: number;
  /** Exact number of body bytes a PUT must carry. */
  size?: number;
  /** SHA-256 (lowercase hex) the body of a PUT must have. */
  sha256?: string;
}

/** Outcome of {@link verifyArtifactSignature}. */
export type ArtifactSignatureCheck =
  | { ok: true; grant: ArtifactUrlGrant }
  | { ok: false; reason: "missing" | "malformed" | "invalid" | "expired" };

const SIGNATURE_VERSION = "mlgraph-artifact-v1";

/**
 * Returns the query string (without `?`) that authorizes `grant`:
 * `expires=<unix seconds>[&uploadId=…&partNumber=…][&size=…][&sha256=…]&signature=<base64url>`.
 */
export function signArtifactUrl(grant: ArtifactUrlGrant, secret: string | Buffer): string {
  const expires = Math.floor(grant.expiresAt.getTime() / 1000);
  const query = new URLSearchParams({ expires: String(expires) });
  if (grant.uploadId !== undefined) query.set("uploadId", grant.uploadId);
  if (grant.partNumber !== undefined) query.set("partNumber", String(grant.partNumber));
  if (grant.size !== undefined) query.set("size", String(grant.size));
  if (grant.sha256 !== undefined) query.set("sha256", grant.sha256);
  query.set("signature", computeSignature(grant.method, grant.key, expires, grant.uploadId, grant.partNumber, grant.size, grant.sha256, secret));
  return query.toString();
}

/**
 * Checks the query of a request for `method` on `key` against `secret` (constant-time compare)
 * and its expiry against `now` (ms since epoch). HEAD requests should be checked as `GET`.
 */
export function verifyArtifactSignature(
  method: "GET" | "PUT",
  key: string,
  query: URLSearchParams | Record<string, unknown>,
  secret: string | Buffer,
  now: number = Date.now(),
): ArtifactSignatureCheck {
  const get = (name: string): string | undefined => {
    const v = query instanceof URLSearchParams ? query.get(name) ?? undefined : query[name];
    return typeof v === "string" ? v : undefined;
  };
  const signature = get("signature");
  const expiresText = get("expires");
  if (signature === undefined || expiresText === undefined) return { ok: false, reason: "missing" };
  const uploadId = get("uploadId");
  const partNumberText = get("partNumber");
  const sizeText = get("size");
  const sha256 = get("sha256");
  if (!/^\d{1,12}$/.test(expiresText)) return { ok: false, reason: "malformed" };
  if (partNumberText !== undefined && !/^\d{1,5}$/.test(partNumberText)) return { ok: false, reason: "malformed" };
  if (sizeText !== undefined && !/^\d{1,16}$/.test(sizeText)) return { ok: false, reason: "malformed" };
  if (sha256 !== undefined && !/^[0-9a-f]{64}$/.test(sha256)) return { ok: false, reason: "malformed" };
  const expires = Number(expiresText);
  const partNumber = partNumberText === undefined ? undefined : Number(partNumberText);
  const size = sizeText === undefined ? undefined : Number(sizeText);

  const expected = Buffer.from(computeSignature(method, key, expires, uploadId, partNumber, size, sha256, secret), "base64url");
  const provided = Buffer.from(signature, "base64url");
  // timingSafeEqual needs equal lengths; the length of a valid HMAC is public anyway.
  if (provided.length !== expected.length || !timingSafeEqual(provided, expected)) return { ok: false, reason: "invalid" };
  if (expires * 1000 <= now) return { ok: false, reason: "expired" };
  return {
    ok: true,
    grant: {
      method,
      key,
      expiresAt: new Date(expires * 1000),
      ...(uploadId !== undefined ? { uploadId } : {}),
      ...(partNumber !== undefined ? { partNumber } : {}),
      ...(size !== undefined ? { size } : {}),
      ...(sha256 !== undefined ? { sha256 } : {}),
    },
  };
}

function computeSignature(
  method: string,
  key: string,
  expires: number,
  uploadId: string | undefined,
  partNumber: number | undefined,
  size: number | undefined,
  sha256: string | undefined,
  secret: string | Buffer,
): string {
  // Newline-separated fields are unambiguous: keys and upload ids cannot contain control characters.
  // The checksum is appended only when present, so URLs signed without one keep their signature.
  const fields = [SIGNATURE_VERSION, method, key, expires, uploadId ?? "", partNumber ?? "", size ?? ""];
  if (sha256 !== undefined) fields.push(sha256);
  const canonical = fields.join("\n");
  return createHmac("sha256", secret).update(canonical, "utf8").digest("base64url");
}
