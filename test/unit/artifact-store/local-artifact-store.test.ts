import express from "express";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import type { Server } from "node:http";
import { request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { DomainError } from "../../../src/services/errors.js";
import { artifactKey } from "../../../src/stores/artifact-store/artifact-key.js";
import {
  completeAndVerifyUpload,
  pendingUploadOf,
  type MultipartUploadDescriptor,
  type UploadDescriptor,
} from "../../../src/stores/artifact-store/artifact-store.js";
import { createLocalArtifactRouter } from "../../../src/stores/artifact-store/local-artifact-router.js";
import { LocalArtifactStore } from "../../../src/stores/artifact-store/local-artifact-store.js";

const MiB = 1024 * 1024;
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("LocalArtifactStore through its express router", () => {
  let dir: string;
  let server: Server;
  let store: LocalArtifactStore;
  let baseUrl = "";
  let clockOffsetMs = 0;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "mlgraph-artifacts-"));
    store = new LocalArtifactStore({
      directory: LocalArtifactStore.defaultDirectory(dir),
      secret: randomBytes(32),
      publicBaseUrl: () => `${baseUrl}/artifacts`,
      multipartThreshold: 6 * MiB,
      partSize: 5 * MiB,
    });
    const app = express();
    app.use("/artifacts", createLocalArtifactRouter(store, { now: () => Date.now() + clockOffsetMs }));
    server = app.listen(0, "127.0.0.1");
    await new Promise<void>((resolve) => server.once("listening", () => resolve()));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  afterEach(() => {
    clockOffsetMs = 0;
  });

  async function put(descriptor: UploadDescriptor & { kind: "single" }, body: Buffer<ArrayBuffer>): Promise<Response> {
    return fetch(descriptor.url, { method: "PUT", body, headers: descriptor.headers });
  }

  it("uploads with one signed PUT, verifies, lists and downloads", async () => {
    const body = Buffer.from("hello artifact world");
    const key = artifactKey("run1", "models/readme.txt");
    const descriptor = await store.createUpload({ key, size: body.length, sha256: sha256(body) });
    expect(descriptor.kind).toBe("single");
    if (descriptor.kind !== "single") return;
    expect(descriptor.url.startsWith(`${baseUrl}/artifacts/runs/run1/artifacts/models/readme.txt?`)).toBe(true);
    const res = await put(descriptor, body);
    expect(res.status).toBe(200);
    expect(res.headers.get("etag")).toBeTruthy();

    const verified = await completeAndVerifyUpload(store, pendingUploadOf(descriptor));
    expect(verified).toMatchObject({ key, size: body.length, sha256: sha256(body) });

    expect(await store.list("runs/run1/artifacts")).toEqual([{ key: "runs/run1/artifacts/models", name: "models", size: 0, isDir: true }]);
    expect(await store.list("runs/run1/artifacts/models/")).toEqual([{ key, name: "readme.txt", size: body.length, isDir: false }]);
    expect(await store.list("runs/nope/artifacts/")).toEqual([]);

    const got = await fetch(await store.presignDownload(key, 60));
    expect(got.status).toBe(200);
    expect(got.headers.get("accept-ranges")).toBe("bytes");
    expect(got.headers.get("x-content-type-options")).toBe("nosniff");
    expect(Buffer.from(await got.arrayBuffer())).toEqual(body);

    const head = await fetch(await store.presignDownload(key, 60), { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe(String(body.length));
  });

  it("handles an empty artifact", async () => {
    const key = artifactKey("run1", "empty.txt");
    const d = await store.createUpload({ key, size: 0, sha256: sha256(Buffer.alloc(0)) });
    if (d.kind !== "single") throw new Error("expected single");
    expect((await put(d, Buffer.alloc(0))).status).toBe(200);
    await expect(completeAndVerifyUpload(store, pendingUploadOf(d))).resolves.toMatchObject({ size: 0 });
    const res = await fetch(await store.presignDownload(key, 60));
    expect(res.status).toBe(200);
    expect((await res.arrayBuffer()).byteLength).toBe(0);
  });

  it("serves byte ranges with 206 and refuses unsatisfiable ones with 416", async () => {
    const body = Buffer.from("0123456789");
    const key = artifactKey("run1", "range.txt");
    const d = await store.createUpload({ key, size: body.length });
    if (d.kind !== "single") throw new Error("expected single");
    await put(d, body);
    const url = await store.presignDownload(key, 60);

    let res = await fetch(url, { headers: { range: "bytes=2-5" } });
    expect(res.status).toBe(206);
    expect(res.headers.get("content-range")).toBe("bytes 2-5/10");
    expect(await res.text()).toBe("2345");

    res = await fetch(url, { headers: { range: "bytes=-3" } });
    expect(res.status).toBe(206);
    expect(await res.text()).toBe("789");

    res = await fetch(url, { headers: { range: "bytes=7-" } });
    expect(res.headers.get("content-range")).toBe("bytes 7-9/10");
    expect(await res.text()).toBe("789");

    res = await fetch(url, { headers: { range: "bytes=10-20" } });
    expect(res.status).toBe(416);
    expect(res.headers.get("content-range")).toBe("bytes */10");
    await res.arrayBuffer();

    const part = await store.openRead(key, { start: 3, end: 4 });
    expect((await streamToBuffer(part)).toString()).toBe("34");
  });

  it("refuses expired and tampered signatures with 403", async () => {
    const key = artifactKey("run1", "secret.bin");
    const d = await store.createUpload({ key, size: 4 });
    if (d.kind !== "single") throw new Error("expected single");
    expect((await put(d, Buffer.from("abcd"))).status).toBe(200);
    const url = new URL(await store.presignDownload(key, 60));

    clockOffsetMs = 61_000;
    const expired = await fetch(url);
    expect(expired.status).toBe(403);
    expect(((await expired.json()) as { error: { message: string } }).error.message).toMatch(/expired/);
    clockOffsetMs = 0;

    const tampered = new URL(url);
    const sig = tampered.searchParams.get("signature")!;
    tampered.searchParams.set("signature", (sig[0] === "A" ? "B" : "A") + sig.slice(1));
    expect((await fetch(tampered)).status).toBe(403);

    const otherKey = new URL(url.href.replace("secret.bin", "other.bin"));
    expect((await fetch(otherKey)).status).toBe(403);

    const longer = new URL(url);
    longer.searchParams.set("expires", String(Number(url.searchParams.get("expires")) + 3600));
    expect((await fetch(longer)).status).toBe(403);

    const unsigned = new URL(url);
    unsigned.search = "";
    expect((await fetch(unsigned)).status).toBe(403);

    // A download URL cannot be used to overwrite the object.
    const overwrite = await fetch(url, { method: "PUT", body: "evil" });
    expect(overwrite.status).toBe(403);
    expect((await fetch(url)).status).toBe(200);
    expect(await store.sha256(key)).toBe(sha256(Buffer.from("abcd")));
  });

  it("never exposes a body of the wrong size", async () => {
    const key = artifactKey("run1", "short.bin");
    const d = await store.createUpload({ key, size: 10 });
    if (d.kind !== "single") throw new Error("expected single");
    const res = await put(d, Buffer.from("too short"));
    expect(res.status).toBe(400);
    expect(await store.head(key)).toBeNull();
    await expect(completeAndVerifyUpload(store, pendingUploadOf(d))).rejects.toMatchObject({ code: "BAD_USER_INPUT", field: "upload" });
    expect(await readdir(path.join(dir, "artifacts", "tmp"))).toEqual([]);
  });

  it("leaves no trace when the client disconnects mid-upload", async () => {
    const key = artifactKey("run1", "aborted.bin");
    const d = await store.createUpload({ key, size: 1 * MiB });
    if (d.kind !== "single") throw new Error("expected single");
    await new Promise<void>((resolve) => {
      const req = httpRequest(d.url, { method: "PUT", headers: { "content-length": String(MiB) } });
      req.on("error", () => resolve());
      req.write(Buffer.alloc(64 * 1024), () => setTimeout(() => { req.destroy(); resolve(); }, 50));
    });
    // The server notices the hang-up and removes its temporary file asynchronously.
    for (const deadline = Date.now() + 10_000; Date.now() < deadline && (await readdir(path.join(dir, "artifacts", "tmp"))).length > 0; ) await sleep(20);
    expect(await readdir(path.join(dir, "artifacts", "tmp"))).toEqual([]);
    expect(await store.head(key)).toBeNull();
  });

  it("refuses at PUT time a body whose SHA-256 differs from the one the URL was signed for, storing nothing", async () => {
    const body = Buffer.from("payload");
    const key = artifactKey("run1", "signed-sum.bin");
    const d = await store.createUpload({ key, size: body.length, sha256: sha256(body) });
    if (d.kind !== "single") throw new Error("expected single");
    const refused = await put(d, Buffer.from("PAYLOAD"));
    expect(refused.status).toBe(400);
    expect(await refused.json()).toMatchObject({ error: { code: "BAD_USER_INPUT", message: expect.stringMatching(/SHA-256 .* differs from the .* this URL was signed for; nothing was stored/) } });
    expect(await store.head(key)).toBeNull();
    expect(await readdir(path.join(dir, "artifacts", "tmp"))).toEqual([]);
    // The declared bytes go through, and again (a retried PUT stores the same bytes).
    expect((await put(d, body)).status).toBe(200);
    expect((await put(d, body)).status).toBe(200);
    expect((await put(d, Buffer.from("PAYLOAD"))).status).toBe(400);
    expect((await completeAndVerifyUpload(store, pendingUploadOf(d))).sha256).toBe(sha256(body));
  });

  it("deletes an upload whose SHA-256 does not match at completion (a URL signed without a checksum)", async () => {
    const body = Buffer.from("payload");
    const key = artifactKey("run1", "checked.bin");
    const d = await store.createUpload({ key, size: body.length });
    if (d.kind !== "single") throw new Error("expected single");
    expect((await put(d, body)).status).toBe(200);
    const err = await completeAndVerifyUpload(store, { ...pendingUploadOf(d), sha256: "0".repeat(64) }, undefined, { fieldPrefix: "input." }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DomainError);
    expect(err).toMatchObject({ code: "BAD_USER_INPUT", field: "input.sha256" });
    expect(await store.head(key)).toBeNull();
  });

  it("uploads in parts (out of order), assembles them atomically and cleans up", async () => {
    const size = 12 * MiB + 3;
    const data = randomBytes(size);
    const key = artifactKey("run2", "data/train.bin");
    const d = (await store.createUpload({ key, size, sha256: sha256(data) })) as MultipartUploadDescriptor;
    expect(d.kind).toBe("multipart");
    expect(d.parts.map((p) => p.size)).toEqual([5 * MiB, 5 * MiB, 2 * MiB + 3]);

    const etags = await Promise.all(
      [...d.parts].reverse().map(async (p) => {
        const start = (p.partNumber - 1) * d.partSize;
        const res = await fetch(p.url, { method: "PUT", body: data.subarray(start, start + p.size) });
        expect(res.status).toBe(200);
        return { partNumber: p.partNumber, etag: res.headers.get("etag")! };
      }),
    );
    // A part URL only accepts its own part's size.
    const wrong = await fetch(d.parts[0]!.url, { method: "PUT", body: Buffer.alloc(10) });
    expect(wrong.status).toBe(400);
    expect(await store.head(key)).toBeNull();

    const verified = await completeAndVerifyUpload(store, pendingUploadOf(d), etags);
    expect(verified).toMatchObject({ size, sha256: sha256(data) });
    expect(await readdir(path.join(dir, "artifacts", "uploads"))).toEqual([]);
    // Completing again (a client retry) is harmless.
    await expect(store.completeUpload(pendingUploadOf(d), etags)).resolves.toMatchObject({ size });

    const res = await fetch(await store.presignDownload(key, 60), { headers: { range: `bytes=${5 * MiB - 2}-${5 * MiB + 1}` } });
    expect(Buffer.from(await res.arrayBuffer())).toEqual(data.subarray(5 * MiB - 2, 5 * MiB + 2));
  });

  it("completes multipart without client ETags, refuses missing parts and wrong ETags", async () => {
    const size = 7 * MiB;
    const data = randomBytes(size);
    const key = artifactKey("run2", "noetag.bin");
    const d = (await store.createUpload({ key, size })) as MultipartUploadDescriptor;
    await fetch(d.parts[0]!.url, { method: "PUT", body: data.subarray(0, 5 * MiB) });
    await expect(store.completeUpload(pendingUploadOf(d))).rejects.toMatchObject({ code: "BAD_USER_INPUT", field: "parts" });
    await fetch(d.parts[1]!.url, { method: "PUT", body: data.subarray(5 * MiB) });
    await expect(
      store.completeUpload(pendingUploadOf(d), [
        { partNumber: 1, etag: "0".repeat(32) },
        { partNumber: 2, etag: "0".repeat(32) },
      ]),
    ).rejects.toMatchObject({ field: "parts" });
    expect(await store.head(key)).toBeNull();
    const verified = await completeAndVerifyUpload(store, pendingUploadOf(d));
    expect(verified.sha256).toBe(sha256(data));
  });

  it("aborting a multipart upload removes its parts and invalidates its URLs", async () => {
    const key = artifactKey("run2", "abandoned.bin");
    const d = (await store.createUpload({ key, size: 8 * MiB })) as MultipartUploadDescriptor;
    await fetch(d.parts[0]!.url, { method: "PUT", body: Buffer.alloc(5 * MiB) });
    await store.abortUpload(pendingUploadOf(d));
    expect(await readdir(path.join(dir, "artifacts", "uploads"))).toEqual([]);
    const late = await fetch(d.parts[1]!.url, { method: "PUT", body: Buffer.alloc(3 * MiB) });
    expect(late.status).toBe(404);
  });

  it("treats percent-encoded dots as a literal folder name inside the run", async () => {
    const key = artifactKey("run3", "%2e%2e/x.txt");
    const d = await store.createUpload({ key, size: 2 });
    if (d.kind !== "single") throw new Error("expected single");
    expect((await put(d, Buffer.from("ok"))).status).toBe(200);
    expect(await store.list("runs/run3/artifacts/")).toEqual([{ key: "runs/run3/artifacts/%2e%2e", name: "%2e%2e", size: 0, isDir: true }]);
    expect(await readdir(path.join(dir, "artifacts", "objects", "runs", "run3", "artifacts", "%2e%2e"))).toEqual(["x.txt"]);
  });

  it("refuses traversal in crafted URLs before touching the disk", async () => {
    for (const p of ["/artifacts/runs/r/artifacts/..%2F..%2F..%2Fetc%2Fpasswd", "/artifacts/runs/r/artifacts/%2e%2e/%2e%2e/x", "/artifacts/a%00b"]) {
      // Raw request: fetch would normalize "%2e%2e" segments before sending.
      expect(await rawStatus(`${p}?expires=9999999999&signature=x`)).toBe(400);
    }
  });

  function rawStatus(requestPath: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const req = httpRequest(`${baseUrl}/`, { path: requestPath, method: "GET" }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", reject);
      req.end();
    });
  }

  it("delete removes the file and its now-empty folders", async () => {
    const key = artifactKey("run4", "a/b/c.txt");
    const d = await store.createUpload({ key, size: 1 });
    if (d.kind !== "single") throw new Error("expected single");
    await put(d, Buffer.from("c"));
    await store.delete(key);
    await store.delete(key); // idempotent
    expect(await store.head(key)).toBeNull();
    expect(await store.list("runs/run4/artifacts")).toEqual([]);
    await expect(store.openRead(key)).rejects.toMatchObject({ code: "NOT_FOUND" });
  });
});

async function streamToBuffer(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

