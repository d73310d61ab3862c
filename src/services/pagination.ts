import { DomainError } from "./errors.js";

/** Relay-style page requests; cursors are opaque (base64 of an offset) and stable under a total order. */
export interface PageArgs {
  first?: number | null;
  after?: string | null;
}

export interface Page<T> {
  items: T[];
  offset: number;
  hasNextPage: boolean;
  hasPreviousPage: boolean;
  totalCount?: number;
  /** Each item's cursor, when the list pages by key (see {@link encodeKeyCursor}) rather than by offset. */
  cursors?: string[];
}

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 1000;

export function encodeCursor(offset: number): string {
  return Buffer.from(`o:${offset}`).toString("base64url");
}

export function decodeCursor(cursor: string, field = "after"): number {
  const text = Buffer.from(cursor, "base64url").toString();
  const match = /^o:(\d{1,9})$/.exec(text);
  if (!match) throw new DomainError("BAD_USER_INPUT", `${field}: not a cursor returned by this API`, field);
  return Number(match[1]) + 1;
}

/**
 * A cursor naming the last item seen by its sort key. Lists that grow at the front (newest first)
 * page by key: an item added between two pages would push an offset's items down by one, and the
 * next page would repeat the last item seen.
 */
export function encodeKeyCursor(key: string): string {
  return Buffer.from(`k:${key}`).toString("base64url");
}

/** The key of a cursor from {@link encodeKeyCursor}; undefined for none, or for an offset cursor. */
export function decodeKeyCursor(cursor: string | null | undefined): string | undefined {
  if (!cursor) return undefined;
  const text = Buffer.from(cursor, "base64url").toString();
  return text.startsWith("k:") ? text.slice(2) : undefined;
}

/** A created_at in a key cursor: UTC, to the microsecond, as {@link cursorTimeSql} writes it (fields in range; see {@link isCursorTime}). */
export const CURSOR_TIME_PATTERN = String.raw`\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{6}`;

/** An id in a key cursor. */
export const CURSOR_UUID_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";

/** A cursor time that PostgreSQL will take back: the pattern, and a real date (no 30 February). */
export function isCursorTime(text: string): boolean {
  if (!new RegExp(`^${CURSOR_TIME_PATTERN}$`).test(text)) return false;
  const date = new Date(`${text.slice(0, 23)}Z`);
  return !Number.isNaN(date.getTime()) && date.toISOString().slice(0, 10) === text.slice(0, 10);
}

/** SQL writing a timestamptz column the way a key cursor holds it (see CURSOR_TIME_PATTERN). */
export function cursorTimeSql(column: string): string {
  return `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')`;
}

/**
 * Where a page of a list that pages by key starts: `after`'s key matched by `keyPattern` (null
 * without a key cursor) and the window. An offset cursor, handed out before the list paged by
 * key, still pages by offset; a key that does not match is refused naming `after`.
 */
export function keysetWindow(args: PageArgs, keyPattern: RegExp): { after: RegExpExecArray | null; window: { offset: number; limit: number } } {
  const key = decodeKeyCursor(args.after);
  const after = key === undefined ? null : keyPattern.exec(key);
  if (key !== undefined && !after) throw new DomainError("BAD_USER_INPUT", "after: not a cursor returned by this API", "after");
  return { after, window: pageWindow(after ? { first: args.first } : args) };
}

/** Turns first/after into LIMIT/OFFSET, validating both. Fetch `limit + 1` rows to know hasNextPage. */
export function pageWindow(args: PageArgs): { offset: number; limit: number } {
  const first = args.first ?? DEFAULT_PAGE_SIZE;
  if (!Number.isInteger(first) || first < 0 || first > MAX_PAGE_SIZE) {
    throw new DomainError("BAD_USER_INPUT", `first: must be an integer from 0 to ${MAX_PAGE_SIZE}`, "first");
  }
  const offset = args.after ? decodeCursor(args.after) : 0;
  return { offset, limit: first };
}

/** Builds a page from `limit + 1` fetched rows. */
export function toPage<T>(rows: T[], window: { offset: number; limit: number }, totalCount?: number): Page<T> {
  return {
    items: rows.slice(0, window.limit),
    offset: window.offset,
    hasNextPage: rows.length > window.limit,
    hasPreviousPage: window.offset > 0,
    totalCount,
  };
}

/** The page of a parent with no rows (what a per-parent loader answers for one it found nothing for). */
export const EMPTY_PAGE: Page<never> = { items: [], offset: 0, hasNextPage: false, hasPreviousPage: false };
