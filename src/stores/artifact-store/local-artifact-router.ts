import { Router, type Request, type Response } from "express";
import { pipeline } from "node:stream/promises";
import { DomainError, type DomainErrorCode } from "../../services/errors.js";
import { validateArtifactKey } from "./artifact-key.js";
import { verifyArtifactSignature } from "./artifact-url-signature.js";
import type { LocalArtifactStore } from "./local-artifact-store.js";

/** Options of {@link createLocalArtifactRouter}. */
export interface LocalArtifactRouterOptions {
  /** Clock for expiry checks (ms since epoch); tests substitute it. */
  now?: () => number;
  /** Receives unexpected errors (the client only gets a generic 500); wire it to the server's logger. */
  onError?: (err: unknown, req: Request) => void;
}

const STATUS_BY_CODE: Record<DomainErrorCode, number> = {
  BAD_USER_INPUT: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  RATE_LIMITED: 429,
  UNAVAILABLE: 503,
};

/**
 * Express 5 router serving the local store's signed URLs; mount it at the path of the store's
 * `publicBaseUrl` (e.g. `app.use("/artifacts", createLocalArtifactRouter(store))`), before any
 * body parser, because PUT bodies are streamed straight to disk.
 *
 * - `PUT /<key>?expires&size&signature` stores a whole file; with `uploadId&partNumber` one part
 *   of a multipart upload (response header `ETag`). The body must be exactly `size` bytes.
 * - `GET`/`HEAD /<key>?expires&signature` downloads, honouring a single `Range: bytes=…`
 *   (206 + `Content-Range`; 416 when unsatisfiable; several ranges get the whole file).
 * - A missing, tampered or expired signature answers 403. The signing secret is the store's.
 */
export function createLocalArtifactRouter(store: LocalArtifactStore, options: LocalArtifactRouterOptions = {}): Router {
  const now = options.now ?? Date.now;
  const router = Router();
  router.use(async (req: Request, res: Response) => {
    try {
      // Split by hand: WHATWG URL parsing would resolve "%2e%2e" segments before we can refuse them.
      const queryAt = req.url.indexOf("?");
      const key = decodeKey(queryAt < 0 ? req.url : req.url.slice(0, queryAt));
      const query = new URLSearchParams(queryAt < 0 ? "" : req.url.slice(queryAt + 1));
      const method = req.method === "PUT" ? "PUT" : req.method === "GET" || req.method === "HEAD" ? "GET" : null;
      if (method === null) {
        res.setHeader("Allow", "GET, HEAD, PUT");
        return sendError(req, res, 405, "METHOD_NOT_ALLOWED", `${req.method} is not supported on artifacts`);
      }
      const check = verifyArtifactSignature(method, key, query, store.secret, now());
      if (!check.ok) {
        const why = check.reason === "expired" ? "the URL has expired" : check.reason === "missing" ? "the URL is not signed" : "the URL signature is invalid";
        return sendError(req, res, 403, "FORBIDDEN", `${why}; request a new artifact URL`);
      }
      if (method === "PUT") await handlePut(store, req, res, key, check.grant);
      else await handleGet(store, req, res, key);
    } catch (err) {
      if (err instanceof DomainError) return sendError(req, res, STATUS_BY_CODE[err.code], err.code, err.message);
      if (isClientGone(req, err)) return;
      options.onError?.(err, req);
      // Generic answer: express's default handler would include the stack outside production.
      return sendError(req, res, 500, "INTERNAL_SERVER_ERROR", "internal error while serving the artifact");
    }
  });
  return router;
}

async function handlePut(
  store: LocalArtifactStore,
  req: Request,
  res: Response,
  key: string,
  grant: { size?: number; uploadId?: string; partNumber?: number; sha256?: string },
): Promise<void> {
  if (grant.size === undefined) return sendError(req, res, 403, "FORBIDDEN", "upload URLs must be signed with a size");
  if ((req as { body?: unknown }).body !== undefined) {
    // A body parser mounted before this router already consumed the stream.
    throw new Error("artifact router must be mounted before any body parser");
  }
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) !== grant.size) {
    return sendError(req, res, 400, "BAD_USER_INPUT", `body: Content-Length ${declared} differs from the ${grant.size} bytes this URL was signed for`);
  }
  if (grant.uploadId !== undefined || grant.partNumber !== undefined) {
    if (grant.uploadId === undefined || grant.partNumber === undefined) {
      return sendError(req, res, 400, "BAD_USER_INPUT", "uploadId and partNumber go together");
    }
    const { etag } = await store.writePart(key, grant.uploadId, grant.partNumber, req, grant.size);
    res.status(200).setHeader("ETag", `"${etag}"`).end();
    return;
  }
  const info = await store.writeObject(key, req, grant.size, grant.sha256);
  res.status(200).setHeader("ETag", `"${info.etag}"`).end();
}

