import * as path from "node:path";
import * as fs from "node:fs";
import { createClient, type ClickHouseClient, type ClickHouseSettings } from "@clickhouse/client";
import type * as ChdbConnectionModule from "chdb/connection";
import { DomainError } from "../../services/errors.js";

/** Where the metric store's ClickHouse lives: in-process (chdb) or a server over HTTP. */
export type ClickHouseConnectionOptions =
  | {
      /** mlgraph data directory; the engine keeps its files in `<dataDir>/clickhouse`. */
      dataDir: string;
      url?: undefined;
    }
  | {
      /** e.g. `http://clickhouse:8123`; the same SQL runs as with the embedded engine. */
      url: string;
      username?: string;
      password?: string;
      /** Must already exist on the server; defaults to `default`. */
      database?: string;
      /** Per-request timeout for HTTP; defaults to 60 s. */
      requestTimeoutMs?: number;
      dataDir?: undefined;
    };

/** An open ClickHouse client plus how it is connected. */
export interface ClickHouseHandle {
  readonly client: ClickHouseClient;
  readonly backend: "chdb" | "http";
  close(): Promise<void>;
}

/**
 * Settings every query runs with. 64-bit integers come back as JSON numbers because steps and
 * counts are validated to stay within Number.MAX_SAFE_INTEGER.
 */
const BASE_SETTINGS: ClickHouseSettings = {
  output_format_json_quote_64bit_integers: 0,
};

const CHDB_PLATFORM = "linux-x64";

/**
 * Opens a `@clickhouse/client` either over the in-process chdb engine (`dataDir`) or over HTTP
 * (`url`). Throws DomainError("UNAVAILABLE") with one line pointing at CLICKHOUSE_URL when the
 * embedded engine cannot run here, instead of a module-not-found trace.
 */
export function createClickHouseConnection(options: ClickHouseConnectionOptions): ClickHouseHandle {
  if (options.url !== undefined) {
    const client = createClient({
      url: options.url,
      username: options.username,
      password: options.password,
      database: options.database,
      request_timeout: options.requestTimeoutMs ?? 60_000,
      clickhouse_settings: BASE_SETTINGS,
    });
    return { client, backend: "http", close: () => client.close() };
  }

  const platform = `${process.platform}-${process.arch}`;
  if (platform !== CHDB_PLATFORM) {
    throw new DomainError(
      "UNAVAILABLE",
      `The embedded metric store (chdb) runs only on ${CHDB_PLATFORM}, not ${platform}: set CLICKHOUSE_URL to a ClickHouse server.`,
    );
  }

  const dir = path.resolve(options.dataDir, "clickhouse");
  fs.mkdirSync(dir, { recursive: true });
  let chdb: typeof ChdbConnectionModule;
  let connection: ChdbConnectionModule.ChdbConnection;
  try {
    // Loaded lazily so that merely importing this module never needs the native engine,
    // and a missing/unloadable binary becomes one clear error instead of a stack trace.
    chdb = require("chdb/connection") as typeof ChdbConnectionModule;
    connection = chdb.createChdbConnection({ path: dir });
  } catch (err) {
    const reason = err instanceof Error ? err.message.split("\n")[0] : String(err);
    throw new DomainError(
      "UNAVAILABLE",
      `The embedded metric store (chdb) could not open ${dir} (${reason}): set CLICKHOUSE_URL to a ClickHouse server, or give this process its own data directory.`,
    );
  }
  const client = createClient({
    // chdb ships its own copy of @clickhouse/client-common's Connection type; the shapes match.
    connection: connection as unknown as NonNullable<Parameters<typeof createClient>[0]>["connection"],
    clickhouse_settings: BASE_SETTINGS,
  });
  return { client, backend: "chdb", close: () => client.close() };
}
