/**
 * What every client command shares: connecting (flags, then MLGRAPH_URL / MLGRAPH_TOKEN), output
 * (aligned tables or --json), and exit codes a shell script can branch on:
 *   0 ok · 1 other failure (server unreachable, conflict, server error) · 2 usage or invalid input
 *   · 3 not found · 4 not authenticated or not allowed.
 */
import { Command, CommanderError } from "commander";
import { createClient, MlgraphError, type MlgraphClient } from "../../client/index.js";
import { clientEnvironment } from "../config.js";

export const EXIT = { OK: 0, OTHER: 1, USAGE: 2, NOT_FOUND: 3, AUTH: 4 } as const;

/** A failure with a message for the user and the exit code to leave with. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

export const usage = (message: string) => new CliError(message, EXIT.USAGE);
export const notFound = (message: string) => new CliError(message, EXIT.NOT_FOUND);

export interface ConnectionFlags {
  server?: string;
  token?: string;
  json?: boolean;
}

/** Adds the connection flags (and --json) to a leaf command. */
export function withConnection(cmd: Command, json = true): Command {
  cmd.option("--server <url>", "server URL (MLGRAPH_URL, default http://127.0.0.1:4000/graphql)").option("--token <token>", "API token (MLGRAPH_TOKEN)");
  if (json) cmd.option("--json", "print JSON for scripts instead of a table");
  return cmd;
}

export function connect(flags: ConnectionFlags): MlgraphClient {
  const env = clientEnvironment();
  const url = flags.server ?? env.server ?? "http://127.0.0.1:4000/graphql";
  try {
    return createClient({ url, token: flags.token ?? env.token });
  } catch {
    throw usage(`--server: ${JSON.stringify(url)} is not a URL (e.g. http://127.0.0.1:4000/graphql)`);
  }
}

/** Runs a command body, turning every failure into one stderr line and an exit code. */
export function action<A extends unknown[]>(body: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await body(...args);
    } catch (err) {
      const { message, exitCode } = explain(err);
      process.stderr.write(`mlgraph: ${message}\n`);
      process.exit(exitCode);
    }
  };
}

function explain(err: unknown): { message: string; exitCode: number } {
  if (err instanceof CliError) return { message: err.message, exitCode: err.exitCode };
  if (err instanceof MlgraphError) {
    const where = err.field ? ` (${err.field})` : "";
    switch (err.code) {
      case "NETWORK_ERROR":
        return { message: `${err.message}\n  is the server running? point --server or MLGRAPH_URL at it`, exitCode: EXIT.OTHER };
      case "UNAUTHENTICATED":
        return { message: `${err.message}\n  pass a valid token with --token or MLGRAPH_TOKEN`, exitCode: EXIT.AUTH };
      case "FORBIDDEN":
        // Role refusals get a hint; other refusals (e.g. approving one's own request) say it all.
        return { message: /needs role/.test(err.message) ? `${err.message}\n  ask an admin for a token with a stronger role` : err.message + where, exitCode: EXIT.AUTH };
      case "NOT_FOUND":
        return { message: err.message + where, exitCode: EXIT.NOT_FOUND };
      case "BAD_USER_INPUT":
      case "GRAPHQL_VALIDATION_FAILED":
        return { message: err.message + where, exitCode: EXIT.USAGE };
      default:
        return { message: `${err.message}${where} [${err.code}]`, exitCode: EXIT.OTHER };
    }
  }
  return { message: err instanceof Error ? err.message : String(err), exitCode: EXIT.OTHER };
}

/** Commander's own errors (unknown option, missing argument) leave with the usage code. */
export function usageExitCodes(cmd: Command): void {
  cmd.exitOverride((err: CommanderError) => {
    if (err.exitCode === 0 || err.code === "commander.helpDisplayed" || err.code === "commander.version") process.exit(0);
    process.exit(EXIT.USAGE);
  });
  for (const sub of cmd.commands) usageExitCodes(sub);
}

