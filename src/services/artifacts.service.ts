import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { DataSource, EntityManager } from "typeorm";
import { ArtifactRecord, ArtifactUploadRecord } from "../entities/artifact.entity.js";
// From the modules themselves, not the folder's index: that one also loads the S3 store (the AWS SDK).
import { artifactDirPrefix, runArtifactsPrefix, uploadObjectKey, validateArtifactDirPath, validateArtifactPath } from "../stores/artifact-store/artifact-key.js";
import {
  completeAndVerifyUpload,
  validateUploadRequest,
  type ArtifactStore,
  type UploadDescriptor,
  type UploadedPart,
} from "../stores/artifact-store/artifact-store.js";
import type { RequestContext } from "./context.js";
import { DomainError } from "./errors.js";
import { validateId } from "./validation.js";
import { argsKey } from "./grouped-loader.js";

/** A file or folder in a run's artifacts, as listed by Run.artifacts. */
export interface ArtifactView {
  runId: string;
  path: string;
  name: string;
  isDir: boolean;
  /** File size, or for a folder the total of the files below it. */
  size: number;
  sha256: string | null;
  contentType: string | null;
  createdAt: Date | null;
  key: string;
}

export interface CreatedArtifactUpload {
  id: string;
  descriptor: UploadDescriptor;
}

const MAX_DOWNLOAD_SECONDS = 7 * 24 * 3600;

/** Whether an upload's key is its own object (see {@link uploadObjectKey}), not a path's shared key. */
function ownsObject(upload: { id: string; runId: string; path: string; key: string }): boolean {
  try {
    return uploadObjectKey(upload.runId, upload.id, upload.path) === upload.key;
  } catch {
    return false;
  }
}

/**
 * Run artifacts: uploads go straight to the store with presigned URLs; an artifact becomes
 * visible only after completeArtifactUpload verified its size and SHA-256 and recorded it.
 * Listings come from the recorded artifacts, so half-uploaded or rejected bytes never show.
 * Each upload writes its own object ({@link uploadObjectKey}); a verified upload re-points the
 * path's record at it, so a re-upload in progress or a failed one never changes or removes the
 * bytes a path (and the model versions registered from it) currently serves.
 */
export class ArtifactsService {
  constructor(
    private readonly db: DataSource,
    private readonly storeOrNull: ArtifactStore | undefined,
  ) {}

  /** The store, or undefined when none is configured (background work skips it then). */
  get storeIfConfigured(): ArtifactStore | undefined {
    return this.storeOrNull;
  }

  get store(): ArtifactStore {
    if (!this.storeOrNull) throw new DomainError("UNAVAILABLE", "no artifact store is configured on this server");
    return this.storeOrNull;
  }

  async createUpload(
    ctx: RequestContext,
    input: { runId: string; path: string; size: number; sha256: string; contentType?: string | null },
  ): Promise<CreatedArtifactUpload> {
    const run = await ctx.services.runs.requireWritable(ctx, input.runId, "input.runId");
    const id = randomUUID();
    const key = uploadObjectKey(run.id, id, input.path, "input.path");
    // Checked again, authoritatively, when the upload completes; here so nobody uploads in vain.
    await this.refuseRegisteredPath(this.db.manager, run.id, input.path, "input.path");
    const request = validateUploadRequest(
      { key, size: input.size, sha256: input.sha256, ...(input.contentType != null ? { contentType: input.contentType } : {}) },
      { fieldPrefix: "input." },
    );
    const descriptor = await this.store.createUpload(request);
    const record = await this.db.getRepository(ArtifactUploadRecord).save(
      this.db.getRepository(ArtifactUploadRecord).create({
        id,
        runId: run.id,
        path: input.path,
        key,
        size: request.size,
        sha256: request.sha256 as string,
        contentType: request.contentType ?? null,
        storeUploadId: descriptor.kind === "multipart" ? descriptor.uploadId : null,
        createdBy: ctx.principal.name,
        expiresAt: descriptor.expiresAt,
      }),
    );
    return { id: record.id, descriptor };
  }

