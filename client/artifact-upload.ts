/**
 * Artifact transfer for the typed client: upload a file or a folder to a run (SHA-256 computed
 * locally and verified by the server, multipart with parallel parts for large files, progress
 * callback), and download a run's artifact (or folder) to disk, verifying its SHA-256.
 *
 * The bytes never pass through GraphQL: the server hands out presigned URLs (S3 or its own signed
 * local-store URLs) and the client PUTs/GETs them directly.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { pipeline as streamPipeline } from "node:stream/promises";
import { Readable, Transform } from "node:stream";
import { MlgraphError } from "./errors.js";
import {
  ArtifactDownloadsDocument,
  CompleteArtifactUploadDocument,
  CreateArtifactUploadDocument,
  type CompleteArtifactUploadMutation,
  type CreateArtifactUploadMutation,
} from "./generated/graphql.js";
import type { MetricRequester } from "./metric-logger.js";

export type UploadedArtifact = CompleteArtifactUploadMutation["completeArtifactUpload"];

/** Called as bytes move: totals are over the whole file or folder. */
export type ProgressCallback = (progress: { doneBytes: number; totalBytes: number; file: string }) => void;

export interface UploadOptions {
  /**
   * Where it goes inside the run's artifacts. A file: its full path (default: its base name).
   * A folder: the prefix its files go under (default: the folder's base name).
   */
  artifactPath?: string;
  contentType?: string;
  onProgress?: ProgressCallback;
  /** Parts sent at once for multipart uploads (default 4). */
  concurrency?: number;
}

/** Uploads a file, or every file below a folder; resolves with the recorded artifacts. */
export async function uploadArtifact(client: MetricRequester, runId: string, localPath: string, options: UploadOptions = {}): Promise<UploadedArtifact[]> {
  const stat = await fs.promises.stat(localPath).catch(() => {
    throw new MlgraphError(`${localPath}: no such file or folder`, "BAD_USER_INPUT", "localPath");
  });
  const files: { local: string; remote: string; size: number }[] = [];
  if (stat.isDirectory()) {
    const prefix = options.artifactPath ?? path.basename(path.resolve(localPath));
    for (const rel of await listFiles(localPath)) {
      const s = await fs.promises.stat(path.join(localPath, rel));
      files.push({ local: path.join(localPath, rel), remote: joinArtifactPath(prefix, rel.split(path.sep).join("/")), size: s.size });
    }
  } else {
    files.push({ local: localPath, remote: options.artifactPath ?? path.basename(localPath), size: stat.size });
  }
  const totalBytes = files.reduce((n, f) => n + f.size, 0);
  let doneBytes = 0;
  const uploaded: UploadedArtifact[] = [];
  for (const file of files) {
    const sha256 = await sha256File(file.local);
    const { createArtifactUpload: upload } = await client.request(CreateArtifactUploadDocument, {
      input: { runId, path: file.remote, size: file.size, sha256, contentType: options.contentType ?? guessContentType(file.local) },
    });
    const progress = (bytes: number) => {
      doneBytes += bytes;
      options.onProgress?.({ doneBytes, totalBytes, file: file.remote });
    };
    const parts = await putContent(upload, file.local, file.size, options.concurrency ?? 4, progress);
    const { completeArtifactUpload } = await client.request(CompleteArtifactUploadDocument, { uploadId: upload.id, parts });
    uploaded.push(completeArtifactUpload);
  }
  if (files.length === 0) options.onProgress?.({ doneBytes: 0, totalBytes: 0, file: "" });
  return uploaded;
}

type Upload = CreateArtifactUploadMutation["createArtifactUpload"];

