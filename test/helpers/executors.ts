import { spawn, type ChildProcess } from "node:child_process";
import { MAIN, ROOT } from "./test-server";

export interface TestExecutor {
  process: ChildProcess;
  id: string;
  output: () => string;
  stop(): Promise<number | null>;
  kill9(): Promise<void>;
}

/** Spawns `mlgraph executor` (the built CLI) against a test server and waits until it registered. */
export async function startExecutor(serverUrl: string, args: string[], env: Record<string, string> = {}): Promise<TestExecutor> {
  const child = spawn(process.execPath, [MAIN, "executor", "--server", serverUrl, "--wait-seconds", "5", "--grace-seconds", "1", ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/root", MLGRAPH_LOG_LEVEL: "warn", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
  const id = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`executor did not register in 30 s:\n${output}`)), 30_000);
    child.stdout!.on("data", () => {
      const m = /mlgraph executor (\S+) serving/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`executor exited with ${code}:\n${output}`));
    });
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    process: child,
    id,
    output: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    async kill9() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGKILL");
      await exited;
    },
  };
}