  /**
   * Assembles (multipart) and verifies an upload, then records the artifact. A size or checksum
   * mismatch deletes the upload's own object and the pending upload; an artifact already recorded
   * at that path is untouched. A verified upload replaces the path's record; the object it
   * replaced is deleted unless a model version was registered from it. Completing an upload that
   * a concurrent call completed answers with the artifact that call recorded.
   */
  async completeUpload(ctx: RequestContext, uploadId: string, parts?: UploadedPart[] | null): Promise<ArtifactView> {
    validateId(uploadId, "uploadId");
    const upload = await this.db.getRepository(ArtifactUploadRecord).findOneBy({ id: uploadId });
    if (!upload) throw uploadGone(uploadId);
    await ctx.services.runs.requireWritable(ctx, upload.runId, "uploadId");
    const pending = { key: upload.key, size: upload.size, sha256: upload.sha256, ...(upload.storeUploadId ? { uploadId: upload.storeUploadId } : {}) };
    // Assembled and verified before the transaction: hashing a large file must not hold a pooled
    // connection and a row lock (many big completions at once would exhaust the pool).
    let verified;
    try {
      verified = await completeAndVerifyUpload(this.store, pending, parts ?? undefined);
    } catch (err) {
      // A concurrent completion of this upload recorded it meanwhile (its multipart assembly or
      // its file is gone from under this one): answer with what it recorded.
      const recorded = await this.recordedUpload(this.db.manager, upload);
      if (recorded) return fileView(recorded);
      // A mismatch deleted the object: the upload cannot be completed any more. Other refusals
      // (nothing PUT yet, wrong parts, store away) leave it completable.
      const mismatch = err instanceof DomainError && err.code === "BAD_USER_INPUT" && (err.field === "size" || err.field === "sha256");
      if (mismatch) await this.db.getRepository(ArtifactUploadRecord).delete({ id: upload.id });
      throw namingUploadId(err);
    }
    // A refusal that ends the upload (frozen path) is returned rather than thrown, so its
    // record's deletion commits.
    const outcome = await this.db.transaction(async (em): Promise<CompletionOutcome> => {
      // Claimed first. A concurrent completion of the same upload waits here, then finds the row
      // gone and answers with what that one recorded; without that check it took the committed
      // artifact's bytes for an upload the sweep discarded, and deleted them.
      const claimed: unknown[] = await em.query(`SELECT 1 FROM artifact_uploads WHERE id = $1 FOR UPDATE`, [upload.id]);
      if (claimed.length === 0) {
        const recorded = await this.recordedUpload(em, upload);
        if (recorded) return { kind: "recorded", record: recorded };
        // Discarded by the abandoned-upload sweep (its URLs expired long ago): the bytes this call
        // just assembled (multipart) would be referenced by nothing. Unless a completion recorded
        // them and a model version still holds them after the path was overwritten: a late retry
        // must never delete what a registered version serves.
        const referenced = (await em.query(`SELECT 1 FROM model_versions WHERE artifact_key = $1 UNION ALL SELECT 1 FROM artifacts WHERE key = $1 LIMIT 1`, [upload.key])).length > 0;
        return { kind: "refused", error: uploadGone(uploadId), ...(ownsObject(upload) && !referenced ? { deleteKey: upload.key } : {}) };
      }
      // Completions of one run share this lock; a registration from the run takes it alone, so a
      // file completing into a folder being registered waits and then sees the version.
      await em.query(`SELECT pg_advisory_xact_lock_shared(hashtextextended($1::text, ${RUN_ARTIFACTS_LOCK}))`, [upload.runId]);
      // Completions of one path take turns: while the path has no row yet, FOR UPDATE below locks
      // nothing, and two new uploads would both see no previous key; the later upsert would then
      // leave the earlier one's object referenced by nothing, forever.
      await em.query(`SELECT pg_advisory_xact_lock(hashtextextended($1::text, ${ARTIFACT_PATH_LOCK}))`, [`${upload.runId}/${upload.path}`]);
      const previous: { key: string }[] = await em.query(`SELECT key FROM artifacts WHERE run_id = $1 AND path = $2 FOR UPDATE`, [upload.runId, upload.path]);
      // Checked again under a share lock: the run (or its experiment) may have been deleted while
      // the bytes were verified and this waited for the locks above; a deletion from now on waits
      // for this commit. A refusal leaves the upload completable once the run is restored.
      await ctx.services.runs.requireWritable(ctx, upload.runId, "uploadId", em, { lock: "share" });
      // After the row lock: a version being registered from this path holds the row (FOR SHARE)
      // until it commits, and is seen here once it has.
      try {
        await this.refuseRegisteredPath(em, upload.runId, upload.path, "uploadId");
      } catch (err) {
        // It can never complete. Its own object is deleted once this commits: from then on no
        // completion can record it.
        await em.delete(ArtifactUploadRecord, { id: upload.id });
        return { kind: "refused", error: err, ...(ownsObject(upload) ? { deleteKey: upload.key } : {}) };
      }
      await em.query(
        `INSERT INTO artifacts (run_id, path, key, size, sha256, content_type) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (run_id, path) DO UPDATE SET key = EXCLUDED.key, size = EXCLUDED.size, sha256 = EXCLUDED.sha256,
           content_type = EXCLUDED.content_type, created_at = now()`,
        [upload.runId, upload.path, upload.key, verified.size, verified.sha256, upload.contentType],
      );
      await em.delete(ArtifactUploadRecord, { id: upload.id });
      const replaced = previous[0]?.key;
      const keep = replaced !== undefined && (await em.query(`SELECT 1 FROM model_versions WHERE artifact_key = $1 LIMIT 1`, [replaced])).length > 0;
      return {
        kind: "recorded",
        record: await em.getRepository(ArtifactRecord).findOneByOrFail({ runId: upload.runId, path: upload.path }),
        ...(replaced !== undefined && replaced !== upload.key && !keep ? { replacedKey: replaced } : {}),
      };
    });
    if (outcome.kind === "refused") {
      const key = outcome.deleteKey;
      if (key) await this.store.delete(key).catch((err: unknown) => ctx.log.warn({ err: (err as Error).message, key }, "artifacts: deleting a refused upload's bytes failed; they stay unreferenced"));
      throw outcome.error;
    }
    // After the commit: until then the old record still pointed at these bytes. A failure here
    // leaves an unreferenced object behind, never a record without its bytes; the upload stands.
    const replacedKey = outcome.replacedKey;
    if (replacedKey) {
      await this.store.delete(replacedKey).catch((err: unknown) => ctx.log.warn({ err: (err as Error).message, key: replacedKey }, "artifacts: deleting a replaced object failed; it stays unreferenced"));
    }
    return fileView(outcome.record);
  }

