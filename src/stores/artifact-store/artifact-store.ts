import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import { DomainError, badInput } from "../../services/errors.js";

/**
 * The artifact store contract shared by the S3 and the local-disk implementations.
 *
 * Bytes never pass through GraphQL. The intended flow is:
 * 1. `createArtifactUpload` → {@link ArtifactStore.createUpload} returns an {@link UploadDescriptor}
 *    with one presigned PUT URL, or for large files a multipart upload with one URL per part; the
 *    service persists {@link pendingUploadOf}(descriptor) (key, size, sha256, uploadId).
 * 2. The client PUTs the bytes (each part's response carries an `ETag` header).
 * 3. `completeArtifactUpload` → {@link completeAndVerifyUpload} assembles a multipart upload,
 *    then checks size and SHA-256 by streaming the stored object; on any mismatch the object is
 *    deleted, so a wrong or truncated upload never becomes a visible artifact.
 */

const MiB = 1024 * 1024;

/** Uploads strictly larger than this use multipart by default (16 MiB). */
export const DEFAULT_MULTIPART_THRESHOLD = 16 * MiB;
/** Default multipart part size (16 MiB); grown automatically so no upload needs more than {@link MAX_PARTS} parts. */
export const DEFAULT_PART_SIZE = 16 * MiB;
/** S3's minimum size of every part but the last. */
export const MIN_PART_SIZE = 5 * MiB;
/** S3's maximum number of parts in one multipart upload. */
export const MAX_PARTS = 10_000;
/** S3's maximum object size (5 TiB); also the default limit of the local store. */
export const MAX_ARTIFACT_SIZE = 5 * 1024 * 1024 * MiB;
/** Default lifetime of presigned upload URLs. */
export const DEFAULT_UPLOAD_EXPIRES_SECONDS = 3600;

/** What the caller wants to upload. */
export interface CreateUploadRequest {
  /** Store key, normally built by `artifactKey(runId, path)`. */
  key: string;
  /** Exact size in bytes. */
  size: number;
  /** Expected SHA-256 (hex), checked by {@link completeAndVerifyUpload}. */
  sha256?: string;
  /** MIME type stored with the object where the backend supports it (S3). */
  contentType?: string;
}

/** One presigned part URL of a multipart upload. */
export interface PresignedPart {
  /** 1-based part number. */
  partNumber: number;
  /** Presigned PUT URL for exactly this part. */
  url: string;
  /** Bytes this part must contain: `partSize`, except the last part. */
  size: number;
}

interface UploadDescriptorBase {
  key: string;
  size: number;
  sha256?: string;
  contentType?: string;
  /** HTTP method for every URL in the descriptor. */
  method: "PUT";
  /** Headers the client must send with each PUT (they are part of the signature). */
  headers: Record<string, string>;
  /** When the URLs stop working. */
  expiresAt: Date;
}

/** Upload with a single presigned PUT of the whole file. */
export interface SingleUploadDescriptor extends UploadDescriptorBase {
  kind: "single";
  url: string;
}

/** Upload in parts; the client PUTs `parts[i]` bytes `[i*partSize, …)` to `parts[i].url`. */
export interface MultipartUploadDescriptor extends UploadDescriptorBase {
  kind: "multipart";
  uploadId: string;
  partSize: number;
  parts: PresignedPart[];
}

/** Result of {@link ArtifactStore.createUpload}. */
export type UploadDescriptor = SingleUploadDescriptor | MultipartUploadDescriptor;

/** What the service persists between createUpload and completeUpload. */
export interface PendingUpload {
  key: string;
  size: number;
  sha256?: string;
  /** Present for multipart uploads. */
  uploadId?: string;
}

/** A part the client uploaded, with the `ETag` response header of its PUT. */
export interface UploadedPart {
  partNumber: number;
  etag: string;
}

/** Metadata of a stored object. */
export interface ArtifactObjectInfo {
  size: number;
  /** Opaque version tag (S3 ETag; size+mtime for the local store). */
  etag: string;
  lastModified?: Date;
}

