import path from "node:path";
import ts from "typescript";

const ROOT = path.resolve(__dirname, "../../..");

/** examples/ is documentation users copy: it must compile against the current client. */
describe("examples", () => {
  it("examples/train-script.ts type-checks under examples/tsconfig.json, which emits it where the walkthrough runs it", () => {
    // examples/README.md: `npx tsc -p examples && node dist/examples/train-script.js` (the root
    // tsconfig.json does not build examples/, so `npx tsc -p tsconfig.json` left no such file).
    const configPath = path.join(ROOT, "examples/tsconfig.json");
    const config = ts.getParsedCommandLineOfConfigFile(configPath, {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => undefined })!;
    expect(config.errors).toEqual([]);
    const file = path.join(ROOT, "examples/train-script.ts");
    expect(config.fileNames).toContain(file);
    expect(path.relative(ROOT, path.join(config.options.outDir!, path.relative(config.options.rootDir!, file)))).toBe(path.join("dist", "examples", "train-script.ts"));
    const program = ts.createProgram([file], { ...config.options, noEmit: true });
    const diagnostics = ts.getPreEmitDiagnostics(program).filter((d) => !d.file || d.file.fileName.includes("/examples/") || d.file.fileName.includes("/client/"));
    const text = ts.formatDiagnostics(diagnostics, { getCanonicalFileName: (f) => f, getCurrentDirectory: () => ROOT, getNewLine: () => "\n" });
    expect(text).toBe("");
  }, 120_000);
});
