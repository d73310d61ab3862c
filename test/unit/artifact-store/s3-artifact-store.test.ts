import { CreateBucketCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import S3rver from "s3rver";
import { DomainError } from "../../../src/services/errors.js";
import { artifactKey } from "../../../src/stores/artifact-store/artifact-key.js";
import {
  completeAndVerifyUpload,
  pendingUploadOf,
  type MultipartUploadDescriptor,
  type SingleUploadDescriptor,
  type UploadedPart,
} from "../../../src/stores/artifact-store/artifact-store.js";
import { S3ArtifactStore, type S3ArtifactStoreOptions } from "../../../src/stores/artifact-store/s3-artifact-store.js";

const MiB = 1024 * 1024;
const BUCKET = "mlgraph-test";
const credentials = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/**
 * A part PUT as a real uploader does it: one retry when the keep-alive connection was reset
 * under it (s3rver closes idle sockets; on a loaded 2-core machine undici sometimes reuses one).
 */
async function putPart(url: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (err) {
    if (!/ECONNRESET|fetch failed|socket/i.test(`${(err as Error).message} ${String((err as { cause?: unknown }).cause)}`)) throw err;
    return fetch(url, init);
  }
}

/**
 * What S3 does with multipart uploads and s3rver does not, in a proxy in front of s3rver: S3
 * answers 400 InvalidPart to a completion listing an ETag other than that part's PUT returned
 * (s3rver assembles whatever it lists), and it aborts uploads (s3rver answers MethodNotAllowed);
 * every later request on an aborted upload gets 404 NoSuchUpload. Headers pass unchanged (Host
 * included), so s3rver still checks the signatures.
 */
async function startEtagCheckingProxy(target: string): Promise<{ endpoint: string; close: () => Promise<void> }> {
  const { hostname, port } = new URL(target);
  const etags = new Map<string, string>();
  const aborted = new Set<string>();
  const s3Error = (res: http.ServerResponse, status: number, code: string, message: string) => {
    res.writeHead(status, { "content-type": "application/xml" });
    res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${message}</Message></Error>`);
  };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://proxy");
    const uploadId = url.searchParams.get("uploadId");
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      if (uploadId && aborted.has(uploadId)) return s3Error(res, 404, "NoSuchUpload", "The specified upload does not exist.");
      if (req.method === "DELETE" && uploadId) {
        aborted.add(uploadId);
        res.writeHead(204).end();
        return;
      }
      if (req.method === "POST" && uploadId) {
        for (const [, part] of body.toString("utf8").matchAll(/<Part>(.*?)<\/Part>/gs)) {
          const number = /<PartNumber>(\d+)<\/PartNumber>/.exec(part)?.[1];
          const etag = /<ETag>(.*?)<\/ETag>/.exec(part)?.[1]?.replace(/&quot;|"/g, "");
          if (etags.get(`${uploadId}/${number}`) !== etag) return s3Error(res, 400, "InvalidPart", "One or more of the specified parts could not be found.");
        }
      }
      const upstream = http.request({ hostname, port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        const partNumber = url.searchParams.get("partNumber");
        if (req.method === "PUT" && uploadId && partNumber && answer.statusCode === 200) {
          etags.set(`${uploadId}/${partNumber}`, String(answer.headers.etag ?? "").replace(/"/g, ""));
        }
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      upstream.on("error", () => res.writeHead(502).end());
      upstream.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe("S3ArtifactStore against s3rver", () => {
  let dir: string;
  let s3rver: S3rver;
  let endpoint: string;
  let store: S3ArtifactStore;
  const stores: S3ArtifactStore[] = [];

  function makeStore(options: Partial<S3ArtifactStoreOptions> = {}): S3ArtifactStore {
    const s = new S3ArtifactStore({ bucket: BUCKET, endpoint, credentials, region: "us-east-1", ...options });
    stores.push(s);
    return s;
  }

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "mlgraph-s3rver-"));
    s3rver = new S3rver({ address: "127.0.0.1", port: 0, silent: true, directory: dir });
    const { port } = await s3rver.run();
    endpoint = `http://127.0.0.1:${port}`;
    const admin = new S3Client({ region: "us-east-1", endpoint, credentials, forcePathStyle: true });
    await admin.send(new CreateBucketCommand({ Bucket: BUCKET }));
    admin.destroy();
    store = makeStore();
  });

  afterAll(async () => {
    for (const s of stores) s.close();
    await s3rver.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function uploadSingle(key: string, body: Buffer<ArrayBuffer>, declared: { sha256?: string; size?: number; contentType?: string } = {}) {
    const d = (await store.createUpload({ key, size: declared.size ?? body.length, ...declared })) as SingleUploadDescriptor;
    expect(d.kind).toBe("single");
    const res = await fetch(d.url, { method: d.method, body, headers: d.headers });
    return { d, res };
  }

  it("uploads with a presigned PUT, verifies, and serves a presigned GET", async () => {
    const body = Buffer.from("metrics,loss\n1,0.5\n");
    const key = artifactKey("r1", "eval/results.csv");
    const { d, res } = await uploadSingle(key, body, { sha256: sha256(body), contentType: "text/csv" });
    expect(res.status).toBe(200);
    // The declared SHA-256 travels as a signed header, which S3 checks against the body
    // (s3rver does not check it; the signature does cover it).
    expect(d.headers).toEqual({ "content-type": "text/csv", "x-amz-checksum-sha256": Buffer.from(sha256(body), "hex").toString("base64") });
    expect(new URL(d.url).searchParams.get("X-Amz-SignedHeaders")).toBe("content-length;content-type;host;x-amz-checksum-sha256");

    const verified = await completeAndVerifyUpload(store, pendingUploadOf(d));
    expect(verified).toMatchObject({ key, size: body.length, sha256: sha256(body) });
    // For stores that reject the header, S3_CHECKSUM_AT_PUT=false leaves it out.
    const plain = await makeStore({ checksumAtPut: false }).createUpload({ key: artifactKey("r1", "plain.csv"), size: body.length, sha256: sha256(body), contentType: "text/csv" });
    if (plain.kind !== "single") throw new Error("expected a single upload");
    expect(plain.headers).toEqual({ "content-type": "text/csv" });
    expect(new URL(plain.url).searchParams.get("X-Amz-SignedHeaders")).toBe("content-length;content-type;host");

    const got = await fetch(await store.presignDownload(key, 60));
    expect(got.status).toBe(200);
    expect(got.headers.get("content-type")).toBe("text/csv");
    expect(Buffer.from(await got.arrayBuffer())).toEqual(body);

    const range = await store.openRead(key, { start: 8, end: 11 });
    let text = "";
    for await (const c of range) text += (c as Buffer).toString();
    expect(text).toBe("loss");

    expect(await store.head(key)).toMatchObject({ size: body.length });
    expect(await store.head(artifactKey("r1", "missing"))).toBeNull();
    await expect(store.openRead(artifactKey("r1", "missing"))).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("handles an empty artifact", async () => {
    const key = artifactKey("r1", "empty");
    const { d, res } = await uploadSingle(key, Buffer.alloc(0), { sha256: sha256(Buffer.alloc(0)) });
    expect(res.status).toBe(200);
    await expect(completeAndVerifyUpload(store, pendingUploadOf(d))).resolves.toMatchObject({ size: 0 });
  });

  it("uploads 64 MiB+ through presigned part URLs and verifies SHA-256 by streaming", async () => {
    const size = 64 * MiB + 12_345;
    const key = artifactKey("r1", "checkpoints/model.bin");
    // The whole file is never held in memory: parts are generated, hashed and sent one by one.
    const seed = randomBytes(16);
    const partData = (partNumber: number, length: number) => {
      const out = Buffer.alloc(length);
      for (let off = 0, block = 0; off < length; off += 32, block++) {
        createHash("sha256").update(seed).update(`${partNumber}:${block}`).digest().copy(out, off);
      }
      return out;
    };
    const d = (await store.createUpload({ key, size })) as MultipartUploadDescriptor;
    expect(d.kind).toBe("multipart");
    expect(d.partSize).toBe(16 * MiB);
    expect(d.parts.map((p) => p.size)).toEqual([16 * MiB, 16 * MiB, 16 * MiB, 16 * MiB, 12_345]);

    const whole = createHash("sha256");
    const etags: UploadedPart[] = [];
    for (const part of d.parts) {
      const bytes = partData(part.partNumber, part.size);
      whole.update(bytes);
      const res = await putPart(part.url, { method: "PUT", body: bytes, headers: d.headers });
      expect(res.status).toBe(200);
      etags.push({ partNumber: part.partNumber, etag: res.headers.get("etag")! });
    }
    const expected = whole.digest("hex");

    const verified = await completeAndVerifyUpload(store, { ...pendingUploadOf(d), sha256: expected }, etags.reverse());
    expect(verified).toMatchObject({ key, size, sha256: expected });
    expect(await store.sha256(key)).toBe(expected);
    expect(await store.head(key)).toMatchObject({ size });
    await store.delete(key);
  });

  it("refuses to complete a multipart upload with parts missing", async () => {
    const small = makeStore({ multipartThreshold: MiB, partSize: 5 * MiB });
    const key = artifactKey("r1", "partial.bin");
    const d = (await small.createUpload({ key, size: 6 * MiB })) as MultipartUploadDescriptor;
    expect(d.parts).toHaveLength(2);
    const res = await fetch(d.parts[0]!.url, { method: "PUT", body: Buffer.alloc(5 * MiB) });
    const etag = res.headers.get("etag")!;
    await expect(small.completeUpload(pendingUploadOf(d), [{ partNumber: 1, etag }])).rejects.toMatchObject({ code: "BAD_USER_INPUT", field: "parts" });
    // s3rver has no ListParts, so completing without ETags is refused with a clear message.
    await expect(small.completeUpload(pendingUploadOf(d))).rejects.toThrow(/ETag/);
    expect(await small.head(key)).toBeNull();
  });

  it("keeps the parts when S3 refuses a completion's ETags (InvalidPart), so a corrected completion succeeds", async () => {
    const proxy = await startEtagCheckingProxy(endpoint);
    try {
      const viaProxy = makeStore({ endpoint: proxy.endpoint, multipartThreshold: MiB, partSize: 5 * MiB });
      const body = randomBytes(6 * MiB);
      const key = artifactKey("r1", "etags.bin");
      const d = (await viaProxy.createUpload({ key, size: body.length, sha256: sha256(body) })) as MultipartUploadDescriptor;
      expect(d.parts).toHaveLength(2);
      const parts: UploadedPart[] = [];
      for (const part of d.parts) {
        const start = (part.partNumber - 1) * d.partSize;
        const res = await putPart(part.url, { method: "PUT", body: body.subarray(start, start + part.size) });
        expect(res.status).toBe(200);
        parts.push({ partNumber: part.partNumber, etag: res.headers.get("etag")! });
      }
      const wrong = [parts[0]!, { partNumber: 2, etag: `"${"0".repeat(32)}"` }];
      const refused = await viaProxy.completeUpload(pendingUploadOf(d), wrong).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(DomainError);
      expect(refused).toMatchObject({ code: "BAD_USER_INPUT", field: "parts", message: expect.stringMatching(/^parts: .*InvalidPart/) });
      expect(await viaProxy.head(key)).toBeNull();
      // Nothing was aborted: the same upload completes with the right ETags.
      await expect(completeAndVerifyUpload(viaProxy, pendingUploadOf(d), parts)).resolves.toMatchObject({ key, size: body.length, sha256: sha256(body) });
      await viaProxy.delete(key);
    } finally {
      await proxy.close();
    }
  });

  it("detects a checksum mismatch and leaves no artifact behind", async () => {
    const body = Buffer.from("the real bytes");
    const key = artifactKey("r1", "tampered.bin");
    const { d, res } = await uploadSingle(key, body, { sha256: sha256(Buffer.from("other bytes")) });
    expect(res.status).toBe(200);
    const err = await completeAndVerifyUpload(store, pendingUploadOf(d), undefined, { fieldPrefix: "input." }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DomainError);
    expect(err).toMatchObject({ code: "BAD_USER_INPUT", field: "input.sha256" });
    expect(await store.head(key)).toBeNull();
  });

  it("detects a size mismatch and leaves no artifact behind", async () => {
    const key = artifactKey("r1", "wrong-size.bin");
    const d = (await store.createUpload({ key, size: 10 })) as SingleUploadDescriptor;
    // Real S3 refuses the PUT (content-length is signed); s3rver stores it and verification catches it.
    const res = await fetch(d.url, { method: "PUT", body: Buffer.alloc(12) });
    const outcome = await completeAndVerifyUpload(store, pendingUploadOf(d)).then(
      () => "accepted",
      (e: DomainError) => e.code,
    );
    expect(res.ok ? outcome : "BAD_USER_INPUT").toBe("BAD_USER_INPUT");
    expect(await store.head(key)).toBeNull();
  });

  it("lists folders and files one level below a prefix", async () => {
    const put = (p: string, body = "x") => uploadSingle(artifactKey("list-run", p), Buffer.from(body));
    await put("a.txt", "aaa");
    await put("model/weights.bin", "wwww");
    await put("model/config/params.yaml");
    // s3rver omits folders that hold only subfolders (real S3 lists them), so "z" also gets a file.
    await put("z/file");
    await put("z/deep/deeper/file");
    const root = await store.list("runs/list-run/artifacts/");
    expect(root).toEqual([
      { key: "runs/list-run/artifacts/a.txt", name: "a.txt", size: 3, isDir: false },
      { key: "runs/list-run/artifacts/model", name: "model", size: 0, isDir: true },
      { key: "runs/list-run/artifacts/z", name: "z", size: 0, isDir: true },
    ]);
    expect(await store.list("runs/list-run/artifacts/model")).toEqual([
      { key: "runs/list-run/artifacts/model/config", name: "config", size: 0, isDir: true },
      { key: "runs/list-run/artifacts/model/weights.bin", name: "weights.bin", size: 4, isDir: false },
    ]);
    expect(await store.list("runs/list-run/artifacts/z/deep/")).toEqual([
      { key: "runs/list-run/artifacts/z/deep/deeper", name: "deeper", size: 0, isDir: true },
    ]);
    expect(await store.list("runs/empty-run/artifacts/")).toEqual([]);
  });

  it("keeps deployments apart with a key prefix", async () => {
    const prefixed = makeStore({ keyPrefix: "tenant-a/" });
    const key = artifactKey("pr", "f.txt");
    const d = (await prefixed.createUpload({ key, size: 2 })) as SingleUploadDescriptor;
    await fetch(d.url, { method: "PUT", body: "hi" });
    expect(await prefixed.head(key)).toMatchObject({ size: 2 });
    expect(await store.head(key)).toBeNull();
    expect(await store.head(`tenant-a/${key}`)).toMatchObject({ size: 2 });
    expect(await prefixed.list("runs/pr/artifacts")).toEqual([{ key, name: "f.txt", size: 2, isDir: false }]);
  });

  it("paginates listings beyond one page", async () => {
    const keys = Array.from({ length: 1005 }, (_, i) => artifactKey("many", `f${String(i).padStart(4, "0")}`));
    const admin = new S3Client({ region: "us-east-1", endpoint, credentials, forcePathStyle: true, requestChecksumCalculation: "WHEN_REQUIRED" });
    for (let i = 0; i < keys.length; i += 50) {
      await Promise.all(keys.slice(i, i + 50).map((Key) => admin.send(new PutObjectCommand({ Bucket: BUCKET, Key, Body: "1" }))));
    }
    admin.destroy();
    const listed = await store.list("runs/many/artifacts/");
    expect(listed.map((e) => e.key)).toEqual(keys);
  });

  it("reports an unreachable endpoint as UNAVAILABLE", async () => {
    const down = makeStore({ endpoint: "http://127.0.0.1:1", maxAttempts: 1 });
    const key = artifactKey("r1", "x.bin");
    for (const attempt of [
      () => down.head(key),
      () => down.list("runs/r1/artifacts/"),
      () => down.sha256(key),
      () => down.delete(key),
      () => down.createUpload({ key, size: 64 * MiB }),
      () => down.completeUpload({ key, size: 3 }),
    ]) {
      const err = await attempt().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(DomainError);
      expect(err).toMatchObject({ code: "UNAVAILABLE" });
      expect((err as Error).message).toMatch(/127\.0\.0\.1:1.*unreachable \(ECONNREFUSED\)/);
    }
  });

  it("reports a missing bucket as UNAVAILABLE", async () => {
    const wrong = makeStore({ bucket: "no-such-bucket" });
    await expect(wrong.list("runs/")).rejects.toMatchObject({ code: "UNAVAILABLE", message: expect.stringMatching(/NoSuchBucket/) });
  });
});