/** Prints rows as an aligned table with a header; numbers are right-aligned. */
export function printTable(headers: string[], rows: (string | number | null | undefined)[][]): void {
  const cells = rows.map((r) => r.map((c) => (c === null || c === undefined ? "-" : typeof c === "number" ? formatNumber(c) : String(c))));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]?.length ?? 0)));
  const numeric = headers.map((_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === "number" || r[i] === null || r[i] === undefined));
  const line = (r: string[]) => r.map((c, i) => (numeric[i] ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join("  ").trimEnd();
  process.stdout.write(line(headers) + "\n");
  for (const r of cells) process.stdout.write(line(r) + "\n");
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}

export function formatNumber(n: number): string {
  if (Number.isInteger(n)) return String(n);
  const abs = Math.abs(n);
  return abs !== 0 && (abs < 1e-4 || abs >= 1e6) ? n.toExponential(4) : String(Number(n.toPrecision(6)));
}

/** Parses repeated `k=v` flags into an object. */
export function keyValues(flag: string, items: string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items ?? []) {
    const eq = item.indexOf("=");
    if (eq <= 0) throw usage(`${flag}: expected key=value, got ${JSON.stringify(item)}`);
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

/** One page of a connection as a list command reads it. */
export interface Page<T> {
  rows: T[];
  hasNextPage: boolean;
  endCursor?: string | null;
  totalCount?: number | null;
}

/**
 * Reads up to `limit` rows of a connection page by page, following endCursor. A list command must
 * not turn `--limit 300` into one `first: 300`: the server caps a page at 1,000 rows and refuses a
 * query whose complexity is over its limit (QUERY_TOO_COMPLEX; a page of runs weighs ~925, so 270
 * of them pass the default MLGRAPH_MAX_COMPLEXITY of 250,000). `pageSize` is what the command's
 * query fits under the default limit; a server configured lower answers QUERY_TOO_COMPLEX and the
 * page is halved and asked again. `truncated`: the output stopped at `limit` while more exist.
 */
export async function readPages<T>(
  limit: number,
  pageSize: number,
  fetchPage: (first: number, after: string | undefined) => Promise<Page<T>>,
): Promise<{ rows: T[]; truncated: boolean; totalCount?: number }> {
  const rows: T[] = [];
  let after: string | undefined;
  let size = pageSize;
  let totalCount: number | undefined;
  for (;;) {
    const first = Math.min(size, limit - rows.length);
    let page: Page<T>;
    try {
      page = await fetchPage(first, after);
    } catch (err) {
      if (err instanceof MlgraphError && err.code === "QUERY_TOO_COMPLEX" && first > 1) {
        size = Math.ceil(first / 2);
        continue;
      }
      throw err;
    }
    for (const row of page.rows) rows.push(row);
    totalCount = page.totalCount ?? totalCount;
    if (!page.hasNextPage || !page.endCursor || page.rows.length === 0) return { rows, truncated: false, totalCount };
    if (rows.length >= limit) return { rows, truncated: true, totalCount };
    after = page.endCursor;
  }
}

/**
 * Says on stderr that a list stopped at --limit while more rows exist: stdout (a table, or JSON a
 * script parses) stays as it was, and nobody mistakes the first page for everything.
 */
export function noteTruncated(what: string, result: { rows: unknown[]; truncated: boolean; totalCount?: number }): void {
  if (!result.truncated) return;
  const of = result.totalCount !== undefined ? ` of ${result.totalCount}` : "";
  process.stderr.write(`note: showing the first ${result.rows.length}${of} ${what}; more exist (raise --limit)\n`);
}

/** commander collector for repeatable options. */
export const collectRepeated = (value: string, previous: string[] = []) => [...previous, value];

/**
 * A one-line progress bar on stderr for long transfers; silent when stderr is not a terminal
 * unless forced, so scripts' logs stay clean.
 */
export function progressBar(label: string, total: number, force = false): { update(done: number): void; finish(): void } {
  const enabled = force || process.stderr.isTTY === true;
  let last = 0;
  const draw = (done: number) => {
    const fraction = total > 0 ? Math.min(1, done / total) : 1;
    const width = 30;
    const filled = Math.round(fraction * width);
    process.stderr.write(`\r${label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ${formatBytes(done)}/${formatBytes(total)}`);
  };
  return {
    update(done) {
      if (!enabled) return;
      const now = Date.now();
      if (now - last < 100 && done < total) return;
      last = now;
      draw(done);
    },
    finish() {
      if (!enabled) return;
      draw(total);
      process.stderr.write("\n");
    },
  };
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}
