import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsCommand,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import type { Readable } from "node:stream";
import { DomainError, badInput } from "../../services/errors.js";
import {
  DEFAULT_MULTIPART_THRESHOLD,
  DEFAULT_PART_SIZE,
  DEFAULT_UPLOAD_EXPIRES_SECONDS,
  MAX_PARTS,
  planParts,
  sha256OfStream,
  validateUploadRequest,
  type ArtifactListEntry,
  type ArtifactObjectInfo,
  type ArtifactStore,
  type ByteRange,
  type CreateUploadRequest,
  type PendingUpload,
  type UploadDescriptor,
  type UploadedPart,
} from "./artifact-store.js";

/** SigV4 presigned URLs live at most 7 days. */
const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;
/** The header carrying a single upload's declared SHA-256 (base64), which S3 checks against the body. */
const CHECKSUM_HEADER = "x-amz-checksum-sha256";

/** Options of {@link S3ArtifactStore}; all values come from the validated config, never from the environment here. */
export interface S3ArtifactStoreOptions {
  bucket: string;
  /** Default `us-east-1`. */
  region?: string;
  /** S3-compatible endpoint (MinIO, s3rver, R2 …); omit for AWS. */
  endpoint?: string;
  /** Static credentials; omitted means the SDK's default provider chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Default `true`: path-style URLs work with every S3-compatible server. */
  forcePathStyle?: boolean;
  /** Prepended to every key, so several deployments can share a bucket (e.g. `"mlgraph/"`). */
  keyPrefix?: string;
  /** Uploads larger than this many bytes are multipart (default 16 MiB). */
  multipartThreshold?: number;
  /** Preferred part size (default 16 MiB, at least 5 MiB). */
  partSize?: number;
  /** Lifetime of presigned upload URLs (default 3600 s). */
  uploadExpiresInSeconds?: number;
  /**
   * Default `true`: single-PUT URLs carry the declared SHA-256 as a signed `x-amz-checksum-sha256`
   * header, which AWS S3 (and MinIO) check against the body. Turn off for S3-compatible stores
   * that reject the header; completion verifies the checksum either way.
   */
  checksumAtPut?: boolean;
  /** SDK attempts per request, retries included (default 3). */
  maxAttempts?: number;
  /** TCP connect timeout (default 5,000 ms). */
  connectionTimeoutMs?: number;
  /** Socket idle timeout per request (default 60,000 ms). */
  requestTimeoutMs?: number;
}

/**
 * Artifact store on any S3-compatible object store. Clients move bytes with presigned URLs
 * (single PUT, or multipart with one presigned UploadPart URL per part); this class only
 * signs, assembles, inspects and deletes.
 */
export class S3ArtifactStore implements ArtifactStore {
  readonly kind = "s3" as const;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly keyPrefix: string;
  private readonly multipartThreshold: number;
  private readonly partSize: number;
  private readonly uploadExpiresInSeconds: number;
  private readonly checksumAtPut: boolean;
  private readonly endpointLabel: string;

  constructor(options: S3ArtifactStoreOptions) {
    this.checksumAtPut = options.checksumAtPut ?? true;
    this.bucket = options.bucket;
    this.keyPrefix = options.keyPrefix ?? "";
    this.multipartThreshold = options.multipartThreshold ?? DEFAULT_MULTIPART_THRESHOLD;
    this.partSize = options.partSize ?? DEFAULT_PART_SIZE;
    this.uploadExpiresInSeconds = checkExpiry(options.uploadExpiresInSeconds ?? DEFAULT_UPLOAD_EXPIRES_SECONDS);
    this.endpointLabel = `${options.endpoint ?? "AWS S3"} (bucket ${JSON.stringify(options.bucket)})`;
    this.client = new S3Client({
      region: options.region ?? "us-east-1",
      ...(options.endpoint !== undefined ? { endpoint: options.endpoint } : {}),
      ...(options.credentials !== undefined ? { credentials: options.credentials } : {}),
      forcePathStyle: options.forcePathStyle ?? true,
      // Default checksums add aws-chunked framing and checksum query params that S3-compatible
      // servers store verbatim or reject; integrity is checked by our own SHA-256 instead.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      maxAttempts: options.maxAttempts ?? 3,
      requestHandler: {
        connectionTimeout: options.connectionTimeoutMs ?? 5_000,
        requestTimeout: options.requestTimeoutMs ?? 60_000,
      },
    });
  }