  /**
   * Discards uploads never completed whose URLs expired more than `abandonAfterSeconds` ago: the
   * records first (one committed DELETE per batch, skipping any a completion holds), then each
   * upload's multipart state and its own object. A completion racing this either committed first
   * (the record is gone from this DELETE's view) or finds its record gone and fails, so no
   * artifact ever points at deleted bytes. An upload recorded before uploads had their own
   * objects wrote to its path's final key, which a verified artifact may use: only its multipart
   * state is discarded. Returns how many uploads were discarded.
   */
  async discardAbandonedUploads(log: Logger, abandonAfterSeconds: number, batchSize = 500): Promise<number> {
    const store = this.storeOrNull;
    if (!store) return 0;
    let discarded = 0;
    for (;;) {
      const rows: { id: string; runId: string; path: string; key: string; size: string; sha256: string; storeUploadId: string | null }[] = await this.db.query(
        `WITH gone AS (
           DELETE FROM artifact_uploads WHERE id IN (
             SELECT id FROM artifact_uploads WHERE expires_at < now() - make_interval(secs => $1)
             ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
           RETURNING id, run_id, path, key, size, sha256, store_upload_id)
         SELECT id, run_id AS "runId", path, key, size, sha256, store_upload_id AS "storeUploadId" FROM gone`,
        [abandonAfterSeconds, batchSize],
      );
      for (const row of rows) {
        const pending = { key: row.key, size: Number(row.size), sha256: row.sha256, ...(row.storeUploadId ? { uploadId: row.storeUploadId } : {}) };
        const ownObject = ownsObject(row);
        try {
          if (pending.uploadId !== undefined) await store.abortUpload(pending);
          if (ownObject) await store.delete(row.key);
        } catch (err) {
          log.warn({ err: (err as Error).message, key: row.key }, "artifacts: discarding an abandoned upload's bytes failed; they stay unreferenced");
        }
      }
      discarded += rows.length;
      if (rows.length < batchSize) return discarded;
    }
  }