async function handleGet(store: LocalArtifactStore, req: Request, res: Response, key: string): Promise<void> {
  const { handle, stats } = await store.openFile(key);
  let handedOff = false;
  try {
    const size = stats.size;
    const range = parseRange(req.headers.range, size);
    const info = { etag: `"${size.toString(16)}-${Math.floor(stats.mtimeMs).toString(16)}"` };
    res.setHeader("Accept-Ranges", "bytes");
    res.setHeader("ETag", info.etag);
    res.setHeader("Last-Modified", stats.mtime.toUTCString());
    res.setHeader("Cache-Control", "private, no-cache");
    // User content served from the API's origin must never be rendered or sniffed as HTML.
    res.setHeader("Content-Type", "application/octet-stream");
    res.setHeader("X-Content-Type-Options", "nosniff");
    res.setHeader("Content-Disposition", `attachment; filename*=UTF-8''${encodeURIComponent(key.slice(key.lastIndexOf("/") + 1))}`);
    if (range === "unsatisfiable") {
      res.status(416).setHeader("Content-Range", `bytes */${size}`);
      res.removeHeader("Content-Disposition");
      res.end();
      return;
    }
    const start = range ? range.start : 0;
    const end = range ? range.end : size - 1;
    if (range) res.status(206).setHeader("Content-Range", `bytes ${start}-${end}/${size}`);
    else res.status(200);
    res.setHeader("Content-Length", String(end - start + 1));
    if (req.method === "HEAD" || end < start) {
      res.end();
      return;
    }
    const stream = handle.createReadStream({ start, end, autoClose: true });
    handedOff = true;
    await pipeline(stream, res);
  } finally {
    if (!handedOff) await handle.close();
  }
}

/**
 * Parses a `Range` header against a file of `size` bytes: `null` means "send everything"
 * (no header, another unit, or several ranges, which RFC 9110 lets a server ignore).
 */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | "unsatisfiable" | null {
  if (header === undefined) return null;
  const trimmed = header.trim();
  if (!/^bytes\s*=/i.test(trimmed)) return null;
  const spec = trimmed.slice(trimmed.indexOf("=") + 1).trim();
  if (spec.includes(",")) return null;
  const m = /^(\d*)-(\d*)$/.exec(spec);
  if (!m || (m[1] === "" && m[2] === "")) return "unsatisfiable";
  if (m[1] === "") {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || end < start) return "unsatisfiable";
  return { start, end };
}

function decodeKey(pathname: string): string {
  const segments = pathname.replace(/^\/+/, "").split("/");
  let key: string;
  try {
    key = segments.map((s) => decodeURIComponent(s)).join("/");
  } catch {
    throw new DomainError("BAD_USER_INPUT", "key: malformed percent-encoding", "key");
  }
  // Signed keys always pass; this guards the filesystem against crafted paths before any check.
  if (segments.some((s) => decodeURIComponent(s).includes("/"))) {
    throw new DomainError("BAD_USER_INPUT", "key: encoded '/' is not allowed inside a segment", "key");
  }
  return validateArtifactKey(key);
}

function sendError(req: Request, res: Response, status: number, code: string, message: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (req.method === "PUT" && !req.readableEnded) {
    // Don't read a large unwanted body just to keep the connection alive.
    res.setHeader("Connection", "close");
  }
  res.status(status).setHeader("Content-Type", "application/json; charset=utf-8");
  res.end(req.method === "HEAD" ? undefined : JSON.stringify({ error: { code, message } }));
}

function isClientGone(req: Request, err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return req.destroyed || code === "ERR_STREAM_PREMATURE_CLOSE" || code === "ECONNRESET" || code === "EPIPE";
}