async function putContent(upload: Upload, file: string, size: number, concurrency: number, progress: (bytes: number) => void): Promise<{ partNumber: number; etag: string }[] | undefined> {
  const headers = Object.fromEntries(upload.headers.map((h) => [h.name, h.value]));
  const handle = await fs.promises.open(file, "r");
  try {
    if (upload.kind === "SINGLE") {
      if (!upload.url) throw new MlgraphError("server sent a SINGLE upload without a url", "INTERNAL_SERVER_ERROR");
      await putBytes(upload.url, headers, await readRange(handle, 0, size));
      progress(size);
      return undefined;
    }
    const parts = upload.parts ?? [];
    const partSize = upload.partSize ?? 0;
    const etags: { partNumber: number; etag: string }[] = [];
    let next = 0;
    // Parts are independent: a few in flight at once, each read from disk only when sent.
    const worker = async () => {
      while (next < parts.length) {
        const part = parts[next++];
        const bytes = await readRange(handle, (part.partNumber - 1) * partSize, part.size);
        const etag = await putBytes(part.url, headers, bytes);
        etags.push({ partNumber: part.partNumber, etag });
        progress(part.size);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, parts.length)) }, worker));
    return etags.sort((a, b) => a.partNumber - b.partNumber);
  } finally {
    await handle.close();
  }
}

async function readRange(handle: fs.promises.FileHandle, position: number, length: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(length);
  let read = 0;
  while (read < length) {
    const { bytesRead } = await handle.read(buffer, read, length - read, position + read);
    if (bytesRead === 0) throw new MlgraphError(`file shrank while uploading (expected ${length} bytes at ${position})`, "BAD_USER_INPUT");
    read += bytesRead;
  }
  return buffer;
}

/** PUTs bytes, retrying a dropped connection or 5xx a few times (a part PUT is idempotent). */
async function putBytes(url: string, headers: Record<string, string>, body: Buffer): Promise<string> {
  for (let attempt = 0; ; attempt++) {
    try {
      const res = await fetch(url, { method: "PUT", headers, body: new Uint8Array(body.buffer as ArrayBuffer, body.byteOffset, body.length) });
      const text = await res.text();
      if (res.ok) return res.headers.get("etag") ?? "";
      const err = new MlgraphError(`upload PUT answered HTTP ${res.status}: ${text.slice(0, 200)}`, res.status >= 500 ? "UNAVAILABLE" : "BAD_USER_INPUT", undefined, res.status);
      if (!err.retryable || attempt >= 3) throw err;
    } catch (err) {
      if (err instanceof MlgraphError && !err.retryable) throw err;
      if (attempt >= 3) throw err instanceof MlgraphError ? err : new MlgraphError(`upload PUT failed: ${String(err)}`, "NETWORK_ERROR", undefined, undefined, [], { cause: err });
    }
    await new Promise((r) => setTimeout(r, 200 * 2 ** attempt));
  }
}

export interface DownloadOptions {
  onProgress?: ProgressCallback;
}

/**
 * Downloads one artifact file, or every file below an artifact folder, into `destination` (for a
 * file: a file path, or an existing folder to write it into under its own name; for a folder: a
 * folder). Each file's SHA-256 is checked against the one the server recorded. A file is written
 * to `<target>.partial` and renamed when complete; on any failure the partial file is removed.
 * Resolves with the local paths written.
 */