  /** Releases the SDK's sockets. */
  close(): void {
    this.client.destroy();
  }

  async createUpload(request: CreateUploadRequest): Promise<UploadDescriptor> {
    const req = validateUploadRequest(request);
    const expiresIn = this.uploadExpiresInSeconds;
    const expiresAt = new Date(Date.now() + expiresIn * 1000);
    const headers: Record<string, string> = req.contentType ? { "content-type": req.contentType } : {};
    const common = {
      key: req.key,
      size: req.size,
      ...(req.sha256 !== undefined ? { sha256: req.sha256 } : {}),
      ...(req.contentType !== undefined ? { contentType: req.contentType } : {}),
      method: "PUT" as const,
      headers,
      expiresAt,
    };
    if (req.size <= this.multipartThreshold) {
      // Signing content-length makes S3 refuse a body of another size at PUT time; content-type
      // is unsigned by default, and signing it makes the stored type the declared one. The
      // declared SHA-256 is signed as x-amz-checksum-sha256, which S3 checks against the body
      // (BadDigest otherwise), so the URL stores those bytes or nothing: even a leaked URL cannot
      // replace an artifact's verified bytes with others. Kept a header (not hoisted into the
      // query), so the client sends it and S3 verifies it.
      const checksum = req.sha256 !== undefined && this.checksumAtPut ? Buffer.from(req.sha256, "hex").toString("base64") : undefined;
      const signed = [...(req.contentType ? ["content-type"] : []), ...(checksum ? [CHECKSUM_HEADER] : [])];
      const url = await getSignedUrl(
        this.client,
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: this.objectKey(req.key),
          ContentType: req.contentType,
          ContentLength: req.size,
          ...(checksum ? { ChecksumSHA256: checksum } : {}),
        }),
        { expiresIn, ...(signed.length ? { signableHeaders: new Set(signed), unhoistableHeaders: new Set([CHECKSUM_HEADER]) } : {}) },
      );
      return { kind: "single", url, ...common, headers: { ...headers, ...(checksum ? { [CHECKSUM_HEADER]: checksum } : {}) } };
    }

    const { partSize, partSizes } = planParts(req.size, this.partSize);
    const created = await this.send("start multipart upload", req.key, () =>
      this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: this.objectKey(req.key), ContentType: req.contentType })),
    );
    const uploadId = created.UploadId;
    if (!uploadId) throw new DomainError("UNAVAILABLE", `artifact store ${this.endpointLabel} returned no upload id`);
    try {
      const parts = await Promise.all(
        partSizes.map(async (size, i) => ({
          partNumber: i + 1,
          size,
          url: await getSignedUrl(
            this.client,
            new UploadPartCommand({ Bucket: this.bucket, Key: this.objectKey(req.key), UploadId: uploadId, PartNumber: i + 1, ContentLength: size }),
            { expiresIn },
          ),
        })),
      );
      // Part PUTs must not carry content-type: it is only signed into CreateMultipartUpload.
      return { kind: "multipart", uploadId, partSize, parts, ...common, headers: {} };
    } catch (err) {
      await this.abortQuietly(req.key, uploadId);
      throw err;
    }
  }

  async completeUpload(pending: PendingUpload, parts?: UploadedPart[]): Promise<ArtifactObjectInfo> {
    if (pending.uploadId === undefined) {
      const info = await this.head(pending.key);
      if (!info) throw badInput("upload", `nothing was uploaded for ${JSON.stringify(pending.key)}; PUT the bytes to the upload URL first`);
      return info;
    }
    const uploadId = pending.uploadId;
    const expectedParts = planParts(pending.size, this.partSize).partSizes.length;
    let completed: UploadedPart[];
    try {
      completed = parts ? normalizeParts(parts) : await this.listUploadedParts(pending.key, uploadId);
    } catch (err) {
      if (isS3Error(err, ["NoSuchUpload"])) return this.alreadyCompleted(pending);
      throw err;
    }
    if (completed.length !== expectedParts || completed.some((p, i) => p.partNumber !== i + 1)) {
      // Not aborted: the client can still PUT the missing parts and complete again.
      throw badInput("parts", `expected parts 1..${expectedParts}, got ${describeParts(completed)}; PUT every part before completing`);
    }
    try {
      await this.send("complete multipart upload", pending.key, () =>
        this.client.send(
          new CompleteMultipartUploadCommand({
            Bucket: this.bucket,
            Key: this.objectKey(pending.key),
            UploadId: uploadId,
            MultipartUpload: { Parts: completed.map((p) => ({ PartNumber: p.partNumber, ETag: p.etag })) },
          }),
        ),
      );
    } catch (err) {
      if (isS3Error(err, ["NoSuchUpload"])) return this.alreadyCompleted(pending);
      if (isS3Error(err, ["InvalidPart", "InvalidPartOrder", "EntityTooSmall"])) {
        // Not aborted: one mistyped ETag must not throw away every uploaded part. The client can
        // complete again with the ETags its PUTs returned (or PUT a part again); an upload nobody
        // completes is discarded by the abandoned-upload sweep.
        throw badInput("parts", `S3 refused the parts (${(err as Error).name}); the uploaded parts are kept: complete again with each part's ETag as its PUT returned it, or PUT a part again`);
      }
      throw err;
    }
    const info = await this.head(pending.key);
    if (!info) throw new DomainError("UNAVAILABLE", `artifact store ${this.endpointLabel} completed the upload but the object is missing`);
    return info;
  }

  async abortUpload(pending: PendingUpload): Promise<void> {
    if (pending.uploadId === undefined) return;
    try {
      await this.send("abort multipart upload", pending.key, () =>
        this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: this.objectKey(pending.key), UploadId: pending.uploadId })),
      );
    } catch (err) {
      if (isS3Error(err, ["NoSuchUpload"])) return;
      if (isS3Error(err, ["NotImplemented", "MethodNotAllowed"])) {
        throw new DomainError("UNAVAILABLE", `artifact store ${this.endpointLabel} does not support aborting multipart uploads`);
      }
      throw err;
    }
  }

  async head(key: string): Promise<ArtifactObjectInfo | null> {
    try {
      const out = await this.send("head", key, () => this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) })));
      return {
        size: out.ContentLength ?? 0,
        etag: stripQuotes(out.ETag ?? ""),
        ...(out.LastModified ? { lastModified: out.LastModified } : {}),
      };
    } catch (err) {
      if (isS3Error(err, ["NotFound", "NoSuchKey"])) return null;
      throw err;
    }
  }

  async list(prefix: string): Promise<ArtifactListEntry[]> {
    const dir = prefix === "" || prefix.endsWith("/") ? prefix : `${prefix}/`;
    // Keyed by store key: some servers (s3rver) repeat common prefixes on every page.
    const entries = new Map<string, ArtifactListEntry>();
    let marker: string | undefined;
    do {
      // ListObjects (v1) rather than v2: it pages with a plain key marker that every
      // S3-compatible server implements (s3rver's v2 continuation tokens need DES, gone from OpenSSL 3).
      const page = await this.send("list", prefix, () =>
        this.client.send(
          new ListObjectsCommand({
            Bucket: this.bucket,
            Prefix: this.objectKey(dir),
            Delimiter: "/",
            ...(marker !== undefined ? { Marker: marker } : {}),
          }),
        ),
      );
      let last: string | undefined;
      for (const common of page.CommonPrefixes ?? []) {
        if (!common.Prefix) continue;
        last = last === undefined || common.Prefix > last ? common.Prefix : last;
        const key = this.storeKey(common.Prefix).slice(0, -1);
        entries.set(key, { key, name: key.slice(dir.length), size: 0, isDir: true });
      }
      for (const object of page.Contents ?? []) {
        if (!object.Key) continue;
        last = last === undefined || object.Key > last ? object.Key : last;
        const key = this.storeKey(object.Key);
        // Some tools create zero-byte "folder marker" objects named like the prefix itself.
        if (key === dir) continue;
        entries.set(key, { key, name: key.slice(dir.length), size: object.Size ?? 0, isDir: false });
      }
      const next = page.IsTruncated ? (page.NextMarker ?? last) : undefined;
      if (next !== undefined && next === marker) {
        throw new DomainError("UNAVAILABLE", `artifact store ${this.endpointLabel} returned a listing that does not advance`);
      }
      marker = next;
    } while (marker !== undefined);
    return [...entries.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async openRead(key: string, range?: ByteRange): Promise<Readable> {
    try {
      const out = await this.send("download", key, () =>
        this.client.send(
          new GetObjectCommand({
            Bucket: this.bucket,
            Key: this.objectKey(key),
            ...(range ? { Range: `bytes=${range.start}-${range.end ?? ""}` } : {}),
          }),
        ),
      );
      if (!out.Body) throw new DomainError("UNAVAILABLE", `artifact store ${this.endpointLabel} returned no body for ${JSON.stringify(key)}`);
      // In Node the SDK's body is an http.IncomingMessage (a Readable) with SDK mixins.
      return out.Body as Readable;
    } catch (err) {
      if (isS3Error(err, ["NoSuchKey", "NotFound"])) throw new DomainError("NOT_FOUND", `artifact ${JSON.stringify(key)} not found`);
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    await this.send("delete", key, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) })));
  }

  async presignDownload(key: string, expiresInSeconds: number): Promise<string> {
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }), {
      expiresIn: checkExpiry(expiresInSeconds),
    });
  }

  async sha256(key: string): Promise<string> {
    const body = await this.openRead(key);
    try {
      return await sha256OfStream(body);
    } catch (err) {
      throw toStoreError(err, "read", key, this.endpointLabel);
    }
  }

  private async listUploadedParts(key: string, uploadId: string): Promise<UploadedPart[]> {
    const parts: UploadedPart[] = [];
    let marker: string | undefined;
    try {
      do {
        const page = await this.send("list uploaded parts", key, () =>
          this.client.send(
            new ListPartsCommand({
              Bucket: this.bucket,
              Key: this.objectKey(key),
              UploadId: uploadId,
              ...(marker !== undefined ? { PartNumberMarker: marker } : {}),
            }),
          ),
        );
        for (const p of page.Parts ?? []) {
          if (p.PartNumber !== undefined && p.ETag !== undefined) parts.push({ partNumber: p.PartNumber, etag: p.ETag });
        }
        marker = page.IsTruncated ? page.NextPartNumberMarker : undefined;
      } while (marker !== undefined);
    } catch (err) {
      // Some S3-compatible servers (s3rver among them) do not implement ListParts.
      if (isS3Error(err, ["NotImplemented", "MethodNotAllowed"])) {
        throw badInput("parts", "this S3 server cannot list uploaded parts; send the ETag returned by each part's PUT");
      }
      throw err;
    }
    return normalizeParts(parts);
  }

  /** A retried complete finds the upload gone; it succeeded when the object is there with the declared size. */
  private async alreadyCompleted(pending: PendingUpload): Promise<ArtifactObjectInfo> {
    const info = await this.head(pending.key);
    if (info && info.size === pending.size) return info;
    throw badInput("upload", `multipart upload ${JSON.stringify(pending.uploadId)} no longer exists (expired or aborted); start a new upload`);
  }

  private async abortQuietly(key: string, uploadId: string): Promise<void> {
    // Best effort while another error is already being reported; S3 lifecycle rules
    // (AbortIncompleteMultipartUpload) remain the backstop for uploads nobody completes.
    await this.client
      .send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: this.objectKey(key), UploadId: uploadId }))
      .catch(() => undefined);
  }

  private async send<T>(operation: string, key: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      throw toStoreError(err, operation, key, this.endpointLabel);
    }
  }

  private objectKey(key: string): string {
    return this.keyPrefix + key;
  }

  private storeKey(objectKey: string): string {
    return objectKey.startsWith(this.keyPrefix) ? objectKey.slice(this.keyPrefix.length) : objectKey;
  }
}