/** One entry directly below a listed prefix. */
export interface ArtifactListEntry {
  /** Full store key; folders end without a slash. */
  key: string;
  /** Last segment of the key. */
  name: string;
  /** File size in bytes; 0 for folders. */
  size: number;
  isDir: boolean;
}

/** Inclusive byte range; `end` omitted means "to the end". */
export interface ByteRange {
  start: number;
  end?: number;
}

/** Size and checksum of an upload that passed {@link completeAndVerifyUpload}. */
export interface VerifiedArtifact {
  key: string;
  size: number;
  sha256: string;
  etag: string;
}

/**
 * Infrastructure adapter for artifact bytes. Keys are trusted here (validated by
 * `artifact-key.ts` before they reach a store). Backend outages surface as
 * `DomainError("UNAVAILABLE")`.
 */
export interface ArtifactStore {
  readonly kind: "s3" | "local";
  /** Starts an upload: one presigned PUT, or multipart above the configured threshold. */
  createUpload(request: CreateUploadRequest): Promise<UploadDescriptor>;
  /**
   * Finishes an upload. For multipart it assembles the parts (from `parts`, or as found on the
   * server when omitted); for a single PUT it only checks that the object exists. Returns the
   * stored object's metadata; does not check content (see {@link completeAndVerifyUpload}).
   */
  completeUpload(pending: PendingUpload, parts?: UploadedPart[]): Promise<ArtifactObjectInfo>;
  /** Discards an unfinished multipart upload and its parts; a no-op for single uploads. */
  abortUpload(pending: PendingUpload): Promise<void>;
  /**
   * Removes what unfinished uploads left inside the store itself (temporary files, parts) older
   * than `maxAgeMs`. Stores that keep nothing of the kind outside an upload's own state omit it.
   */
  removeStaleUploads?(maxAgeMs: number): Promise<number>;
  /** Size and ETag of an object, or `null` when it does not exist. */
  head(key: string): Promise<ArtifactObjectInfo | null>;
  /** Folders and files directly below `prefix` (treated as a folder; a trailing `/` is optional), sorted by key. */
  list(prefix: string): Promise<ArtifactListEntry[]>;
  /** Streams an object (or an inclusive byte range of it); `NOT_FOUND` when missing. */
  openRead(key: string, range?: ByteRange): Promise<Readable>;
  /** Deletes an object; deleting a missing object is not an error. */
  delete(key: string): Promise<void>;
  /** A URL that GETs the object without other credentials until it expires. */
  presignDownload(key: string, expiresInSeconds: number): Promise<string>;
  /** SHA-256 (lowercase hex) of the stored object, computed by streaming it. */
  sha256(key: string): Promise<string>;
}

/** The part of a descriptor the service must keep to complete the upload later. */
export function pendingUploadOf(descriptor: UploadDescriptor): PendingUpload {
  return {
    key: descriptor.key,
    size: descriptor.size,
    ...(descriptor.sha256 !== undefined ? { sha256: descriptor.sha256 } : {}),
    ...(descriptor.kind === "multipart" ? { uploadId: descriptor.uploadId } : {}),
  };
}

/**
 * Validates and normalizes an upload request (sha256 lower-cased). Stores call it themselves;
 * services may call it first with `fieldPrefix: "input."` so errors name their input fields.
 */
