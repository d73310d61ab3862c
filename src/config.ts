import path from "node:path";
import net from "node:net";

/**
 * The one validated configuration object. It is read once, from flags and the environment,
 * in `loadConfig`; nothing else in src/ reads process.env.
 */
export interface Config {
  host: string;
  port: number;
  dataDir: string;
  /** External PostgreSQL; when absent an embedded PostgreSQL runs under `<dataDir>/pg`. */
  databaseUrl?: string;
  /** External ClickHouse over HTTP; when absent the in-process engine (chdb) runs under `<dataDir>/clickhouse`. */
  clickhouse: { url?: string; username?: string; password?: string; database: string; cluster?: string };
  redisUrl?: string;
  /** Prefix of every Redis channel/key, so several deployments (or test servers) can share one Redis. */
  redisPrefix: string;
  s3?: { endpoint?: string; bucket: string; region: string; accessKeyId?: string; secretAccessKey?: string; forcePathStyle: boolean };
  /** Base URL clients use to reach this server (signed artifact URLs point here). */
  publicUrl: string;
  auth: {
    /** "auto": required on non-loopback addresses, open on loopback. */
    mode: "auto" | "required" | "open";
    /** Secret for signing local artifact URLs and webhooks' internal state; generated into the data dir when absent. */
    signingSecret?: string;
    oidc?: { issuer: string; audience: string; jwksUrl?: string; roleClaim: string; roleMap: Record<string, string> };
  };
  logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
  /** Hosts webhooks may target even though they resolve to loopback/private ranges. */
  webhookAllowlist: string[];
  /** Only in tests: run the scheduler loop faster. */
  schedulerIntervalMs: number;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

export interface ConfigFlags {
  host?: string;
  port?: string | number;
  dataDir?: string;
  logLevel?: string;
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

function parseUrl(name: string, value: string | undefined, protocols: string[]): string | undefined {
  if (value === undefined || value === "") return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`${name}: not a valid URL: ${JSON.stringify(redact(value))}`);
  }
  if (!protocols.includes(url.protocol)) {
    throw new ConfigError(`${name}: expected ${protocols.join(" or ")} URL, got ${url.protocol}`);
  }
  return value;
}

function redact(value: string): string {
  return value.replace(/\/\/([^:/@]+):([^@]+)@/, "//$1:***@");
}

