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
/** As required of MLGRAPH_SIGNING_SECRET. */
const MIN_SECRET_LENGTH = 32;

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
  const secret = config.auth.signingSecret ?? (await persistedSecret(config.dataDir, log));
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

async function persistedSecret(dataDir: string, log: Logger): Promise<string> {
  const file = path.join(dataDir, SECRET_FILE);
  const existing = await readSecret(file);
  if (existing !== undefined && existing.length >= MIN_SECRET_LENGTH) return existing;
  await fs.mkdir(dataDir, { recursive: true });
  // Written whole to a file of its own, then put in place: a start killed mid-write used to leave
  // an empty secret file behind, which every later start read back and refused (or, when short,
  // signed URLs with).
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString("hex")}.tmp`;
  const handle = await fs.open(tmp, "wx", 0o600);
  try {
    await handle.writeFile(crypto.randomBytes(32).toString("base64url"));
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    if (existing === undefined) {
      // link() creates the name only if absent: when two processes race on a fresh data dir, the
      // first one wins and both read its secret back.
      await fs.link(tmp, file).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== "EEXIST") throw err;
      });
    }
    const current = await readSecret(file);
    if (current === undefined || current.length < MIN_SECRET_LENGTH) {
      log.warn({ file }, `artifacts: the signing secret file held fewer than ${MIN_SECRET_LENGTH} characters (a start interrupted while writing it?); replacing it`);
      await fs.rename(tmp, file);
    }
  } finally {
    await fs.rm(tmp, { force: true });
  }
  return (await readSecret(file)) as string;
}

/** The secret in `file`, trimmed; undefined when there is no such file. */
async function readSecret(file: string): Promise<string | undefined> {
  try {
    return (await fs.readFile(file, "utf8")).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}
