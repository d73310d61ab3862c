import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { ROOT, SERVER_NODE_FLAGS } from "../helpers/test-server.js";

/** The server's Node flags are given in three places; tests and benches measure the server as users start it. */
describe("server Node flags", () => {
  it("are the same in main.ts's shebang, `npm start` and the servers tests start", () => {
    const shebang = fs.readFileSync(path.join(ROOT, "src/main.ts"), "utf8").split("\n")[0];
    expect(shebang).toBe(`#!/usr/bin/env -S node ${SERVER_NODE_FLAGS.join(" ")}`);
    const start = (JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts.start;
    expect(start).toContain(`node ${SERVER_NODE_FLAGS.join(" ")} dist/src/main.js serve`);
  });

  it("are accepted by this Node", () => {
    expect(execFileSync(process.execPath, [...SERVER_NODE_FLAGS, "-e", "process.stdout.write('ok')"]).toString()).toBe("ok");
  });
});
