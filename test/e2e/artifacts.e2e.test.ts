import { CreateBucketCommand, HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import pg from "pg";
import S3rver from "s3rver";
import { ok, startTestServer, waitFor, type GqlResponse, type TestServer } from "../helpers/test-server";

const MiB = 1024 * 1024;
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

const CREATE_UPLOAD = `mutation($input: ArtifactUploadInput!) { createArtifactUpload(input: $input) { id kind url partSize expiresAt headers { name value } parts { partNumber url size } } }`;
const COMPLETE = `mutation($id: ID!, $parts: [UploadedPartInput!]) { completeArtifactUpload(uploadId: $id, parts: $parts) { path name size sha256 isDir contentType } }`;
const LIST = `query($id: ID!, $path: String) { run(id: $id) { artifacts(path: $path) { path name isDir size sha256 downloadUrl(expiresInSeconds: 600) } } }`;

/** A PUT as a real uploader does it: one retry when a keep-alive socket was reset under it. */
async function put(url: string, body: Buffer, headers: Record<string, string>): Promise<Response> {
  const init = { method: "PUT", body, headers } as RequestInit;
  try {
    return await fetch(url, init);
  } catch (err) {
    if (!/ECONNRESET|fetch failed|socket/i.test(`${(err as Error).message} ${String((err as { cause?: unknown }).cause)}`)) throw err;
    return fetch(url, init);
  }
}

/**
 * The client side of an upload: create, PUT the bytes (single or in parts), complete. Every PUT
 * must succeed unless `mayRefusePut` (a single PUT of bytes other than the declared ones, which a
 * store that checks the signed checksum refuses); `putStatus` is the single PUT's status.
 */
async function upload(
  server: TestServer,
  runId: string,
  artifactPath: string,
  bytes: Buffer,
  options: { declaredSha256?: string; contentType?: string; mayRefusePut?: boolean } = {},
) {
  const created = ok(
    await server.gql(CREATE_UPLOAD, {
      input: { runId, path: artifactPath, size: bytes.length, sha256: options.declaredSha256 ?? sha256(bytes), contentType: options.contentType },
    }),
  ).createArtifactUpload;
  const headers = Object.fromEntries(created.headers.map((h: { name: string; value: string }) => [h.name, h.value]));
  let parts: { partNumber: number; etag: string }[] | undefined;
  let putStatus: number | undefined;
  if (created.kind === "SINGLE") {
    putStatus = (await put(created.url, bytes, headers)).status;
    if (!options.mayRefusePut) expect(putStatus).toBeLessThan(300);
  } else {
    parts = [];
    for (const part of created.parts) {
      const start = (part.partNumber - 1) * created.partSize;
      const res = await put(part.url, bytes.subarray(start, start + part.size), headers);
      expect(res.status).toBeLessThan(300);
      parts.push({ partNumber: part.partNumber, etag: res.headers.get("etag") as string });
    }
  }
  const completed: GqlResponse = await server.gql(COMPLETE, { id: created.id, parts });
  return { created, completed, putStatus };
}

async function newRun(server: TestServer, name: string): Promise<string> {
  const exp = ok(await server.gql(`mutation($n: String!) { createExperiment(input: {name: $n}) { id } }`, { n: name })).createExperiment;
  return ok(await server.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e}) { id } }`, { e: exp.id })).createRun.id;
}

/**
 * The same behaviour on every store: round trip, listing, multipart, mismatch, traversal.
 * `checksumAtPut`: the store refuses a single PUT whose body differs from the declared SHA-256
 * (the local store, and S3 itself through x-amz-checksum-sha256; s3rver does not check it, so
 * there the mismatch is caught at completion).
 */
function artifactRoundTrips(label: string, boot: () => Promise<TestServer>, checksumAtPut: boolean, objectExists: ObjectExists) {
  /** A single upload of bytes other than the declared ones fails: at PUT time or at completion. */
  const expectMismatchRefused = ({ putStatus, completed }: Awaited<ReturnType<typeof upload>>) => {
    if (checksumAtPut) {
      expect(putStatus).toBe(400);
      expect(completed.errors?.[0].message).toMatch(/nothing was uploaded/);
      expect(completed.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "uploadId" });
    } else {
      expect(putStatus).toBeLessThan(300);
      expect(completed.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "uploadId" });
      expect(completed.errors?.[0].message).toMatch(/SHA-256/);
    }
  };
  describe(`artifacts on the ${label} store`, () => {
    let server: TestServer;
    let runId: string;
    beforeAll(async () => {
      server = await boot();
      runId = await newRun(server, `artifacts-${label}`);
    });
    afterAll(async () => {
      await server?.stop();
    });

    it("uploads, verifies, lists folders and files with size and checksum, and downloads (with Range)", async () => {
      const weights = randomBytes(4096);
      const readme = Buffer.from("# churn model\n");
      const a = await upload(server, runId, "model/weights.bin", weights, { contentType: "application/octet-stream" });
      expect(ok(a.completed).completeArtifactUpload).toEqual({ path: "model/weights.bin", name: "weights.bin", size: 4096, sha256: sha256(weights), isDir: false, contentType: "application/octet-stream" });
      ok((await upload(server, runId, "README.md", readme)).completed);

      const root = ok(await server.gql(LIST, { id: runId })).run.artifacts;
      expect(root.map((e: any) => [e.path, e.isDir, e.size])).toEqual([
        ["README.md", false, readme.length],
        ["model", true, 4096],
      ]);
      expect(root[1].downloadUrl).toBeNull();
      const inside = ok(await server.gql(LIST, { id: runId, path: "model" })).run.artifacts;
      expect(inside).toHaveLength(1);
      expect(inside[0]).toMatchObject({ path: "model/weights.bin", sha256: sha256(weights) });

      const full = await fetch(inside[0].downloadUrl);
      expect(full.status).toBe(200);
      expect(sha256(Buffer.from(await full.arrayBuffer()))).toBe(sha256(weights));
      const ranged = await fetch(inside[0].downloadUrl, { headers: { range: "bytes=100-199" } });
      expect(ranged.status).toBe(206);
      expect(Buffer.from(await ranged.arrayBuffer())).toEqual(weights.subarray(100, 200));
    });

    it("uploads a file of at least 64 MiB in parts and verifies it", async () => {
      const big = randomBytes(64 * MiB + 4321);
      const { created, completed } = await upload(server, runId, "checkpoints/big.bin", big);
      expect(created.kind).toBe("MULTIPART");
      expect(created.parts.length).toBeGreaterThanOrEqual(4);
      expect(ok(completed).completeArtifactUpload).toMatchObject({ size: big.length, sha256: sha256(big) });
      const listed = ok(await server.gql(LIST, { id: runId, path: "checkpoints" })).run.artifacts;
      const res = await fetch(listed[0].downloadUrl);
      expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(sha256(big));
    }, 120_000);

    it("discards an upload whose checksum does not match, leaving no artifact behind", async () => {
      const bytes = randomBytes(1000);
      expectMismatchRefused(await upload(server, runId, "bad/data.bin", bytes, { declaredSha256: sha256(Buffer.from("something else")), mayRefusePut: true }));
      expect(ok(await server.gql(LIST, { id: runId, path: "bad" })).run.artifacts).toEqual([]);
      expect(ok(await server.gql(LIST, { id: runId })).run.artifacts.map((e: any) => e.path)).not.toContain("bad");
    });

    it("keeps a verified artifact while a re-upload of its path is in flight, and when that re-upload fails verification", async () => {
      const good = randomBytes(2000);
      ok((await upload(server, runId, "keep/model.pkl", good)).completed);
      const served = async () => {
        const [entry] = ok(await server.gql(LIST, { id: runId, path: "keep" })).run.artifacts;
        return { sha256: entry.sha256, bytes: Buffer.from(await (await fetch(entry.downloadUrl)).arrayBuffer()) };
      };

      // Bytes PUT but not completed are not what the path serves.
      const other = randomBytes(2000);
      const pendingUpload = ok(await server.gql(CREATE_UPLOAD, { input: { runId, path: "keep/model.pkl", size: other.length, sha256: sha256(other) } })).createArtifactUpload;
      expect((await put(pendingUpload.url, other, Object.fromEntries(pendingUpload.headers.map((h: any) => [h.name, h.value])))).status).toBeLessThan(300);
      expect(await served()).toEqual({ sha256: sha256(good), bytes: good });

      // A re-upload that fails verification (wrong size, then wrong checksum) leaves the artifact as it was.
      const wrongSize = await upload(server, runId, "keep/model.pkl", randomBytes(10), { declaredSha256: sha256(good), mayRefusePut: true });
      expect(wrongSize.completed.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "uploadId" });
      expectMismatchRefused(await upload(server, runId, "keep/model.pkl", randomBytes(2000), { declaredSha256: sha256(good), mayRefusePut: true }));
      expect(await served()).toEqual({ sha256: sha256(good), bytes: good });

      // Completing the pending upload replaces it, and the replaced bytes' URL stops working.
      const oldUrl = ok(await server.gql(LIST, { id: runId, path: "keep" })).run.artifacts[0].downloadUrl;
      expect(ok(await server.gql(COMPLETE, { id: pendingUpload.id })).completeArtifactUpload).toMatchObject({ path: "keep/model.pkl", sha256: sha256(other) });
      expect(await served()).toEqual({ sha256: sha256(other), bytes: other });
      expect((await fetch(oldUrl)).status).toBe(404);
    });

    it("discards a multipart upload whose checksum does not match", async () => {
      const big = randomBytes(20 * MiB);
      const { created, completed } = await upload(server, runId, "bad-big/data.bin", big, { declaredSha256: "0".repeat(64) });
      expect(created.kind).toBe("MULTIPART");
      expect(completed.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "uploadId" });
      expect(ok(await server.gql(LIST, { id: runId, path: "bad-big" })).run.artifacts).toEqual([]);
      // The mismatch discarded the upload: completing it again finds nothing.
      expect((await server.gql(COMPLETE, { id: created.id })).errors?.[0].extensions).toMatchObject({ code: "NOT_FOUND", field: "uploadId" });
    }, 60_000);

    it("names uploadId when completing before the bytes were sent, and keeps that upload completable", async () => {
      const bytes = randomBytes(500);
      const created = ok(await server.gql(CREATE_UPLOAD, { input: { runId, path: "early/data.bin", size: bytes.length, sha256: sha256(bytes) } })).createArtifactUpload;
      const early = await server.gql(COMPLETE, { id: created.id });
      expect(early.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "uploadId" });
      expect(early.errors?.[0].message).toMatch(/^uploadId: nothing was uploaded/);
      expect((await put(created.url, bytes, Object.fromEntries(created.headers.map((h: any) => [h.name, h.value])))).status).toBeLessThan(300);
      expect(ok(await server.gql(COMPLETE, { id: created.id })).completeArtifactUpload).toMatchObject({ path: "early/data.bin", sha256: sha256(bytes) });
    });

    it("answers concurrent completions of one upload with its artifact and never deletes the bytes it recorded", async () => {
      const bytes = randomBytes(3 * MiB);
      const created = ok(await server.gql(CREATE_UPLOAD, { input: { runId, path: "twice/model.bin", size: bytes.length, sha256: sha256(bytes) } })).createArtifactUpload;
      expect((await put(created.url, bytes, Object.fromEntries(created.headers.map((h: any) => [h.name, h.value])))).status).toBeLessThan(300);
      const answers = await Promise.all(Array.from({ length: 6 }, () => server.gql(COMPLETE, { id: created.id })));
      const [entry] = ok(await server.gql(LIST, { id: runId, path: "twice" })).run.artifacts;
      expect(entry).toMatchObject({ path: "twice/model.bin", sha256: sha256(bytes) });
      expect(await objectExists(server, created.url)).toBe(true);
      const download = await fetch(entry.downloadUrl);
      expect(download.status).toBe(200);
      expect(sha256(Buffer.from(await download.arrayBuffer()))).toBe(sha256(bytes));
      // Each call either saw the upload (and answers with the artifact, whichever call recorded
      // it) or came after one had completed it.
      for (const answer of answers) {
        if (answer.errors) expect(answer.errors[0]).toMatchObject({ extensions: { code: "NOT_FOUND", field: "uploadId" }, message: expect.stringMatching(/completed or discarded/) });
        else expect(answer.data.completeArtifactUpload).toMatchObject({ path: "twice/model.bin", size: bytes.length, sha256: sha256(bytes) });
      }
      expect(answers.filter((a) => !a.errors).length).toBeGreaterThanOrEqual(1);
    });

    it("keeps one object per path when new uploads of that path complete at once (the other is deleted, not leaked)", async () => {
      const PATHS = 10;
      const uploads = await Promise.all(
        Array.from({ length: PATHS * 2 }, async (_, i) => {
          const bytes = randomBytes(1000 + i);
          const artifactPath = `fresh/${Math.floor(i / 2)}.bin`;
          const created = ok(await server.gql(CREATE_UPLOAD, { input: { runId, path: artifactPath, size: bytes.length, sha256: sha256(bytes) } })).createArtifactUpload;
          expect((await put(created.url, bytes, Object.fromEntries(created.headers.map((h: any) => [h.name, h.value])))).status).toBeLessThan(300);
          return { artifactPath, bytes, created };
        }),
      );
      const answers = await Promise.all(uploads.map((u) => server.gql(COMPLETE, { id: u.created.id })));
      for (const answer of answers) ok(answer);
      const listed = ok(await server.gql(LIST, { id: runId, path: "fresh" })).run.artifacts;
      expect(listed).toHaveLength(PATHS);
      for (const entry of listed) {
        const pair = uploads.filter((u) => u.artifactPath === entry.path);
        const served = pair.find((u) => sha256(u.bytes) === entry.sha256);
        expect(served).toBeDefined();
        for (const u of pair) {
          const stored = await objectExists(server, u.created.url);
          expect({ path: entry.path, served: u === served, stored }).toEqual({ path: entry.path, served: u === served, stored: u === served });
        }
      }
    });

    it("refuses path traversal, absolute paths and control characters", async () => {
      for (const bad of ["../escape.txt", "model/../../escape.txt", "/etc/passwd", "a\\..\\b", "a/./b", "bad\u0000name", "a//b"]) {
        const res = await server.gql(CREATE_UPLOAD, { input: { runId, path: bad, size: 1, sha256: sha256(Buffer.from("x")) } });
        expect(res.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "input.path" });
      }
      const listing = await server.gql(LIST, { id: runId, path: "../" });
      expect(listing.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "path" });
    });
  });
}

/** Whether the object a single-PUT upload URL writes is in the store, looked at behind the server's back. */
type ObjectExists = (server: TestServer, uploadUrl: string) => Promise<boolean>;

// The local store keeps an object at objects/<key>; the key is the signed URL's path.
const localObjectExists: ObjectExists = async (server, url) =>
  existsSync(path.join(server.dataDir, "artifacts", "objects", ...new URL(url).pathname.replace(/^\/artifacts\//, "").split("/").map(decodeURIComponent)));

artifactRoundTrips("local", () => startTestServer(), true, localObjectExists);

let s3rver: S3rver | undefined;
let s3dir: string | undefined;
let s3endpoint: string | undefined;
const S3_CREDENTIALS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };
const S3_BUCKET = "mlgraph-e2e";

/** A server on the S3 store (one s3rver for the file, started on first use). */
async function bootOnS3(env: Record<string, string> = {}): Promise<TestServer> {
  if (!s3endpoint) {
    s3dir = await mkdtemp(path.join(tmpdir(), "mlgraph-e2e-s3rver-"));
    s3rver = new S3rver({ address: "127.0.0.1", port: 0, silent: true, directory: s3dir });
    const { port } = await s3rver.run();
    s3endpoint = `http://127.0.0.1:${port}`;
    const admin = new S3Client({ region: "us-east-1", endpoint: s3endpoint, credentials: S3_CREDENTIALS, forcePathStyle: true });
    await admin.send(new CreateBucketCommand({ Bucket: S3_BUCKET }));
    admin.destroy();
  }
  return startTestServer({ env: { S3_ENDPOINT: s3endpoint, S3_BUCKET, S3_ACCESS_KEY_ID: S3_CREDENTIALS.accessKeyId, S3_SECRET_ACCESS_KEY: S3_CREDENTIALS.secretAccessKey, ...env } });
}

