import { authRequired, ConfigError, isLoopback, loadConfig } from "../../src/config";

describe("config", () => {
  it("has embedded defaults", () => {
    const c = loadConfig({}, {});
    expect(c).toMatchObject({ host: "127.0.0.1", port: 4000, databaseUrl: undefined, redisUrl: undefined, logLevel: "info" });
    expect(c.dataDir).toMatch(/\.mlgraph$/);
    expect(c.clickhouse.url).toBeUndefined();
    expect(authRequired(c)).toBe(false);
    expect(c.artifactUploads).toEqual({ expiresInSeconds: 3600, abandonAfterSeconds: 86400, sweepIntervalMs: 600_000 });
  });

  it("reads the artifact upload lifetimes and refuses nonsense", () => {
    const c = loadConfig({}, { MLGRAPH_UPLOAD_EXPIRES_SECONDS: "60", MLGRAPH_UPLOAD_ABANDON_AFTER_SECONDS: "0", MLGRAPH_UPLOAD_SWEEP_INTERVAL_MS: "1000" });
    expect(c.artifactUploads).toEqual({ expiresInSeconds: 60, abandonAfterSeconds: 0, sweepIntervalMs: 1000 });
    expect(() => loadConfig({}, { MLGRAPH_UPLOAD_EXPIRES_SECONDS: "0" })).toThrow(/MLGRAPH_UPLOAD_EXPIRES_SECONDS/);
  });

  it("lets flags win over the environment", () => {
    expect(loadConfig({ port: "5000" }, { MLGRAPH_PORT: "6000" }).port).toBe(5000);
    expect(loadConfig({}, { MLGRAPH_PORT: "6000" }).port).toBe(6000);
  });

  it.each([
    [{ MLGRAPH_PORT: "70000" }, /MLGRAPH_PORT\/--port: expected an integer from 0 to 65535/],
    [{ MLGRAPH_PORT: "abc" }, /MLGRAPH_PORT/],
    [{ DATABASE_URL: "mysql://x" }, /DATABASE_URL: expected postgres: or postgresql: URL/],
    [{ DATABASE_URL: "::::" }, /DATABASE_URL: not a valid URL/],
    [{ REDIS_URL: "http://x" }, /REDIS_URL/],
    [{ CLICKHOUSE_URL: "tcp://x" }, /CLICKHOUSE_URL/],
    [{ MLGRAPH_LOG_LEVEL: "loud" }, /MLGRAPH_LOG_LEVEL/],
    [{ S3_ENDPOINT: "http://127.0.0.1:9000" }, /S3_BUCKET: required/],
    [{ OIDC_ISSUER: "https://idp.example" }, /OIDC_AUDIENCE: required/],
    [{ MLGRAPH_HOST: "0.0.0.0", MLGRAPH_AUTH: "open" }, /refused on the non-loopback/],
  ])("refuses %j with a clear message", (env, message) => {
    expect(() => loadConfig({}, env as NodeJS.ProcessEnv)).toThrow(ConfigError);
    expect(() => loadConfig({}, env as NodeJS.ProcessEnv)).toThrow(message);
  });

  it.each([
    ["null", "null", /OIDC_ROLE_MAP: expected a JSON object .* got null/],
    ["an array", '["admin"]', /OIDC_ROLE_MAP: expected a JSON object .* got an array/],
    ["a string", '"admin"', /OIDC_ROLE_MAP: expected a JSON object .* got string/],
    ["a number", "3", /OIDC_ROLE_MAP: expected a JSON object .* got number/],
    ["an unknown role", '{"ml-admins":"root"}', /OIDC_ROLE_MAP: "ml-admins" maps to "root", which is not one of viewer, editor, admin/],
    ["a role in the wrong case", '{"ml-admins":"Admin"}', /OIDC_ROLE_MAP: "ml-admins" maps to "Admin"/],
    ["a machine role", '{"ci":"executor"}', /OIDC_ROLE_MAP: "ci" maps to "executor"/],
    ["a value that is not a string", '{"ml-admins":["admin"]}', /OIDC_ROLE_MAP: "ml-admins" maps to \["admin"\]/],
    ["not JSON", "{ml-admins: admin}", /OIDC_ROLE_MAP: not valid JSON/],
  ])("refuses an OIDC_ROLE_MAP that is %s", (_label, value, message) => {
    const env = { OIDC_ISSUER: "https://idp.example", OIDC_AUDIENCE: "mlgraph", OIDC_ROLE_MAP: value };
    expect(() => loadConfig({}, env)).toThrow(ConfigError);
    expect(() => loadConfig({}, env)).toThrow(message);
  });

  it("reads OIDC_FETCH_RETRY_SECONDS (10 by default) and refuses what is not a positive integer", () => {
    const env = { OIDC_ISSUER: "https://idp.example", OIDC_AUDIENCE: "mlgraph" };
    expect(loadConfig({}, env).auth.oidc?.fetchRetrySeconds).toBe(10);
    expect(loadConfig({}, { ...env, OIDC_FETCH_RETRY_SECONDS: "3" }).auth.oidc?.fetchRetrySeconds).toBe(3);
    for (const v of ["0", "-1", "1.5", "soon"]) expect(() => loadConfig({}, { ...env, OIDC_FETCH_RETRY_SECONDS: v })).toThrow(/OIDC_FETCH_RETRY_SECONDS/);
  });

  it("takes an OIDC_ROLE_MAP of claim values to viewer, editor and admin", () => {
    const env = { OIDC_ISSUER: "https://idp.example", OIDC_AUDIENCE: "mlgraph", OIDC_ROLE_MAP: '{"ml-admins":"admin","ml-eng":"editor","all":"viewer"}' };
    expect(loadConfig({}, env).auth.oidc?.roleMap).toEqual({ "ml-admins": "admin", "ml-eng": "editor", all: "viewer" });
    expect(loadConfig({}, { ...env, OIDC_ROLE_MAP: "{}" }).auth.oidc?.roleMap).toEqual({});
  });

  it("refuses a MLGRAPH_SIGNING_SECRET shorter than 32 bytes, without echoing it", () => {
    expect(() => loadConfig({}, { MLGRAPH_SIGNING_SECRET: "hunter2" })).toThrow(/^MLGRAPH_SIGNING_SECRET: must be at least 32 bytes, got 7/);
    expect(() => loadConfig({}, { MLGRAPH_SIGNING_SECRET: "x".repeat(31) })).toThrow(/got 31/);
    expect(() => loadConfig({}, { MLGRAPH_SIGNING_SECRET: "hunter2" })).toThrow(/^(?!.*hunter2)/);
    const secret = "a".repeat(32);
    expect(loadConfig({}, { MLGRAPH_SIGNING_SECRET: secret }).auth.signingSecret).toBe(secret);
    expect(loadConfig({}, {}).auth.signingSecret).toBeUndefined();
  });

  it("reads S3_FORCE_PATH_STYLE as a boolean and refuses anything else", () => {
    const s3 = { S3_BUCKET: "b" };
    expect(loadConfig({}, s3).s3?.forcePathStyle).toBe(true);
    expect(loadConfig({}, { ...s3, S3_FORCE_PATH_STYLE: "false" }).s3?.forcePathStyle).toBe(false);
    expect(loadConfig({}, { ...s3, S3_FORCE_PATH_STYLE: "0" }).s3?.forcePathStyle).toBe(false);
    expect(loadConfig({}, { ...s3, S3_FORCE_PATH_STYLE: "no" }).s3?.forcePathStyle).toBe(false);
    expect(loadConfig({}, { ...s3, S3_FORCE_PATH_STYLE: "TRUE" }).s3?.forcePathStyle).toBe(true);
    // Previously every value but "false" meant true, "off" and "False " included.
    for (const v of ["off", "False ", "flase"]) expect(() => loadConfig({}, { ...s3, S3_FORCE_PATH_STYLE: v })).toThrow(/S3_FORCE_PATH_STYLE: expected true or false/);
  });

  it.each(["0x10", " 1e3", "1e3", "1.0", " 12", "12 ", "0b1", "+5", "-5", "Infinity"])("refuses the integer %j", (value) => {
    expect(() => loadConfig({}, { MLGRAPH_MAX_DEPTH: value })).toThrow(/MLGRAPH_MAX_DEPTH: expected an integer from 0 to 1000/);
  });

  it("reads plain decimal integers", () => {
    expect(loadConfig({}, { MLGRAPH_MAX_DEPTH: "16" }).limits.maxDepth).toBe(16);
    expect(loadConfig({}, { MLGRAPH_MAX_DEPTH: "007" }).limits.maxDepth).toBe(7);
    expect(loadConfig({ port: 5001 }, {}).port).toBe(5001);
  });

  it("never echoes a password from a bad URL", () => {
    expect(() => loadConfig({}, { DATABASE_URL: "postgres://u:hunter2@x:notaport/db" })).toThrow(/^(?!.*hunter2)/);
  });

  it("requires auth off loopback", () => {
    expect(isLoopback("127.0.0.1")).toBe(true);
    expect(isLoopback("::1")).toBe(true);
    expect(isLoopback("0.0.0.0")).toBe(false);
    expect(authRequired(loadConfig({ host: "0.0.0.0" }, {}))).toBe(true);
    expect(authRequired(loadConfig({}, { MLGRAPH_AUTH: "required" }))).toBe(true);
  });
});
