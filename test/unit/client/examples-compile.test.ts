import path from "node:path";
import ts from "typescript";

const ROOT = path.resolve(__dirname, "../../..");

/** examples/ is documentation users copy: it must compile against the current client. */
describe("examples", () => {
  it("examples/train-script.ts type-checks under the project's compiler options", () => {
    const configPath = path.join(ROOT, "tsconfig.json");
    const config = ts.getParsedCommandLineOfConfigFile(configPath, { noEmit: true }, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => undefined })!;
    const file = path.join(ROOT, "examples/train-script.ts");
    const program = ts.createProgram([file], config.options);
    const diagnostics = ts.getPreEmitDiagnostics(program).filter((d) => !d.file || d.file.fileName.includes("/examples/") || d.file.fileName.includes("/client/"));
    const text = ts.formatDiagnostics(diagnostics, { getCanonicalFileName: (f) => f, getCurrentDirectory: () => ROOT, getNewLine: () => "\n" });
    expect(text).toBe("");
  }, 120_000);
});