const s3ObjectExists: ObjectExists = async (_server, url) => {
  // Path-style presigned URL: /<bucket>/<key>.
  const key = new URL(url).pathname.split("/").slice(2).map(decodeURIComponent).join("/");
  const client = new S3Client({ region: "us-east-1", endpoint: s3endpoint, credentials: S3_CREDENTIALS, forcePathStyle: true });
  try {
    await client.send(new HeadObjectCommand({ Bucket: S3_BUCKET, Key: key }));
    return true;
  } catch (err) {
    if ((err as { name?: string }).name === "NotFound") return false;
    throw err;
  } finally {
    client.destroy();
  }
};

artifactRoundTrips("S3 (s3rver)", () => bootOnS3(), false, s3ObjectExists);
afterAll(async () => {
  await s3rver?.close();
  if (s3dir) await rm(s3dir, { recursive: true, force: true });
});

describe("artifact permissions", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ env: { MLGRAPH_AUTH: "required" } });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("refuses viewers and unknown uploads", async () => {
    const admin = /MLGRAPH_TOKEN=(\S+)/.exec(server.output())![1];
    const viewer = ok(await server.gql(`mutation { createApiToken(input: {name: "v", role: "viewer"}) { secret } }`, {}, admin)).createApiToken.secret;
    const exp = ok(await server.gql(`mutation { createExperiment(input: {name: "perm"}) { id } }`, {}, admin)).createExperiment;
    const run = ok(await server.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e}) { id } }`, { e: exp.id }, admin)).createRun;
    const denied = await server.gql(CREATE_UPLOAD, { input: { runId: run.id, path: "x", size: 1, sha256: "a".repeat(64) } }, viewer);
    expect(denied.errors?.[0].extensions?.code).toBe("FORBIDDEN");
    const unknown = await server.gql(COMPLETE, { id: "00000000-0000-4000-8000-000000000000" }, admin);
    expect(unknown.errors?.[0].extensions).toMatchObject({ code: "NOT_FOUND", field: "uploadId" });
  });

  /** Holds the upload's row from a connection of its own (needs TEST_DATABASE_URL). */
  const withDatabase = (() => {
    if (process.env.TEST_DATABASE_URL) return it;
    if (process.env.MLGRAPH_REQUIRE_ALL_SERVICES) throw new Error("artifacts: TEST_DATABASE_URL is required in CI");
    return it.skip;
  })();

  withDatabase("records nothing for a run deleted while its upload's completion waited, and completes it once the run is restored", async () => {
    const admin = /MLGRAPH_TOKEN=(\S+)/.exec(server.output())![1];
    const exp = ok(await server.gql(`mutation { createExperiment(input: {name: "deleted-meanwhile"}) { id } }`, {}, admin)).createExperiment;
    const runId = ok(await server.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e}) { id } }`, { e: exp.id }, admin)).createRun.id;
    const bytes = randomBytes(1000);
    const created = ok(await server.gql(CREATE_UPLOAD, { input: { runId, path: "model.bin", size: bytes.length, sha256: sha256(bytes) } }, admin)).createArtifactUpload;
    expect((await put(created.url, bytes, Object.fromEntries(created.headers.map((h: any) => [h.name, h.value])))).status).toBeLessThan(300);

    // The completion checks the run, verifies the bytes, then waits for the upload's row (held
    // here) while the run is deleted.
    const holder = new pg.Client({ connectionString: server.databaseUrl });
    const watcher = new pg.Client({ connectionString: server.databaseUrl });
    await holder.connect();
    await watcher.connect();
    let refused: GqlResponse;
    try {
      const pid = (await holder.query("SELECT pg_backend_pid() AS pid")).rows[0].pid as number;
      await holder.query("BEGIN");
      await holder.query("SELECT 1 FROM artifact_uploads WHERE id = $1 FOR UPDATE", [created.id]);
      const completing = server.gql(COMPLETE, { id: created.id }, admin);
      await waitFor("the completion to wait for the upload's row", async () => {
        const r = await watcher.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, [pid]);
        return r.rows[0].n >= 1;
      });
      ok(await server.gql(`mutation($r: ID!) { deleteRun(id: $r) { id } }`, { r: runId }, admin));
      await holder.query("ROLLBACK");
      refused = await completing;
    } finally {
      await holder.query("ROLLBACK").catch(() => undefined);
      await holder.end();
      await watcher.end();
    }
    // Previously the artifact was recorded on the deleted run.
    expect(refused.errors?.[0].extensions).toMatchObject({ code: "NOT_FOUND", field: "uploadId" });
    ok(await server.gql(`mutation($r: ID!) { restoreRun(id: $r) { id } }`, { r: runId }, admin));
    expect(ok(await server.gql(LIST, { id: runId }, admin)).run.artifacts).toEqual([]);
    expect(ok(await server.gql(COMPLETE, { id: created.id }, admin)).completeArtifactUpload).toMatchObject({ path: "model.bin", sha256: sha256(bytes) });
  });
});

