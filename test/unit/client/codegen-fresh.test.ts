import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const ROOT = path.resolve(__dirname, "../../..");

/** Regenerates the typed client into a temp dir with the committed config, and compares. */
describe("client/generated", () => {
  it("is what `npm run codegen` makes from schema/schema.graphql and client/operations", () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-codegen-"));
    try {
      const config = fs.readFileSync(path.join(ROOT, "codegen.yml"), "utf8").replace(/^  client\/generated\/:$/m, `  ${out}/:`);
      expect(config).toContain(out);
      const configPath = path.join(out, "codegen.yml");
      fs.writeFileSync(configPath, config);
      execFileSync(path.join(ROOT, "node_modules/.bin/graphql-codegen"), ["--config", configPath, "--silent"], { cwd: ROOT, stdio: "pipe" });
      const committed = path.join(ROOT, "client/generated");
      const names = fs.readdirSync(out).filter((f) => f.endsWith(".ts")).sort();
      expect(fs.readdirSync(committed).filter((f) => f.endsWith(".ts")).sort()).toEqual(names);
      for (const name of names) {
        const fresh = fs.readFileSync(path.join(out, name), "utf8");
        const current = fs.readFileSync(path.join(committed, name), "utf8");
        if (fresh !== current) throw new Error(`client/generated/${name} is stale: run \`npm run codegen\` (after \`npm run schema\` when the API changed)`);
      }
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  }, 120_000);
});
