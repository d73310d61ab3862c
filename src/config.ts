import path from "node:path";
import net from "node:net";
import { USER_ROLES } from "./services/principal.js";

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
  /** `checksumAtPut`: sign the declared SHA-256 into single-PUT URLs (S3_CHECKSUM_AT_PUT; off for stores that reject the header). */
  s3?: { endpoint?: string; bucket: string; region: string; accessKeyId?: string; secretAccessKey?: string; forcePathStyle: boolean; checksumAtPut: boolean };
  /** Base URL clients use to reach this server (signed artifact URLs point here). */
  publicUrl: string;
  auth: {
    /** "auto": required on non-loopback addresses, open on loopback. */
    mode: "auto" | "required" | "open";
    /** Secret for signing local artifact URLs and webhooks' internal state; generated into the data dir when absent. */
    signingSecret?: string;
    /**
     * `roleMap`: claim value → role, validated at start (OIDC_ROLE_MAP). `fetchRetrySeconds`: how
     * long a failed discovery or key-set fetch is remembered before the issuer is asked again (OIDC_FETCH_RETRY_SECONDS).
     */
    oidc?: { issuer: string; audience: string; jwksUrl?: string; roleClaim: string; roleMap: Record<string, (typeof USER_ROLES)[number]>; fetchRetrySeconds: number };
  };
  logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
  /** NODE_OPTIONS as the process got it: where the server's Node flags may be given (see server/node-flags.ts). */
  nodeOptions: string;
  /** Hosts webhooks may target even though they resolve to loopback/private ranges. */
  webhookAllowlist: string[];
  /** Webhook delivery: first retry after backoffMs, doubling per attempt, at most maxAttempts attempts. */
  webhookDelivery: { backoffMs: number; maxAttempts: number; timeoutMs: number };
  /**
   * Artifact uploads: how long upload URLs stay valid, and how long after that an upload never
   * completed is discarded (its record, parts and bytes) by a sweep run every sweepIntervalMs.
   */
  artifactUploads: { expiresInSeconds: number; abandonAfterSeconds: number; sweepIntervalMs: number };
  /** Model registry approvals: who may approve stage transitions, and whether requesters may approve their own. */
  registry: { approverRole: "admin" | "editor"; allowSelfApproval: boolean };
  /** Per-request guards against expensive or abusive operations (0 disables one). */
  limits: {
    maxDepth: number;
    maxComplexity: number;
    maxAliases: number;
    maxRootFields: number;
    maxBodyBytes: number;
    /** Token bucket per authenticated principal: refill rate and burst size; shared via Redis when configured. */
    ratePerSecond: number;
    rateBurst: number;
  };
  /** Only in tests: run the scheduler loop faster. */
  schedulerIntervalMs: number;
  /** MLGRAPH_DEBUG_QUERY_COUNTS=1: GraphQL HTTP answers carry `extensions.queryCounts` (ClickHouse statements per request). */
  debugQueryCounts: boolean;
  /** Task leases: a claimed task is lost (EXECUTOR_LOST) when its executor misses heartbeats this long (MLGRAPH_LEASE_SECONDS). */
  leaseSeconds: number;
  /** How often an open subscription re-checks its token while no event arrives (MLGRAPH_CREDENTIAL_RECHECK_SECONDS). */
  credentialRecheckSeconds: number;
  /** An executor unseen this long is marked OFFLINE (MLGRAPH_EXECUTOR_OFFLINE_SECONDS). */
  executorOfflineSeconds: number;
  /** An OFFLINE executor unseen this long is deleted; 0 keeps them (MLGRAPH_EXECUTOR_RETENTION_SECONDS). */
  executorRetentionSeconds: number;
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
  // Plain decimal digits only: Number() would also take "0x10", "1e3", " 12 " and "0b1", so a
  // typo could start the server with a value nobody meant.
  const digits = min < 0 ? /^-?\d+$/ : /^\d+$/;
  const n = typeof value === "number" ? value : digits.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(`${name}: expected an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return n;
}

function parseChoice<T extends string>(name: string, value: string | undefined, choices: readonly T[], fallback: T): T {
  if (value === undefined || value === "") return fallback;
  if (!(choices as readonly string[]).includes(value)) throw new ConfigError(`${name}: expected one of ${choices.join(", ")}, got ${JSON.stringify(value)}`);
  return value as T;
}

function parseBoolean(name: string, value: string | undefined, fallback: boolean): boolean {
  if (value === undefined || value === "") return fallback;
  if (["true", "1", "yes"].includes(value.toLowerCase())) return true;
  if (["false", "0", "no"].includes(value.toLowerCase())) return false;
  throw new ConfigError(`${name}: expected true or false, got ${JSON.stringify(value)}`);
}

/**
 * OIDC_ROLE_MAP: a JSON object from claim values to user roles. Anything else is refused rather
 * than half-used: a value that is not a role would silently map nobody, and `null` or an array
 * would fail on the first token instead of at start.
 */
function parseRoleMap(value: string | undefined): Record<string, (typeof USER_ROLES)[number]> {
  if (value === undefined || value === "") return {};
  const expected = `expected a JSON object from claim values to ${USER_ROLES.join(", ")}, like {"ml-admins":"admin"}`;
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    throw new ConfigError(`OIDC_ROLE_MAP: not valid JSON; ${expected}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new ConfigError(`OIDC_ROLE_MAP: ${expected}, got ${parsed === null ? "null" : Array.isArray(parsed) ? "an array" : typeof parsed}`);
  }
  const map: Record<string, (typeof USER_ROLES)[number]> = {};
  for (const [claim, role] of Object.entries(parsed)) {
    if (typeof role !== "string" || !(USER_ROLES as readonly string[]).includes(role)) {
      throw new ConfigError(`OIDC_ROLE_MAP: ${JSON.stringify(claim)} maps to ${JSON.stringify(role)}, which is not one of ${USER_ROLES.join(", ")}`);
    }
    map[claim] = role as (typeof USER_ROLES)[number];
  }
  return map;
}