function parseInteger(name: string, value: string | number | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined || value === "") return fallback;
  const n = typeof value === "number" ? value : Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(`${name}: expected an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return n;
}

/** Builds and validates the config from CLI flags (which win) and the environment. Throws ConfigError with one clear line. */
export function loadConfig(flags: ConfigFlags = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const host = flags.host ?? env.MLGRAPH_HOST ?? "127.0.0.1";
  if (!host || /\s/.test(host)) throw new ConfigError(`MLGRAPH_HOST/--host: invalid host ${JSON.stringify(host)}`);
  const port = parseInteger("MLGRAPH_PORT/--port", flags.port ?? env.MLGRAPH_PORT, 4000, 0, 65535);
  const dataDir = path.resolve(flags.dataDir ?? env.MLGRAPH_DATA_DIR ?? "./.mlgraph");
  const logLevel = (flags.logLevel ?? env.MLGRAPH_LOG_LEVEL ?? "info") as Config["logLevel"];
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError(`MLGRAPH_LOG_LEVEL/--log-level: expected one of ${LOG_LEVELS.join(", ")}, got ${JSON.stringify(logLevel)}`);
  }
  const authMode = (env.MLGRAPH_AUTH ?? "auto") as Config["auth"]["mode"];
  if (!["auto", "required", "open"].includes(authMode)) {
    throw new ConfigError(`MLGRAPH_AUTH: expected auto, required or open, got ${JSON.stringify(authMode)}`);
  }
  if (authMode === "open" && !isLoopback(host)) {
    throw new ConfigError(`MLGRAPH_AUTH=open is refused on the non-loopback address ${host}: anyone on the network could act as admin`);
  }
  let s3: Config["s3"];
  if (env.S3_BUCKET || env.S3_ENDPOINT) {
    if (!env.S3_BUCKET) throw new ConfigError("S3_BUCKET: required when S3_ENDPOINT is set");
    s3 = {
      endpoint: parseUrl("S3_ENDPOINT", env.S3_ENDPOINT, ["http:", "https:"]),
      bucket: env.S3_BUCKET,
      region: env.S3_REGION ?? "us-east-1",
      accessKeyId: env.S3_ACCESS_KEY_ID ?? env.AWS_ACCESS_KEY_ID,
      secretAccessKey: env.S3_SECRET_ACCESS_KEY ?? env.AWS_SECRET_ACCESS_KEY,
      forcePathStyle: (env.S3_FORCE_PATH_STYLE ?? "true") !== "false",
    };
  }
  let oidc: Config["auth"]["oidc"];
  if (env.OIDC_ISSUER) {
    parseUrl("OIDC_ISSUER", env.OIDC_ISSUER, ["http:", "https:"]);
    if (!env.OIDC_AUDIENCE) throw new ConfigError("OIDC_AUDIENCE: required when OIDC_ISSUER is set");
    let roleMap: Record<string, string> = {};
    if (env.OIDC_ROLE_MAP) {
      try {
        roleMap = JSON.parse(env.OIDC_ROLE_MAP) as Record<string, string>;
      } catch {
        throw new ConfigError(`OIDC_ROLE_MAP: expected JSON like {"ml-admins":"admin"}`);
      }
    }
    oidc = {
      issuer: env.OIDC_ISSUER,
      audience: env.OIDC_AUDIENCE,
      jwksUrl: parseUrl("OIDC_JWKS_URL", env.OIDC_JWKS_URL, ["http:", "https:"]),
      roleClaim: env.OIDC_ROLE_CLAIM ?? "roles",
      roleMap,
    };
  }
  const displayHost = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
  return {
    host,
    port,
    dataDir,
    databaseUrl: parseUrl("DATABASE_URL", env.DATABASE_URL, ["postgres:", "postgresql:"]),
    clickhouse: {
      url: parseUrl("CLICKHOUSE_URL", env.CLICKHOUSE_URL, ["http:", "https:"]),
      username: env.CLICKHOUSE_USER,
      password: env.CLICKHOUSE_PASSWORD,
      database: env.CLICKHOUSE_DATABASE ?? "default",
      cluster: env.CLICKHOUSE_CLUSTER || undefined,
    },
    redisUrl: parseUrl("REDIS_URL", env.REDIS_URL, ["redis:", "rediss:"]),
    redisPrefix: env.MLGRAPH_REDIS_PREFIX ?? "mlgraph:",
    s3,
    publicUrl: parseUrl("MLGRAPH_PUBLIC_URL", env.MLGRAPH_PUBLIC_URL, ["http:", "https:"]) ?? `http://${displayHost.includes(":") ? `[${displayHost}]` : displayHost}:${port}`,
    auth: { mode: authMode, signingSecret: env.MLGRAPH_SIGNING_SECRET || undefined, oidc },
    logLevel,
    webhookAllowlist: (env.MLGRAPH_WEBHOOK_ALLOWLIST ?? "").split(",").map((s) => s.trim()).filter(Boolean),
    schedulerIntervalMs: parseInteger("MLGRAPH_SCHEDULER_INTERVAL_MS", env.MLGRAPH_SCHEDULER_INTERVAL_MS, 1000, 10, 60000),
  };
}

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  if (host === "localhost") return true;
  if (net.isIPv4(host)) return host.startsWith("127.");
  if (net.isIPv6(host)) return host === "::1";
  return false;
}

/** Whether callers must present a token. */
export function authRequired(config: Config): boolean {
  if (config.auth.mode === "required") return true;
  if (config.auth.mode === "open") return false;
  return !isLoopback(config.host);
}
