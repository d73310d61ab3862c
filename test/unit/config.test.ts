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
