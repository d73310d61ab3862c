import crypto from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import type express from "express";
import type { Logger } from "pino";
import type { Config } from "../config.js";
import type { ArtifactStore } from "../stores/artifact-store/artifact-store.js";
import type * as S3StoreModule from "../stores/artifact-store/s3-artifact-store.js";
import { createLocalArtifactRouter } from "../stores/artifact-store/local-artifact-router.js";
import { LocalArtifactStore } from "../stores/artifact-store/local-artifact-store.js";

/** The artifact store chosen at startup, plus what the HTTP server must do for it. */
export interface ArtifactStorage {
  store: ArtifactStore;
  /** Mounts the signed-URL router of the local store at /artifacts (no-op for S3); call before any body parser. */
  mount(app: express.Express): void;
  /** Tells the local store the real port when the config said 0 (tests, `--port 0`). */
  setListeningPort(port: number): void;
  close(): Promise<void>;
}

const SECRET_FILE = "signing-secret";

/**
 * S3 when `config.s3` is set, else a local directory under `<dataDir>/artifacts` whose URLs are
 * signed with `config.auth.signingSecret`, or with a secret generated once into
 * `<dataDir>/signing-secret` (mode 0600) so URLs survive restarts. Replicas sharing a local
 * directory must share the secret (set MLGRAPH_SIGNING_SECRET).
 */
export async function openArtifactStorage(config: Config, log: Logger): Promise<ArtifactStorage> {
  if (config.s3) {
    const s3 = config.s3;
    // Loaded only here: the AWS SDK is about 0.13 s of every start of a server that stores locally.
    // (require, not import(): the module is CommonJS, and jest's VM refuses a dynamic import.)
    const { S3ArtifactStore } = require("../stores/artifact-store/s3-artifact-store.js") as typeof S3StoreModule;
    const store = new S3ArtifactStore({
      bucket: s3.bucket,
      region: s3.region,
      endpoint: s3.endpoint,
      forcePathStyle: s3.forcePathStyle,
      uploadExpiresInSeconds: config.artifactUploads.expiresInSeconds,
      checksumAtPut: s3.checksumAtPut,
      ...(s3.accessKeyId && s3.secretAccessKey ? { credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } } : {}),
    });
    log.info({ bucket: s3.bucket, endpoint: s3.endpoint ?? "aws" }, "artifacts stored in S3");
    return { store, mount: () => undefined, setListeningPort: () => undefined, close: async () => store.close() };
  }
  const secret = config.auth.signingSecret ?? (await persistedSecret(config.dataDir));
  let publicUrl = config.publicUrl.replace(/\/+$/, "");
  const store = new LocalArtifactStore({
    directory: LocalArtifactStore.defaultDirectory(config.dataDir),
    secret,
    publicBaseUrl: () => `${publicUrl}/artifacts`,
    uploadExpiresInSeconds: config.artifactUploads.expiresInSeconds,
  });
  return {
    store,
    mount(app) {
      app.use("/artifacts", createLocalArtifactRouter(store, { onError: (err) => log.error({ err: (err as Error).message }, "artifact request failed") }));
    },
    setListeningPort(port) {
      // The default public URL carries the configured port; with port 0 only the OS knows it.
      publicUrl = publicUrl.replace(/:0$/, `:${port}`);
    },
    close: async () => undefined,
  };
}

async function persistedSecret(dataDir: string): Promise<string> {
  const file = path.join(dataDir, SECRET_FILE);
  try {
    const existing = (await fs.readFile(file, "utf8")).trim();
    if (existing.length >= 32) return existing;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  await fs.mkdir(dataDir, { recursive: true });
  const fresh = crypto.randomBytes(32).toString("base64url");
  try {
    // "wx": when two processes race on a fresh data dir, the first writer wins and both read it back.
    await fs.writeFile(file, fresh, { mode: 0o600, flag: "wx" });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  return (await fs.readFile(file, "utf8")).trim();
}
