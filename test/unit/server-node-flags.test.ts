import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { missingNodeFlags, SERVER_NODE_FLAGS } from "../../src/server/node-flags.js";
import { ROOT } from "../helpers/test-server.js";

describe("server Node flags", () => {
  it("are what `npm start` passes (tests and benches measure the server as users start it)", () => {
    const start = (JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts.start;
    expect(start).toContain(`node ${SERVER_NODE_FLAGS.join(" ")} dist/src/main.js serve`);
  });

  it("are accepted by this Node", () => {
    expect(execFileSync(process.execPath, [...SERVER_NODE_FLAGS, "-e", "process.stdout.write('ok')"]).toString()).toBe("ok");
  });

  it("are found missing unless given on the command line or in NODE_OPTIONS, with any value", () => {
    expect(missingNodeFlags([], "")).toEqual(SERVER_NODE_FLAGS);
    expect(missingNodeFlags(["--inspect"], "--trace-warnings")).toEqual(SERVER_NODE_FLAGS);
    expect(missingNodeFlags(SERVER_NODE_FLAGS, "")).toEqual([]);
    expect(missingNodeFlags([], ` ${SERVER_NODE_FLAGS.join(" ")} --trace-warnings`)).toEqual([]);
    expect(missingNodeFlags(["--max-semi-space-size=32"], "")).toEqual([]);
    // V8's other spellings: underscores, the value as the next word, a quoted NODE_OPTIONS word.
    expect(missingNodeFlags(["--max_semi_space_size=64"], "")).toEqual([]);
    expect(missingNodeFlags([], "--max-semi-space-size 64")).toEqual([]);
    expect(missingNodeFlags([], '"--max-semi-space-size=64"')).toEqual([]);
  });
});