/** At least 32 bytes: it is the HMAC key of artifact URLs that work without any other credential. */
const MIN_SIGNING_SECRET_BYTES = 32;

function parseSigningSecret(value: string | undefined): string | undefined {
  if (value === undefined || value === "") return undefined;
  const bytes = Buffer.byteLength(value, "utf8");
  if (bytes < MIN_SIGNING_SECRET_BYTES) {
    // Its length only, never the secret itself.
    throw new ConfigError(`MLGRAPH_SIGNING_SECRET: must be at least ${MIN_SIGNING_SECRET_BYTES} bytes, got ${bytes} (e.g. \`openssl rand -hex 32\`)`);
  }
  return value;
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
      forcePathStyle: parseBoolean("S3_FORCE_PATH_STYLE", env.S3_FORCE_PATH_STYLE, true),
      checksumAtPut: parseBoolean("S3_CHECKSUM_AT_PUT", env.S3_CHECKSUM_AT_PUT, true),
    };
  }
  let oidc: Config["auth"]["oidc"];
  if (env.OIDC_ISSUER) {
    parseUrl("OIDC_ISSUER", env.OIDC_ISSUER, ["http:", "https:"]);
    if (!env.OIDC_AUDIENCE) throw new ConfigError("OIDC_AUDIENCE: required when OIDC_ISSUER is set");
    const roleMap = parseRoleMap(env.OIDC_ROLE_MAP);
    oidc = {
      issuer: env.OIDC_ISSUER,
      audience: env.OIDC_AUDIENCE,
      jwksUrl: parseUrl("OIDC_JWKS_URL", env.OIDC_JWKS_URL, ["http:", "https:"]),
      roleClaim: env.OIDC_ROLE_CLAIM ?? "roles",
      roleMap,
      fetchRetrySeconds: parseInteger("OIDC_FETCH_RETRY_SECONDS", env.OIDC_FETCH_RETRY_SECONDS, 10, 1, 3600),
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
    auth: { mode: authMode, signingSecret: parseSigningSecret(env.MLGRAPH_SIGNING_SECRET), oidc },
    logLevel,
    nodeOptions: env.NODE_OPTIONS ?? "",
    webhookAllowlist: (env.MLGRAPH_WEBHOOK_ALLOWLIST ?? "").split(",").map((s) => s.trim()).filter(Boolean),
    webhookDelivery: {
      backoffMs: parseInteger("MLGRAPH_WEBHOOK_BACKOFF_MS", env.MLGRAPH_WEBHOOK_BACKOFF_MS, 5000, 1, 3_600_000),
      maxAttempts: parseInteger("MLGRAPH_WEBHOOK_MAX_ATTEMPTS", env.MLGRAPH_WEBHOOK_MAX_ATTEMPTS, 8, 1, 100),
      timeoutMs: parseInteger("MLGRAPH_WEBHOOK_TIMEOUT_MS", env.MLGRAPH_WEBHOOK_TIMEOUT_MS, 10_000, 100, 600_000),
    },
    artifactUploads: {
      expiresInSeconds: parseInteger("MLGRAPH_UPLOAD_EXPIRES_SECONDS", env.MLGRAPH_UPLOAD_EXPIRES_SECONDS, 3600, 1, 7 * 86400),
      abandonAfterSeconds: parseInteger("MLGRAPH_UPLOAD_ABANDON_AFTER_SECONDS", env.MLGRAPH_UPLOAD_ABANDON_AFTER_SECONDS, 86400, 0, 365 * 86400),
      sweepIntervalMs: parseInteger("MLGRAPH_UPLOAD_SWEEP_INTERVAL_MS", env.MLGRAPH_UPLOAD_SWEEP_INTERVAL_MS, 600_000, 100, 86_400_000),
    },
    registry: {
      approverRole: parseChoice("MLGRAPH_APPROVER_ROLE", env.MLGRAPH_APPROVER_ROLE, ["admin", "editor"] as const, "admin"),
      allowSelfApproval: parseBoolean("MLGRAPH_ALLOW_SELF_APPROVAL", env.MLGRAPH_ALLOW_SELF_APPROVAL, false),
    },
    limits: {
      maxDepth: parseInteger("MLGRAPH_MAX_DEPTH", env.MLGRAPH_MAX_DEPTH, 15, 0, 1000),
      maxComplexity: parseInteger("MLGRAPH_MAX_COMPLEXITY", env.MLGRAPH_MAX_COMPLEXITY, 250_000, 0, 1e9),
      maxAliases: parseInteger("MLGRAPH_MAX_ALIASES", env.MLGRAPH_MAX_ALIASES, 50, 0, 100_000),
      maxRootFields: parseInteger("MLGRAPH_MAX_ROOT_FIELDS", env.MLGRAPH_MAX_ROOT_FIELDS, 30, 0, 100_000),
      maxBodyBytes: parseInteger("MLGRAPH_MAX_BODY_BYTES", env.MLGRAPH_MAX_BODY_BYTES, 16 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
      ratePerSecond: parseInteger("MLGRAPH_RATE_LIMIT_PER_SECOND", env.MLGRAPH_RATE_LIMIT_PER_SECOND, 200, 0, 1e6),
      rateBurst: parseInteger("MLGRAPH_RATE_LIMIT_BURST", env.MLGRAPH_RATE_LIMIT_BURST, 1000, 1, 1e7),
    },
    schedulerIntervalMs: parseInteger("MLGRAPH_SCHEDULER_INTERVAL_MS", env.MLGRAPH_SCHEDULER_INTERVAL_MS, 1000, 10, 60000),
    debugQueryCounts: parseBoolean("MLGRAPH_DEBUG_QUERY_COUNTS", env.MLGRAPH_DEBUG_QUERY_COUNTS, false),
    leaseSeconds: parseInteger("MLGRAPH_LEASE_SECONDS", env.MLGRAPH_LEASE_SECONDS, 60, 1, 3600),
    credentialRecheckSeconds: parseInteger("MLGRAPH_CREDENTIAL_RECHECK_SECONDS", env.MLGRAPH_CREDENTIAL_RECHECK_SECONDS, 30, 1, 3600),
    executorOfflineSeconds: parseInteger("MLGRAPH_EXECUTOR_OFFLINE_SECONDS", env.MLGRAPH_EXECUTOR_OFFLINE_SECONDS, 120, 1, 86400),
    executorRetentionSeconds: parseInteger("MLGRAPH_EXECUTOR_RETENTION_SECONDS", env.MLGRAPH_EXECUTOR_RETENTION_SECONDS, 7 * 86400, 0, 10 * 365 * 86400),
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

/** What `mlgraph executor` takes from the environment when its flags do not say. */
export function executorEnvironment(env: NodeJS.ProcessEnv = process.env): {
  server?: string;
  token?: string;
  pipelineDir?: string;
  logLevel: string;
  /** What task processes inherit from the agent (PATH, HOME, CUDA libraries, …) before their own variables. */
  taskBaseEnv: Record<string, string>;
} {
  const taskBaseEnv = Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => typeof e[1] === "string"));
  return { ...clientEnvironment(env), pipelineDir: env.MLGRAPH_PIPELINE_DIR || undefined, logLevel: env.MLGRAPH_LOG_LEVEL ?? "info", taskBaseEnv };
}

/** What the client commands (`mlgraph runs …`, `models …`, `token …`) take from the environment when their flags do not say. */
export function clientEnvironment(env: NodeJS.ProcessEnv = process.env): { server?: string; token?: string } {
  return { server: env.MLGRAPH_URL || undefined, token: env.MLGRAPH_TOKEN || undefined };
}