const NETWORK_ERROR_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPIPE",
  "UND_ERR_SOCKET",
]);
const NETWORK_ERROR_NAMES = new Set(["TimeoutError", "RequestTimeout", "AbortError"]);
const OUTAGE_ERROR_NAMES = new Set(["SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeTooSkewed"]);
const CONFIG_ERROR_NAMES = new Set(["NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"]);

/**
 * Maps transport failures, server outages and deployment misconfiguration (missing bucket,
 * rejected credentials) to `UNAVAILABLE` with a message an operator can act on. Other S3
 * errors are returned unchanged for the caller to handle or report.
 */
function toStoreError(err: unknown, operation: string, key: string, endpoint: string): unknown {
  // Duck-typed, not instanceof: errors raised by Node's sockets may come from another realm (jest's VM).
  if (err instanceof DomainError || typeof err !== "object" || err === null || typeof (err as Error).message !== "string") return err;
  const e = err as Error & { $metadata?: { httpStatusCode?: number } };
  const status = e.$metadata?.httpStatusCode;
  const networkCode = networkErrorCode(e);
  const what = `artifact store ${endpoint}`;
  if (networkCode !== undefined && status === undefined) {
    return new DomainError("UNAVAILABLE", `${what} is unreachable (${networkCode}) during ${operation} of ${JSON.stringify(key)}`);
  }
  if (CONFIG_ERROR_NAMES.has(e.name)) {
    return new DomainError("UNAVAILABLE", `${what} refused ${operation} (${e.name}): check the S3 bucket and credentials`);
  }
  if ((status !== undefined && status >= 500) || OUTAGE_ERROR_NAMES.has(e.name)) {
    return new DomainError("UNAVAILABLE", `${what} failed ${operation} of ${JSON.stringify(key)} (${status ?? ""} ${e.name}); try again later`);
  }
  return err;
}

