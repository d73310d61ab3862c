import { badInput } from "../../services/errors.js";

/**
 * Artifact keys and user-supplied artifact paths.
 *
 * A key is `runs/<runId>/artifacts/<path>`; the same key names the S3 object and, below the
 * local store's `objects/` directory, the file on disk. Paths come from users, so every path is
 * validated before it becomes part of a key: a path that could climb out of its run's folder
 * (`..`), name an absolute location, or mean different things to S3 and to a filesystem is
 * refused rather than "cleaned up", so what is stored is exactly what the user asked for.
 *
 * Percent signs are ordinary characters here: paths are never URL-decoded, so `%2e%2e/x` names a
 * folder literally called `%2e%2e` (harmless on disk and in S3, and URL-encoded again whenever it
 * is put into a URL).
 */

/** Longest accepted artifact path in UTF-8 bytes; keeps the full key under S3's 1,024-byte limit. */
export const MAX_ARTIFACT_PATH_BYTES = 900;
/** Longest accepted single path segment in UTF-8 bytes (NAME_MAX on common filesystems). */
export const MAX_ARTIFACT_SEGMENT_BYTES = 255;

const RUN_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
// C0 controls, DEL and C1 controls: invisible in listings, and NUL truncates paths in some tools.
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/;
// A lone surrogate cannot be encoded as UTF-8, so it could not round-trip through S3 or a URL.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Validates a user-supplied artifact file path (relative to a run's artifact root) and returns it
 * unchanged. Throws `DomainError("BAD_USER_INPUT", "<field>: …", field)` when the path is empty,
 * absolute, contains a backslash, an empty / `.` / `..` segment, a control character or a lone
 * surrogate, or is longer than {@link MAX_ARTIFACT_PATH_BYTES}.
 */
export function validateArtifactPath(path: unknown, field: string): string {
  if (typeof path !== "string") throw badInput(field, "must be a string");
  if (path.length === 0) throw badInput(field, "must not be empty");
  checkCharacters(path, field);
  if (path.startsWith("/")) throw badInput(field, `must be relative, got absolute path ${JSON.stringify(path)}`);
  checkSegments(path, field);
  return path;
}

/**
 * Validates a user-supplied artifact folder path, as used for listing. Unlike
 * {@link validateArtifactPath} it accepts `""` (the run's artifact root) and one trailing `/`.
 * Returns the folder without its trailing slash (`""` for the root).
 */
export function validateArtifactDirPath(path: unknown, field: string): string {
  if (typeof path !== "string") throw badInput(field, "must be a string");
  const dir = path.endsWith("/") ? path.slice(0, -1) : path;
  if (dir.length === 0) {
    if (path.length > 0) throw badInput(field, `must be relative, got absolute path ${JSON.stringify(path)}`);
    return "";
  }
  return validateArtifactPath(dir, field);
}

/** Validates a run id for use as a key segment; run ids come from the database, so this guards against programming errors. */
export function validateRunId(runId: unknown, field = "runId"): string {
  if (typeof runId !== "string" || !RUN_ID_PATTERN.test(runId)) {
    throw badInput(field, `is not a valid run id: ${JSON.stringify(runId)}`);
  }
  return runId;
}

/** The key prefix (ending in `/`) under which all artifacts of one run live. */
export function runArtifactsPrefix(runId: string): string {
  return `runs/${validateRunId(runId)}/artifacts/`;
}

/**
 * Builds the store key `runs/<runId>/artifacts/<path>` for a user-supplied file path, validating
 * the path (errors name `field`, e.g. `"input.path"`).
 */
export function artifactKey(runId: string, path: string, field = "path"): string {
  return runArtifactsPrefix(runId) + validateArtifactPath(path, field);
}

/**
 * The store key one upload writes to: `runs/<runId>/objects/<uploadId>/<file name>`. Every upload
 * has its own object, so bytes being uploaded (or failing verification) never touch the object a
 * recorded artifact points at; completing an upload re-points the artifact's record instead.
 * The path is validated (errors name `field`); only its last segment is kept, so the key stays
 * far inside S3's 1,024-byte limit whatever the path's length.
 */
export function uploadObjectKey(runId: string, uploadId: string, path: string, field = "path"): string {
  const clean = validateArtifactPath(path, field);
  if (!/^[0-9a-f-]{36}$/.test(uploadId)) throw new Error(`upload id ${JSON.stringify(uploadId)} is not a UUID`);
  return `runs/${validateRunId(runId)}/objects/${uploadId}/${clean.slice(clean.lastIndexOf("/") + 1)}`;
}

/**
 * Builds the key prefix (ending in `/`) of a folder inside a run's artifacts, for
 * `ArtifactStore.list`. `dirPath` `""` or omitted means the run's artifact root.
 */
export function artifactDirPrefix(runId: string, dirPath = "", field = "path"): string {
  const dir = validateArtifactDirPath(dirPath, field);
  return runArtifactsPrefix(runId) + (dir ? `${dir}/` : "");
}

/**
 * The user-facing artifact path of a key (inverse of {@link artifactKey}); throws when the key
 * does not belong to the run, which would mean a store returned a foreign key.
 */
export function artifactPathFromKey(runId: string, key: string): string {
  const prefix = runArtifactsPrefix(runId);
  if (!key.startsWith(prefix)) throw new Error(`key ${JSON.stringify(key)} is not under ${prefix}`);
  return key.slice(prefix.length);
}

/**
 * Checks a complete store key (as received back from a signed URL, or before mapping it to a
 * file on disk) with the same rules as a user path. Returns the key unchanged.
 */
export function validateArtifactKey(key: unknown, field = "key"): string {
  if (typeof key !== "string" || key.length === 0) throw badInput(field, "must be a non-empty string");
  checkCharacters(key, field);
  if (key.startsWith("/")) throw badInput(field, "must be relative");
  checkSegments(key, field, 1024);
  return key;
}

function checkCharacters(path: string, field: string): void {
  if (CONTROL_CHARACTERS.test(path)) throw badInput(field, "must not contain control characters");
  if (LONE_SURROGATE.test(path)) throw badInput(field, "must be valid Unicode (lone surrogate found)");
  // Windows treats "\" as a separator, so "a\..\b" would be a traversal on a Windows disk.
  if (path.includes("\\")) throw badInput(field, "must use '/' as separator, not '\\'");
}

function checkSegments(path: string, field: string, maxBytes = MAX_ARTIFACT_PATH_BYTES): void {
  const bytes = Buffer.byteLength(path, "utf8");
  if (bytes > maxBytes) throw badInput(field, `is ${bytes} bytes long; the limit is ${maxBytes}`);
  for (const segment of path.split("/")) {
    if (segment === "") throw badInput(field, "must not contain empty segments ('//' or a trailing '/')");
    if (segment === "." || segment === "..") throw badInput(field, `must not contain '${segment}' segments`);
    if (Buffer.byteLength(segment, "utf8") > MAX_ARTIFACT_SEGMENT_BYTES) {
      throw badInput(field, `has a segment longer than ${MAX_ARTIFACT_SEGMENT_BYTES} bytes`);
    }
  }
}