  /** The artifact a completion of `upload` recorded, if one did (same path, bytes and key). */
  private recordedUpload(em: EntityManager, upload: ArtifactUploadRecord): Promise<ArtifactRecord | null> {
    return em.getRepository(ArtifactRecord).findOneBy({ runId: upload.runId, path: upload.path, key: upload.key, size: upload.size, sha256: upload.sha256 });
  }

  /**
   * Files and folders directly inside `path` (the run's artifact root when omitted). Read through
   * the request's loader: listing the artifacts of many runs is one statement, not one per run.
   */
  async list(ctx: RequestContext, runId: string, dirPath?: string | null): Promise<ArtifactView[]> {
    const dir = validateArtifactDirPath(dirPath ?? "", "path");
    const prefix = dir ? `${dir}/` : "";
    const rows = await ctx.loaders.runArtifacts.load(argsKey({ prefix }, runId));
    const folders = new Map<string, ArtifactView>();
    const files: ArtifactView[] = [];
    for (const row of rows) {
      const rest = row.path.slice(prefix.length);
      const slash = rest.indexOf("/");
      if (slash < 0) {
        files.push(fileView(row));
        continue;
      }
      const name = rest.slice(0, slash);
      const folder = folders.get(name) ?? {
        runId,
        path: prefix + name,
        name,
        isDir: true,
        size: 0,
        sha256: null,
        contentType: null,
        createdAt: null,
        key: artifactDirPrefix(runId, prefix + name),
      };
      folder.size += row.size;
      folders.set(name, folder);
    }
    return [...folders.values(), ...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  /**
   * The recorded artifacts of each run below one folder prefix, ordered by path (the runArtifacts
   * loader: one statement for every run a request lists).
   */
  async recordsUnder(runIds: readonly string[], prefix: string): Promise<Map<string, ArtifactRecord[]>> {
    const rows = await this.db
      .getRepository(ArtifactRecord)
      .createQueryBuilder("a")
      .where("a.run_id = ANY(:runIds) AND starts_with(a.path, :prefix)", { runIds: [...runIds], prefix })
      .orderBy("a.path")
      .getMany();
    const found = new Map<string, ArtifactRecord[]>();
    for (const row of rows) {
      const list = found.get(row.runId);
      if (list) list.push(row);
      else found.set(row.runId, [row]);
    }
    return found;
  }

  async downloadUrl(_ctx: RequestContext, artifact: ArtifactView, expiresInSeconds: number): Promise<string | null> {
    if (artifact.isDir) return null;
    if (!Number.isInteger(expiresInSeconds) || expiresInSeconds < 1 || expiresInSeconds > MAX_DOWNLOAD_SECONDS) {
      throw new DomainError("BAD_USER_INPUT", `expiresInSeconds: must be an integer from 1 to ${MAX_DOWNLOAD_SECONDS}`, "expiresInSeconds");
    }
    return this.store.presignDownload(artifact.key, expiresInSeconds);
  }

  /**
   * A model version's files never change: a path a version was registered from (the file, or
   * any file under the folder) takes no new upload. CONFLICT naming `field`.
   */
  private async refuseRegisteredPath(em: EntityManager, runId: string, path: string, field: string): Promise<void> {
    const rows: { name: string; version: number }[] = await em.query(
      `SELECT m.name, v.version FROM model_versions v JOIN registered_models m ON m.id = v.model_id
        WHERE v.run_id = $1 AND ($2 = rtrim(v.artifact_path, '/') OR starts_with($2, rtrim(v.artifact_path, '/') || '/'))
        ORDER BY v.created_at LIMIT 1`,
      [runId, path],
    );
    if (rows[0]) {
      throw new DomainError(
        "CONFLICT",
        `${field}: ${JSON.stringify(path)} belongs to version ${rows[0].version} of model ${JSON.stringify(rows[0].name)}, whose files cannot change; upload under another path and register a new version`,
        field,
      );
    }
  }

  /**
   * The store key of a registered path, read under a share lock on its rows so no upload replaces
   * them until the registering transaction commits (uploads then see the version and refuse).
   */
  async lockRegisteredKey(em: EntityManager, runId: string, path: string, field: string): Promise<string> {
    const clean = validateArtifactPath(path.endsWith("/") ? path.slice(0, -1) : path, field);
    // Alone: no upload of the run completes meanwhile (one adding a file to the folder included).
    await em.query(`SELECT pg_advisory_xact_lock(hashtextextended($1::text, ${RUN_ARTIFACTS_LOCK}))`, [runId]);
    const rows: { path: string; key: string }[] = await em.query(
      `SELECT path, key FROM artifacts WHERE run_id = $1 AND (path = $2 OR starts_with(path, $2 || '/')) ORDER BY path FOR SHARE`,
      [runId, clean],
    );
    if (rows.length === 0) throw new DomainError("NOT_FOUND", `${field}: run ${runId} has no artifact ${JSON.stringify(clean)}; upload it with createArtifactUpload first`, field);
    return rows[0].path === clean ? rows[0].key : `${runArtifactsPrefix(runId)}${clean}/`;
  }

  /**
   * Verifies that `path` names a recorded artifact file, or a folder holding at least one, of the
   * run, and that its bytes are in the store (HEAD). Returns the store key (folder keys end in
   * `/`). Errors name `field`.
   */
  async requireExisting(runId: string, path: string, field: string, em: EntityManager = this.db.manager): Promise<string> {
    const clean = validateArtifactPath(path.endsWith("/") ? path.slice(0, -1) : path, field);
    const rows: { path: string; key: string }[] = await em.query(
      `SELECT path, key FROM artifacts WHERE run_id = $1 AND (path = $2 OR starts_with(path, $2 || '/')) ORDER BY path LIMIT 1`,
      [runId, clean],
    );
    const missing = () =>
      new DomainError("NOT_FOUND", `${field}: run ${runId} has no artifact ${JSON.stringify(clean)}; upload it with createArtifactUpload first`, field);
    if (rows.length === 0) throw missing();
    if (!(await this.store.head(rows[0].key))) throw missing();
    return rows[0].path === clean ? rows[0].key : `${runArtifactsPrefix(runId)}${clean}/`;
  }
}

/** Seed of the per-run advisory lock between upload completions and registrations (any constant). */
const RUN_ARTIFACTS_LOCK = 7_241_000_300;
/** Seed of the per-path advisory lock between completions of one (run, path) (any other constant). */
const ARTIFACT_PATH_LOCK = 7_241_000_301;

/** How a completion's transaction ended; a refusal is thrown once the transaction committed. */
type CompletionOutcome =
  | { kind: "recorded"; record: ArtifactRecord; replacedKey?: string }
  | { kind: "refused"; error: unknown; deleteKey?: string };

function uploadGone(uploadId: string): DomainError {
  return new DomainError("NOT_FOUND", `uploadId: upload ${JSON.stringify(uploadId)} not found (completed or discarded)`, "uploadId");
}

/** Fields the store and the verification name for the upload's bytes; the mutation's argument for them is `uploadId`. */
const UPLOAD_FIELDS = new Set(["size", "sha256", "upload"]);

/**
 * completeArtifactUpload has the arguments `uploadId` and `parts`: an error about the uploaded
 * bytes (`size`, `sha256`, `upload`: nothing PUT, upload expired) names `uploadId`; `parts` stays.
 */
function namingUploadId(err: unknown): unknown {
  if (!(err instanceof DomainError) || err.field === undefined || !UPLOAD_FIELDS.has(err.field)) return err;
  const reason = err.message.startsWith(`${err.field}: `) ? err.message.slice(err.field.length + 2) : err.message;
  return new DomainError(err.code, `uploadId: ${reason}`, "uploadId", err.details);
}

function fileView(row: ArtifactRecord): ArtifactView {
  const slash = row.path.lastIndexOf("/");
  return {
    runId: row.runId,
    path: row.path,
    name: row.path.slice(slash + 1),
    isDir: false,
    size: row.size,
    sha256: row.sha256,
    contentType: row.contentType,
    createdAt: row.createdAt,
    key: row.key,
  };
}