export function validateUploadRequest(
  request: CreateUploadRequest,
  options: { maxSize?: number; fieldPrefix?: string } = {},
): CreateUploadRequest {
  const p = options.fieldPrefix ?? "";
  const maxSize = options.maxSize ?? MAX_ARTIFACT_SIZE;
  if (!Number.isSafeInteger(request.size) || request.size < 0) {
    throw badInput(`${p}size`, `must be a non-negative integer, got ${request.size}`);
  }
  if (request.size > maxSize) throw badInput(`${p}size`, `${request.size} bytes exceeds the limit of ${maxSize}`);
  const out: CreateUploadRequest = { key: request.key, size: request.size };
  if (request.sha256 !== undefined) {
    if (!/^[0-9a-fA-F]{64}$/.test(request.sha256)) throw badInput(`${p}sha256`, "must be 64 hexadecimal characters");
    out.sha256 = request.sha256.toLowerCase();
  }
  if (request.contentType !== undefined) {
    // A content type is echoed into a signed header; anything beyond a plain token/param syntax is refused.
    if (request.contentType.length > 255 || !/^[\w.+-]+\/[\w.+-]+(\s*;\s*[\w.+-]+=("[^"\r\n]*"|[\w.+-]+))*$/.test(request.contentType)) {
      throw badInput(`${p}contentType`, `is not a valid media type: ${JSON.stringify(request.contentType)}`);
    }
    out.contentType = request.contentType;
  }
  return out;
}

/**
 * Splits `size` bytes into parts of at least `preferredPartSize` bytes (grown to whole MiB when
 * {@link MAX_PARTS} parts would not suffice). Returns the part size and each part's length.
 */
export function planParts(size: number, preferredPartSize: number = DEFAULT_PART_SIZE): { partSize: number; partSizes: number[] } {
  let partSize = Math.max(preferredPartSize, MIN_PART_SIZE);
  if (Math.ceil(size / partSize) > MAX_PARTS) partSize = Math.ceil(size / MAX_PARTS / MiB) * MiB;
  const partSizes: number[] = [];
  for (let offset = 0; offset < size; offset += partSize) partSizes.push(Math.min(partSize, size - offset));
  return { partSize, partSizes };
}

/** SHA-256 (lowercase hex) of everything a stream yields. */
export async function sha256OfStream(stream: Readable): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/**
 * Completes an upload and verifies it: the stored object must exist, have exactly the declared
 * size and, when one was declared, the declared SHA-256. A mismatching object is deleted before
 * the error is thrown, so no wrong artifact stays behind. Errors are `BAD_USER_INPUT` naming
 * `<fieldPrefix>size` / `<fieldPrefix>sha256` / `<fieldPrefix>upload`.
 */
export async function completeAndVerifyUpload(
  store: ArtifactStore,
  pending: PendingUpload,
  parts?: UploadedPart[],
  options: { fieldPrefix?: string } = {},
): Promise<VerifiedArtifact> {
  await store.completeUpload(pending, parts);
  return verifyStoredArtifact(store, pending.key, { size: pending.size, sha256: pending.sha256 }, options);
}

/**
 * Checks size and SHA-256 of a stored object (see {@link completeAndVerifyUpload}); deletes the
 * object on mismatch. Returns the computed checksum even when none was expected.
 */
export async function verifyStoredArtifact(
  store: ArtifactStore,
  key: string,
  expected: { size: number; sha256?: string },
  options: { fieldPrefix?: string } = {},
): Promise<VerifiedArtifact> {
  const p = options.fieldPrefix ?? "";
  const info = await store.head(key);
  if (!info) throw badInput(`${p}upload`, `nothing was uploaded for ${JSON.stringify(key)}; PUT the bytes to the upload URL first`);
  if (info.size !== expected.size) {
    await store.delete(key);
    throw new DomainError(
      "BAD_USER_INPUT",
      `${p}size: uploaded ${info.size} bytes but ${expected.size} were declared; the upload was discarded`,
      `${p}size`,
      { expected: expected.size, actual: info.size },
    );
  }
  const actual = await store.sha256(key);
  if (expected.sha256 !== undefined && actual !== expected.sha256.toLowerCase()) {
    await store.delete(key);
    throw new DomainError(
      "BAD_USER_INPUT",
      `${p}sha256: uploaded content has SHA-256 ${actual} but ${expected.sha256.toLowerCase()} was declared; the upload was discarded`,
      `${p}sha256`,
      { expected: expected.sha256.toLowerCase(), actual },
    );
  }
  return { key, size: info.size, sha256: actual, etag: info.etag };
}
