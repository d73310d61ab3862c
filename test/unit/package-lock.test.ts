import fs from "node:fs";
import path from "node:path";

/**
 * `npm ci` refuses a lock without chdb's optional-platform placeholders (npm/cli#9846): a plain
 * `npm install` drops them. Regenerate with `npm run lock`.
 */
describe("package-lock.json", () => {
  it("keeps chdb's optional placeholders so `npm ci` accepts it", () => {
    const lock = JSON.parse(fs.readFileSync(path.resolve(__dirname, "../../package-lock.json"), "utf8"));
    const chdb = lock.packages["node_modules/chdb"];
    expect(chdb).toBeDefined();
    const optional = Object.keys(chdb.optionalDependencies ?? {});
    expect(optional.length).toBeGreaterThan(0);
    for (const name of optional) {
      const entry = lock.packages[`node_modules/${name}`] ?? lock.packages[`node_modules/chdb/node_modules/${name}`];
      expect({ name, entry }).toEqual({ name, entry: expect.objectContaining({ optional: true }) });
    }
  });
});