export async function downloadArtifact(client: MetricRequester, runId: string, artifactPath: string, destination: string, options: DownloadOptions = {}): Promise<string[]> {
  const wanted = artifactPath.replace(/^\/+|\/+$/g, "");
  const slash = wanted.lastIndexOf("/");
  // artifacts(path) lists what is directly inside a folder: find the entry in its parent.
  const { run } = await client.request(ArtifactDownloadsDocument, { runId, path: slash > 0 ? wanted.slice(0, slash) : null });
  if (!run) throw new MlgraphError(`run ${runId} not found`, "NOT_FOUND", "runId");
  const entry = run.artifacts.find((a) => a.path === wanted);
  if (!entry) throw new MlgraphError(`run ${runId} has no artifact ${JSON.stringify(wanted)}`, "NOT_FOUND", "path");
  const exact = entry.isDir ? undefined : entry;
  const files = exact ? [exact] : await collectFolder(client, runId, [entry]);
  const totalBytes = files.reduce((n, f) => n + f.size, 0);
  let doneBytes = 0;
  const written: string[] = [];
  // `--out ./models` for a single file means inside that folder, as cp does (writing to the
  // folder's own path failed with EISDIR, after creating `models.partial` next to it).
  const intoFolder = exact ? await fs.promises.stat(destination).then((s) => s.isDirectory(), () => false) : false;
  for (const file of files) {
    const target = exact
      ? intoFolder
        ? path.join(destination, path.posix.basename(file.path))
        : destination
      : path.join(destination, ...file.path.slice(wanted.length).split("/").filter(Boolean));
    await fs.promises.mkdir(path.dirname(target), { recursive: true });
    if (!file.downloadUrl) throw new MlgraphError(`no download URL for ${file.path}`, "INTERNAL_SERVER_ERROR");
    const res = await fetch(file.downloadUrl).catch((err: unknown) => {
      throw new MlgraphError(`download of ${file.path} failed: ${String(err)}`, "NETWORK_ERROR", undefined, undefined, [], { cause: err });
    });
    if (!res.ok || !res.body) throw new MlgraphError(`download of ${file.path} answered HTTP ${res.status}`, res.status === 404 ? "NOT_FOUND" : "UNAVAILABLE", undefined, res.status);
    const hash = crypto.createHash("sha256");
    const counter = new Transform({
      transform(chunk: Buffer, _enc, callback) {
        hash.update(chunk);
        doneBytes += chunk.length;
        options.onProgress?.({ doneBytes, totalBytes, file: file.path });
        callback(null, chunk);
      },
    });
    const partial = `${target}.partial`;
    try {
      try {
        await streamPipeline(Readable.fromWeb(res.body as import("node:stream/web").ReadableStream), counter, fs.createWriteStream(partial));
      } catch (err) {
        // A local file error (no space, no permission) is the caller's to see as it is; anything
        // else is the connection dropping mid-body: say which file, retryable.
        if (err instanceof MlgraphError || (err as { syscall?: unknown } | null)?.syscall !== undefined) throw err;
        throw new MlgraphError(`download of ${file.path} failed: ${err instanceof Error ? err.message : String(err)}`, "NETWORK_ERROR", undefined, undefined, [], { cause: err });
      }
      const digest = hash.digest("hex");
      if (file.sha256 && digest !== file.sha256) {
        throw new MlgraphError(`${file.path}: SHA-256 mismatch after download (got ${digest}, expected ${file.sha256})`, "UNAVAILABLE");
      }
      await fs.promises.rename(partial, target);
    } catch (err) {
      // A half-written file must not be left behind to be mistaken for the artifact.
      await fs.promises.rm(partial, { force: true }).catch(() => undefined);
      throw err;
    }
    written.push(target);
  }
  return written;
}

type Listed = { path: string; size: number; sha256?: string | null; isDir: boolean; downloadUrl?: string | null };

/** A folder listing may hold sub-folders: descend until only files remain. */
async function collectFolder(client: MetricRequester, runId: string, listing: Listed[]): Promise<Listed[]> {
  const files: Listed[] = [];
  const pending = [...listing];
  while (pending.length > 0) {
    const item = pending.shift()!;
    if (!item.isDir) {
      files.push(item);
      continue;
    }
    const { run } = await client.request(ArtifactDownloadsDocument, { runId, path: item.path });
    pending.push(...(run?.artifacts ?? []).filter((a) => a.path !== item.path));
  }
  return files;
}

async function listFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string) => {
    for (const entry of await fs.promises.readdir(path.join(root, rel), { withFileTypes: true })) {
      const child = rel ? path.join(rel, entry.name) : entry.name;
      if (entry.isDirectory()) await walk(child);
      else if (entry.isFile()) out.push(child);
    }
  };
  await walk("");
  return out.sort();
}

export async function sha256File(file: string): Promise<string> {
  const hash = crypto.createHash("sha256");
  await streamPipeline(fs.createReadStream(file), hash);
  return hash.digest("hex");
}

function joinArtifactPath(prefix: string, rel: string): string {
  const p = prefix.replace(/^\/+|\/+$/g, "");
  return p ? `${p}/${rel}` : rel;
}

const CONTENT_TYPES: Record<string, string> = {
  ".json": "application/json",
  ".txt": "text/plain",
  ".csv": "text/csv",
  ".yaml": "application/yaml",
  ".yml": "application/yaml",
  ".png": "image/png",
  ".onnx": "application/octet-stream",
  ".pt": "application/octet-stream",
  ".pkl": "application/octet-stream",
};

function guessContentType(file: string): string {
  return CONTENT_TYPES[path.extname(file).toLowerCase()] ?? "application/octet-stream";
}
