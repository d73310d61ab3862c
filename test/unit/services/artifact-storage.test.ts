import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pino from "pino";
import { loadConfig } from "../../../src/config.js";
import { openArtifactStorage } from "../../../src/services/artifact-storage.js";
import { artifactKey, type LocalArtifactStore } from "../../../src/stores/artifact-store/index.js";

/** Configuration reaches the S3 store: presigning needs no S3 server, so none runs here. */
describe("openArtifactStorage on S3", () => {
  const request = { key: artifactKey("r1", "model.bin"), size: 10, sha256: "ab".repeat(32) };
  const headersWith = async (env: Record<string, string>) => {
    const storage = await openArtifactStorage(loadConfig({}, { S3_BUCKET: "b", S3_ENDPOINT: "http://127.0.0.1:9", S3_ACCESS_KEY_ID: "k", S3_SECRET_ACCESS_KEY: "s", ...env }), pino({ level: "silent" }));
    try {
      return (await storage.store.createUpload(request)).headers;
    } finally {
      await storage.close();
    }
  };

  it("signs the declared SHA-256 by default, and not with S3_CHECKSUM_AT_PUT=false", async () => {
    expect(await headersWith({})).toEqual({ "x-amz-checksum-sha256": Buffer.from("ab".repeat(32), "hex").toString("base64") });
    expect(await headersWith({ S3_CHECKSUM_AT_PUT: "false" })).toEqual({});
  });
});

/** The local store's signing secret, generated into the data dir on first start. */
describe("openArtifactStorage on a local directory", () => {
  const log = pino({ level: "silent" });
  const secretOf = (dir: string) => fs.readFileSync(path.join(dir, "signing-secret"), "utf8").trim();

  it("generates a secret once and reuses it", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-secret-"));
    const first = await openArtifactStorage(loadConfig({ dataDir: dir }, {}), log);
    const secret = secretOf(dir);
    expect(secret.length).toBeGreaterThanOrEqual(32);
    const second = await openArtifactStorage(loadConfig({ dataDir: dir }, {}), log);
    expect((second.store as LocalArtifactStore).secret).toBe(secret);
    expect((first.store as LocalArtifactStore).secret).toBe(secret);
  });

  // A first start killed between creating the file and writing it left it empty: every later
  // start then read it back ("the first writer wins") and failed ("secret must be at least 16
  // bytes"), or signed URLs with a secret shorter than the 32 bytes required of MLGRAPH_SIGNING_SECRET.
  it.each([["empty", ""], ["short", "only-twenty-chars-xx"]])("replaces a secret file left %s instead of using it", async (_what, content) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-secret-"));
    fs.writeFileSync(path.join(dir, "signing-secret"), content, { mode: 0o600 });
    const storage = await openArtifactStorage(loadConfig({ dataDir: dir }, {}), log);
    const secret = secretOf(dir);
    expect(secret.length).toBeGreaterThanOrEqual(32);
    expect((storage.store as LocalArtifactStore).secret).toBe(secret);
    expect(fs.statSync(path.join(dir, "signing-secret")).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(dir)).toEqual(["signing-secret"]);
  });
});
