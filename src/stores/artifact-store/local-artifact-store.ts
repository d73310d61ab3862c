import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, type Stats } from "node:fs";
import { mkdir, open, readFile, readdir, rename, rm, rmdir, stat, unlink, writeFile, type FileHandle } from "node:fs/promises";
import * as path from "node:path";
import { Transform, type Readable, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { DomainError, badInput } from "../../services/errors.js";
import { validateArtifactKey } from "./artifact-key.js";
import {
  DEFAULT_MULTIPART_THRESHOLD,
  DEFAULT_PART_SIZE,
  DEFAULT_UPLOAD_EXPIRES_SECONDS,
  MAX_ARTIFACT_SIZE,
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
import { signArtifactUrl } from "./artifact-url-signature.js";

/** Options of {@link LocalArtifactStore}. */
export interface LocalArtifactStoreOptions {
  /** Root directory, normally `<dataDir>/artifacts` (see {@link LocalArtifactStore.defaultDirectory}). */
  directory: string;
  /** HMAC key for signed URLs; must be the same on every replica serving the directory. */
  secret: string | Buffer;
  /**
   * Absolute URL where {@link createLocalArtifactRouter} is mounted, e.g.
   * `http://127.0.0.1:4000/artifacts`. A function is read at signing time, for servers that learn
   * their port only after listening.
   */
  publicBaseUrl: string | (() => string);
  /** Uploads larger than this many bytes are multipart (default 16 MiB). */
  multipartThreshold?: number;
  /** Preferred part size (default 16 MiB). */
  partSize?: number;
  /** Lifetime of upload URLs (default 3600 s). */
  uploadExpiresInSeconds?: number;
  /** Largest accepted artifact (default 5 TiB). */
  maxSize?: number;
}

/** Bookkeeping of an unfinished multipart upload, `uploads/<uploadId>/upload.json`. */
interface UploadManifest {
  key: string;
  size: number;
  partSize: number;
  partCount: number;
  createdAt: string;
}

/** An opened object: the handle pins one version even if the key is overwritten meanwhile. */
export interface OpenedArtifactFile {
  handle: FileHandle;
  stats: Stats;
}

const UPLOAD_ID_PATTERN = /^[0-9a-f]{32}$/;

/**
 * Artifact store in a local directory, for the zero-setup deployment. Layout:
 * `objects/<key>` (visible artifacts), `tmp/` (bytes being written), `uploads/<uploadId>/`
 * (multipart parts). Every write goes to `tmp/` first and is renamed into place, so a crash or
 * an aborted upload never leaves a partial artifact under `objects/`; `tmp/` and `uploads/` are
 * on the same filesystem as `objects/`, which makes the rename atomic.
 *
 * Bytes travel through the API server: URLs point at {@link createLocalArtifactRouter}.
 */
export class LocalArtifactStore implements ArtifactStore {
  readonly kind = "local" as const;
  /** Directory holding visible artifacts. */
  readonly objectsDir: string;
  private readonly tmpDir: string;
  private readonly uploadsDir: string;
  private readonly multipartThreshold: number;
  private readonly partSize: number;
  private readonly uploadExpiresInSeconds: number;
  private readonly maxSize: number;
  private ready: Promise<void> | undefined;

  /** `<dataDir>/artifacts`, the default root. */
  static defaultDirectory(dataDir: string): string {
    return path.join(dataDir, "artifacts");
  }

  constructor(private readonly options: LocalArtifactStoreOptions) {
    const root = path.resolve(options.directory);
    this.objectsDir = path.join(root, "objects");
    this.tmpDir = path.join(root, "tmp");
    this.uploadsDir = path.join(root, "uploads");
    this.multipartThreshold = options.multipartThreshold ?? DEFAULT_MULTIPART_THRESHOLD;
    this.partSize = options.partSize ?? DEFAULT_PART_SIZE;
    this.uploadExpiresInSeconds = options.uploadExpiresInSeconds ?? DEFAULT_UPLOAD_EXPIRES_SECONDS;
    this.maxSize = options.maxSize ?? MAX_ARTIFACT_SIZE;
    if (Buffer.byteLength(options.secret) < 16) throw new Error("LocalArtifactStore: secret must be at least 16 bytes");
  }

  /** The HMAC key, for the router. */
  get secret(): string | Buffer {
    return this.options.secret;
  }

  async createUpload(request: CreateUploadRequest): Promise<UploadDescriptor> {
    const req = validateUploadRequest(request, { maxSize: this.maxSize });
    this.objectPath(req.key);
    await this.ensureDirs();
    const expiresAt = new Date((Math.floor(Date.now() / 1000) + this.uploadExpiresInSeconds) * 1000);
    const common = {
      key: req.key,
      size: req.size,
      ...(req.sha256 !== undefined ? { sha256: req.sha256 } : {}),
      ...(req.contentType !== undefined ? { contentType: req.contentType } : {}),
      method: "PUT" as const,
      headers: {},
      expiresAt,
    };
    if (req.size <= this.multipartThreshold) {
      // The checksum is signed in: the URL stores those bytes or nothing, so even a leaked URL
      // cannot replace an artifact's verified bytes with others.
      const grant = { method: "PUT" as const, key: req.key, expiresAt, size: req.size, ...(req.sha256 !== undefined ? { sha256: req.sha256 } : {}) };
      return { kind: "single", url: this.signedUrl(grant), ...common };
    }
    const { partSize, partSizes } = planParts(req.size, this.partSize);
    const uploadId = randomBytes(16).toString("hex");
    const manifest: UploadManifest = { key: req.key, size: req.size, partSize, partCount: partSizes.length, createdAt: new Date().toISOString() };
    await mkdir(path.join(this.uploadsDir, uploadId));
    await writeFile(path.join(this.uploadsDir, uploadId, "upload.json"), JSON.stringify(manifest));
    const parts = partSizes.map((size, i) => ({
      partNumber: i + 1,
      size,
      url: this.signedUrl({ method: "PUT", key: req.key, expiresAt, uploadId, partNumber: i + 1, size }),
    }));
    return { kind: "multipart", uploadId, partSize, parts, ...common };
  }

  async completeUpload(pending: PendingUpload, parts?: UploadedPart[]): Promise<ArtifactObjectInfo> {
    if (pending.uploadId === undefined) {
      const info = await this.head(pending.key);
      if (!info) throw badInput("upload", `nothing was uploaded for ${JSON.stringify(pending.key)}; PUT the bytes to the upload URL first`);
      return info;
    }
    const uploadDir = this.uploadDir(pending.uploadId);
    const manifest = await this.readManifest(pending.uploadId);
    if (!manifest) return this.alreadyCompleted(pending);
    if (manifest.key !== pending.key) throw badInput("upload", `upload ${pending.uploadId} belongs to another key`);

    const present = new Set((await readdir(uploadDir)).filter((n) => /^\d+$/.test(n)).map(Number));
    const missing: number[] = [];
    for (let n = 1; n <= manifest.partCount; n++) if (!present.has(n)) missing.push(n);
    if (missing.length > 0) throw badInput("parts", `parts ${missing.slice(0, 10).join(", ")}${missing.length > 10 ? ", …" : ""} not uploaded yet`);
    const expectedEtags = new Map<number, string>();
    if (parts) {
      for (const p of parts) {
        if (typeof p.etag !== "string") throw badInput("parts", `part ${p.partNumber} has no ETag`);
        if (!Number.isInteger(p.partNumber) || p.partNumber < 1 || p.partNumber > manifest.partCount) {
          throw badInput("parts", `part number ${p.partNumber} is out of range 1..${manifest.partCount}`);
        }
        expectedEtags.set(p.partNumber, p.etag.replace(/"/g, ""));
      }
      if (expectedEtags.size !== manifest.partCount) throw badInput("parts", `expected ${manifest.partCount} distinct parts, got ${expectedEtags.size}`);
    }

    const tmp = this.tmpPath();
    const out = createWriteStream(tmp, { flags: "wx" });
    try {
      for (let n = 1; n <= manifest.partCount; n++) {
        const md5 = createHash("md5");
        await pipeline(createReadStream(path.join(uploadDir, String(n))), hashing(md5), out, { end: false });
        const expected = expectedEtags.get(n);
        if (expected !== undefined && expected !== md5.digest("hex")) {
          throw badInput("parts", `ETag of part ${n} does not match the uploaded bytes`);
        }
      }
      await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
      await syncFile(tmp);
      await this.commit(tmp, pending.key);
    } catch (err) {
      out.destroy();
      await rm(tmp, { force: true });
      if (isErrno(err, "ENOENT") && !(await this.readManifest(pending.uploadId))) return this.alreadyCompleted(pending);
      throw err;
    }
    await rm(uploadDir, { recursive: true, force: true });
    const info = await this.head(pending.key);
    if (!info) throw new Error(`artifact ${pending.key} vanished right after completion`);
    return info;
  }

  async abortUpload(pending: PendingUpload): Promise<void> {
    if (pending.uploadId === undefined || !UPLOAD_ID_PATTERN.test(pending.uploadId)) return;
    await rm(this.uploadDir(pending.uploadId), { recursive: true, force: true });
  }

  async head(key: string): Promise<ArtifactObjectInfo | null> {
    try {
      const stats = await stat(this.objectPath(key));
      if (!stats.isFile()) return null;
      return infoOf(stats);
    } catch (err) {
      if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR")) return null;
      throw err;
    }
  }

  async list(prefix: string): Promise<ArtifactListEntry[]> {
    const dirKey = prefix.endsWith("/") ? prefix.slice(0, -1) : prefix;
    const dir = dirKey === "" ? this.objectsDir : this.objectPath(dirKey);
    let names;
    try {
      names = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR")) return [];
      throw err;
    }
    const entries: ArtifactListEntry[] = [];
    for (const d of names) {
      const key = dirKey === "" ? d.name : `${dirKey}/${d.name}`;
      if (d.isDirectory()) entries.push({ key, name: d.name, size: 0, isDir: true });
      else if (d.isFile()) {
        const stats = await stat(path.join(dir, d.name)).catch((err: unknown) => (isErrno(err, "ENOENT") ? null : Promise.reject(err)));
        if (stats) entries.push({ key, name: d.name, size: stats.size, isDir: false });
      }
    }
    return entries.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async openRead(key: string, range?: ByteRange): Promise<Readable> {
    const { handle } = await this.openFile(key);
    try {
      // No `end` unless asked for: an empty file has no valid inclusive end offset.
      return handle.createReadStream({ start: range?.start ?? 0, ...(range?.end !== undefined ? { end: range.end } : {}), autoClose: true });
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    const file = this.objectPath(key);
    try {
      await unlink(file);
    } catch (err) {
      if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR")) return;
      throw err;
    }
    await this.removeEmptyParents(path.dirname(file));
  }

  async presignDownload(key: string, expiresInSeconds: number): Promise<string> {
    if (!Number.isInteger(expiresInSeconds) || expiresInSeconds < 1) throw badInput("expiresInSeconds", "must be a positive integer");
    this.objectPath(key);
    return this.signedUrl({ method: "GET", key, expiresAt: new Date((Math.floor(Date.now() / 1000) + expiresInSeconds) * 1000) });
  }

  async sha256(key: string): Promise<string> {
    return sha256OfStream(await this.openRead(key));
  }

  /**
   * Opens an object for reading (used by the router for consistent Range responses); the caller
   * owns the handle. `NOT_FOUND` when the key is not a file.
   */
  async openFile(key: string): Promise<OpenedArtifactFile> {
    let handle: FileHandle;
    try {
      handle = await open(this.objectPath(key), "r");
    } catch (err) {
      if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR") || isErrno(err, "EISDIR")) {
        throw new DomainError("NOT_FOUND", `artifact ${JSON.stringify(key)} not found`);
      }
      throw err;
    }
    const stats = await handle.stat();
    if (!stats.isFile()) {
      await handle.close();
      throw new DomainError("NOT_FOUND", `artifact ${JSON.stringify(key)} not found`);
    }
    return { handle, stats };
  }

  /**
   * Streams `body` into a temporary file and renames it to `key` only when exactly
   * `expectedSize` bytes arrived, with SHA-256 `expectedSha256` when given (used by the router
   * for signed single PUTs); otherwise nothing is stored.
   */
  async writeObject(key: string, body: Readable, expectedSize: number, expectedSha256?: string): Promise<ArtifactObjectInfo> {
    this.objectPath(key);
    await this.ensureDirs();
    const tmp = this.tmpPath();
    try {
      const received = await this.receive(body, tmp, expectedSize);
      if (expectedSha256 !== undefined && received.sha256 !== expectedSha256) {
        throw badInput("body", `SHA-256 ${received.sha256} differs from the ${expectedSha256} this URL was signed for; nothing was stored`);
      }
      await this.commit(tmp, key);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    const info = await this.head(key);
    if (!info) throw new Error(`artifact ${key} vanished right after it was written`);
    return info;
  }

  /**
   * Stores one part of a multipart upload (exactly `expectedSize` bytes); a re-sent part
   * replaces the earlier one. Returns the part's ETag (MD5 hex, as S3 does).
   */
  async writePart(key: string, uploadId: string, partNumber: number, body: Readable, expectedSize: number): Promise<{ etag: string }> {
    if (!UPLOAD_ID_PATTERN.test(uploadId)) throw badInput("uploadId", "is malformed");
    const manifest = await this.readManifest(uploadId);
    if (!manifest || manifest.key !== key) throw new DomainError("NOT_FOUND", `upload ${uploadId} not found (completed, aborted or expired)`);
    if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > Math.min(manifest.partCount, MAX_PARTS)) {
      throw badInput("partNumber", `must be between 1 and ${manifest.partCount}`);
    }
    const tmp = path.join(this.uploadDir(uploadId), `.${randomBytes(8).toString("hex")}.tmp`);
    try {
      const { md5 } = await this.receive(body, tmp, expectedSize);
      await rename(tmp, path.join(this.uploadDir(uploadId), String(partNumber)));
      await syncFolders([this.uploadDir(uploadId)]);
      return { etag: md5 };
    } catch (err) {
      await rm(tmp, { force: true });
      if (isErrno(err, "ENOENT")) throw new DomainError("NOT_FOUND", `upload ${uploadId} not found (completed, aborted or expired)`);
      throw err;
    }
  }

  /**
   * Deletes temporary files and unfinished multipart uploads older than `maxAgeMs` (left by
   * crashes or clients that never completed); call it periodically. Returns how many were removed.
   */
  async removeStaleUploads(maxAgeMs: number, now: number = Date.now()): Promise<number> {
    await this.ensureDirs();
    let removed = 0;
    for (const name of await readdir(this.tmpDir)) {
      const file = path.join(this.tmpDir, name);
      const stats = await stat(file).catch(() => null);
      if (stats && now - stats.mtimeMs > maxAgeMs) {
        await rm(file, { force: true });
        removed++;
      }
    }
    for (const name of await readdir(this.uploadsDir)) {
      const dir = path.join(this.uploadsDir, name);
      const stats = await stat(dir).catch(() => null);
      if (stats && now - stats.mtimeMs > maxAgeMs) {
        await rm(dir, { recursive: true, force: true });
        removed++;
      }
    }
    return removed;
  }

  /** Absolute URL for `grant` on the router. */
  private signedUrl(grant: Parameters<typeof signArtifactUrl>[0]): string {
    const base = typeof this.options.publicBaseUrl === "function" ? this.options.publicBaseUrl() : this.options.publicBaseUrl;
    const encodedKey = grant.key.split("/").map(encodeURIComponent).join("/");
    return `${base.replace(/\/+$/, "")}/${encodedKey}?${signArtifactUrl(grant, this.options.secret)}`;
  }

  /** Maps a key to its file under `objects/`, refusing anything that could resolve outside it. */
  private objectPath(key: string): string {
    validateArtifactKey(key);
    const file = path.join(this.objectsDir, ...key.split("/"));
    if (!file.startsWith(this.objectsDir + path.sep)) throw badInput("key", "escapes the artifact directory");
    return file;
  }

  private uploadDir(uploadId: string): string {
    if (!UPLOAD_ID_PATTERN.test(uploadId)) throw badInput("uploadId", "is malformed");
    return path.join(this.uploadsDir, uploadId);
  }

  private tmpPath(): string {
    return path.join(this.tmpDir, `${Date.now()}-${randomBytes(8).toString("hex")}.tmp`);
  }

  private async readManifest(uploadId: string): Promise<UploadManifest | null> {
    try {
      return JSON.parse(await readFile(path.join(this.uploadDir(uploadId), "upload.json"), "utf8")) as UploadManifest;
    } catch (err) {
      if (isErrno(err, "ENOENT")) return null;
      throw err;
    }
  }

  private async alreadyCompleted(pending: PendingUpload): Promise<ArtifactObjectInfo> {
    // A retried complete: the first one assembled the object and removed the upload folder.
    const info = await this.head(pending.key);
    if (info && info.size === pending.size) return info;
    throw badInput("upload", `multipart upload ${JSON.stringify(pending.uploadId)} no longer exists (aborted or expired); start a new upload`);
  }

  /** Writes exactly `expectedSize` bytes of `body` to `file` and flushes them to disk; returns its MD5 and SHA-256 (hex). */
  private async receive(body: Readable, file: string, expectedSize: number): Promise<{ md5: string; sha256: string }> {
    const md5 = createHash("md5");
    const sha256 = createHash("sha256");
    const limit = new ExactSizeLimit(expectedSize);
    await pipeline(body, limit, hashing(md5, sha256), createWriteStream(file, { flags: "wx" }));
    if (limit.received !== expectedSize) {
      throw badInput("body", `received ${limit.received} bytes but ${expectedSize} were expected`);
    }
    await syncFile(file);
    return { md5: md5.digest("hex"), sha256: sha256.digest("hex") };
  }

  /** Atomically moves a finished (flushed) temporary file to `key`, durably: its folders are flushed too. */
  private async commit(tmp: string, key: string): Promise<void> {
    const file = this.objectPath(key);
    let firstCreated: string | undefined;
    for (let attempt = 0; ; attempt++) {
      try {
        const created = await mkdir(path.dirname(file), { recursive: true });
        if (created !== undefined && (firstCreated === undefined || created.length < firstCreated.length)) firstCreated = created;
        await rename(tmp, file);
        break;
      } catch (err) {
        // A concurrent delete may remove the freshly made (still empty) parent folder; retry once.
        if (isErrno(err, "ENOENT") && attempt === 0) continue;
        if (isErrno(err, "ENOTDIR") || isErrno(err, "EEXIST") || isErrno(err, "EISDIR") || isErrno(err, "ENOTEMPTY")) {
          throw new DomainError("CONFLICT", `artifact path ${JSON.stringify(key)} clashes with an existing file or folder`);
        }
        throw err;
      }
    }
    await syncFolders(foldersChangedBy(file, firstCreated));
  }

  private async removeEmptyParents(dir: string): Promise<void> {
    // Keeps listings free of folders whose last file was deleted.
    while (dir.startsWith(this.objectsDir + path.sep)) {
      try {
        await rmdir(dir);
      } catch {
        return; // not empty (or already gone): stop climbing
      }
      dir = path.dirname(dir);
    }
  }

  private ensureDirs(): Promise<void> {
    this.ready ??= (async () => {
      for (const dir of [this.objectsDir, this.tmpDir, this.uploadsDir]) await mkdir(dir, { recursive: true });
    })().catch((err: unknown) => {
      this.ready = undefined;
      throw err;
    });
    return this.ready;
  }
}

/** Passes chunks through, failing as soon as more than `limit` bytes arrive. */
class ExactSizeLimit extends Transform {
  received = 0;
  constructor(private readonly limit: number) {
    super();
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.received += chunk.length;
    if (this.received > this.limit) {
      callback(new DomainError("BAD_USER_INPUT", `body: more than the ${this.limit} declared bytes were sent`, "body"));
      return;
    }
    callback(null, chunk);
  }
}

function hashing(...hashes: ReturnType<typeof createHash>[]): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      for (const hash of hashes) hash.update(chunk);
      callback(null, chunk);
    },
  });
}

/** Flushes a file to disk, so the rename that follows never exposes bytes a crash could still lose. */
async function syncFile(file: string): Promise<void> {
  const handle = await open(file, "r+");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Flushes folders' entries to disk. A rename is durable only once the folder holding the new name
 * is flushed (and a folder `mkdir` just made, once its parent is): without it an OS crash or power
 * loss after the answer could lose an artifact whose bytes were already flushed.
 */
async function syncFolders(folders: string[]): Promise<void> {
  for (const folder of folders) {
    const handle = await open(folder, "r");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
}

/**
 * The folders whose entries storing `file` changed: its own folder, and when `mkdir` made folders
 * on the way (`firstCreated` is the topmost), each of those and the parent of the topmost.
 */
export function foldersChangedBy(file: string, firstCreated: string | undefined): string[] {
  const folders = [path.dirname(file)];
  if (firstCreated === undefined) return folders;
  const stop = path.dirname(firstCreated);
  for (let dir = path.dirname(folders[0]!); ; dir = path.dirname(dir)) {
    folders.push(dir);
    if (dir === stop || dir === path.dirname(dir)) return folders;
  }
}

function infoOf(stats: Stats): ArtifactObjectInfo {
  // Size + mtime changes whenever the file is replaced (rename gives a new inode and mtime).
  return { size: stats.size, etag: `${stats.size.toString(16)}-${Math.floor(stats.mtimeMs).toString(16)}`, lastModified: stats.mtime };
}

function isErrno(err: unknown, code: string): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === code;
}