/**
 * Uploads never completed are discarded once their URLs expired: record and bytes; completed
 * artifacts stay. `objectExists` looks into the store behind the server's back, since completing
 * an upload to see whether it is gone would record it.
 */
function abandonedUploadsAreDiscarded(
  label: string,
  boot: (env: Record<string, string>) => Promise<TestServer>,
  objectExists: ObjectExists,
) {
  describe(`abandoned uploads on the ${label} store`, () => {
    let server: TestServer;
    beforeAll(async () => {
      // Upload URLs valid for 5 s, discarded as soon as they expired, swept every 200 ms.
      server = await boot({ MLGRAPH_UPLOAD_EXPIRES_SECONDS: "5", MLGRAPH_UPLOAD_ABANDON_AFTER_SECONDS: "0", MLGRAPH_UPLOAD_SWEEP_INTERVAL_MS: "200" });
    });
    afterAll(async () => {
      await server?.stop();
    });

    it("discards an upload never completed once its URLs expired (record and bytes), and leaves completed artifacts alone", async () => {
      const runId = await newRun(server, `abandoned-uploads-${label}`);
      const kept = randomBytes(1000);
      ok((await upload(server, runId, "model/kept.bin", kept)).completed);
      // Bytes sent, never completed.
      const abandonedBytes = randomBytes(2000);
      const abandoned = ok(await server.gql(CREATE_UPLOAD, { input: { runId, path: "model/abandoned.bin", size: abandonedBytes.length, sha256: sha256(abandonedBytes) } })).createArtifactUpload;
      expect((await put(abandoned.url, abandonedBytes, {})).status).toBeLessThan(300);
      expect(await objectExists(server, abandoned.url)).toBe(true);
      // Created only.
      const neverSent = ok(await server.gql(CREATE_UPLOAD, { input: { runId, path: "never.bin", size: 10, sha256: "0".repeat(64) } })).createArtifactUpload;

      const deadline = Date.now() + 20_000;
      while (await objectExists(server, abandoned.url)) {
        if (Date.now() > deadline) throw new Error("the abandoned upload's bytes were never discarded");
        await new Promise((r) => setTimeout(r, 200));
      }
      // The upload created later expires later. Completing it without bytes fails and changes
      // nothing, so it may be asked until it is gone.
      const discarded = async (id: string) => (await server.gql(COMPLETE, { id })).errors?.[0].extensions?.code === "NOT_FOUND";
      while (!(await discarded(neverSent.id))) {
        if (Date.now() > deadline) throw new Error("the upload never sent was never discarded");
        await new Promise((r) => setTimeout(r, 200));
      }
      for (const id of [abandoned.id, neverSent.id]) {
        const res = await server.gql(COMPLETE, { id });
        expect(res.errors?.[0].extensions).toMatchObject({ code: "NOT_FOUND", field: "uploadId" });
        expect(res.errors?.[0].message).toMatch(/not found \(completed or discarded\)/);
      }
      const listed = ok(await server.gql(LIST, { id: runId, path: "model" })).run.artifacts;
      expect(listed.map((a: { path: string; sha256: string }) => [a.path, a.sha256])).toEqual([["model/kept.bin", sha256(kept)]]);
      expect(Buffer.from(await (await fetch(listed[0].downloadUrl)).arrayBuffer()).equals(kept)).toBe(true);
    });
  });
}