function networkErrorCode(err: Error): string | undefined {
  const candidates: unknown[] = [err, (err as { cause?: unknown }).cause, ...((err as { errors?: unknown[] }).errors ?? [])];
  for (const c of candidates) {
    const code = (c as { code?: unknown } | undefined)?.code;
    if (typeof code === "string" && NETWORK_ERROR_CODES.has(code)) return code;
  }
  if (NETWORK_ERROR_NAMES.has(err.name)) return err.name;
  // The SDK's retry layer wraps errors it does not recognize as Errors into a bare
  // "AWS SDK error wrapper for Error: connect ECONNREFUSED …", keeping only the message.
  const fromMessage = /\b(E[A-Z]{3,}|UND_ERR_[A-Z_]+)\b/.exec(err.message)?.[1];
  return fromMessage !== undefined && NETWORK_ERROR_CODES.has(fromMessage) ? fromMessage : undefined;
}

function isS3Error(err: unknown, names: string[]): boolean {
  return typeof err === "object" && err !== null && names.includes((err as { name?: string }).name ?? "");
}

function stripQuotes(etag: string): string {
  return etag.replace(/"/g, "");
}

function normalizeParts(parts: UploadedPart[]): UploadedPart[] {
  const seen = new Set<number>();
  for (const p of parts) {
    if (!Number.isInteger(p.partNumber) || p.partNumber < 1 || p.partNumber > MAX_PARTS) {
      throw badInput("parts", `part number ${p.partNumber} is out of range 1..${MAX_PARTS}`);
    }
    if (seen.has(p.partNumber)) throw badInput("parts", `part ${p.partNumber} is listed twice`);
    if (typeof p.etag !== "string" || p.etag.length === 0 || p.etag.length > 256) throw badInput("parts", `part ${p.partNumber} has no valid ETag`);
    seen.add(p.partNumber);
  }
  return [...parts].sort((a, b) => a.partNumber - b.partNumber).map((p) => ({ partNumber: p.partNumber, etag: p.etag }));
}

function describeParts(parts: UploadedPart[]): string {
  return parts.length === 0 ? "none" : `${parts.length} (${parts.slice(0, 5).map((p) => p.partNumber).join(", ")}${parts.length > 5 ? ", …" : ""})`;
}

function checkExpiry(seconds: number): number {
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > MAX_PRESIGN_SECONDS) {
    throw badInput("expiresInSeconds", `must be an integer between 1 and ${MAX_PRESIGN_SECONDS}`);
  }
  return seconds;
}
