import os from "node:os";
import { loadConfig } from "../../../src/config.js";
import { OpenServerGuard } from "../../../src/server/open-server-guard.js";

describe("OpenServerGuard (what an open loopback server answers)", () => {
  const guard = new OpenServerGuard(loadConfig({}, { MLGRAPH_PUBLIC_URL: "http://ml-box.internal:4000" }));

  it("accepts this machine's names, with or without a port", () => {
    for (const host of ["localhost", "localhost:4000", "127.0.0.1:4000", "127.0.1.1", "[::1]:4000", "0.0.0.0:4000", "[::ffff:127.0.0.1]:4000", "localhost.localdomain", "app.localhost:4000", "ml-box.internal:4000", `${os.hostname()}:4000`]) {
      expect([host, guard.hostAllowed(host)]).toEqual([host, true]);
    }
  });

  it("refuses any other name (a DNS-rebinding page) and a missing Host", () => {
    for (const host of ["evil.example", "evil.example:4000", "127.0.0.1.nip.io", "[::ffff:8.8.8.8]", undefined]) {
      expect([host, guard.hostAllowed(host)]).toEqual([host, false]);
    }
  });

  it("accepts callers without Origin (CLI, executors, clients) and local pages; refuses other pages", () => {
    expect(guard.originAllowed(undefined)).toBe(true);
    expect(guard.originAllowed("http://localhost:8888")).toBe(true);
    expect(guard.originAllowed("http://127.0.0.1:4000")).toBe(true);
    expect(guard.originAllowed("https://evil.example")).toBe(false);
    expect(guard.originAllowed("null")).toBe(false);
  });

  it("is off when auth is required", () => {
    const required = new OpenServerGuard(loadConfig({}, { MLGRAPH_AUTH: "required" }));
    expect(required.enabled).toBe(false);
    expect(required.hostAllowed("evil.example")).toBe(true);
    expect(required.originAllowed("https://evil.example")).toBe(true);
  });
});