abandonedUploadsAreDiscarded("local", (env) => startTestServer({ env }), localObjectExists);
abandonedUploadsAreDiscarded("S3 (s3rver)", bootOnS3, s3ObjectExists);

describe("Run.artifacts of many runs", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ env: { MLGRAPH_DEBUG_QUERY_COUNTS: "1" } });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("lists the artifacts of every run in a constant number of statements (no N+1)", async () => {
    const QUERY = `query($e: [ID!]) { runs(experimentIds: $e, first: 50) { edges { node { id
      artifacts { path isDir size } model: artifacts(path: "model") { path size } } } } }`;
    const statementsFor = async (runs: number, name: string) => {
      const exp = ok(await server.gql(`mutation($n: String!) { createExperiment(input: {name: $n}) { id } }`, { n: name })).createExperiment;
      const expected = new Map<string, number>();
      for (let r = 0; r < runs; r++) {
        const runId = ok(await server.gql(`mutation($e: ID!) { createRun(input: {experimentId: $e}) { id } }`, { e: exp.id })).createRun.id;
        ok((await upload(server, runId, "model/weights.bin", randomBytes(10 + r))).completed);
        ok((await upload(server, runId, "README.md", Buffer.from("x"))).completed);
        expected.set(runId, 10 + r);
      }
      const res = await server.gql(QUERY, { e: [exp.id] });
      const edges = ok(res).runs.edges;
      expect(edges).toHaveLength(runs);
      for (const { node } of edges) {
        expect(node.artifacts).toEqual([
          { path: "README.md", isDir: false, size: 1 },
          { path: "model", isDir: true, size: expected.get(node.id) },
        ]);
        expect(node.model).toEqual([{ path: "model/weights.bin", size: expected.get(node.id) }]);
      }
      return (res as any).extensions.queryCounts.postgres as number;
    };
    expect(await statementsFor(8, "artifacts-many")).toBe(await statementsFor(2, "artifacts-few"));
  });
});
