/**
 * The client side of the `mlgraph` CLI: commands that talk to a server over the typed client
 * (serve and executor live with the server and the executors). Connection: --server/--token or
 * MLGRAPH_URL/MLGRAPH_TOKEN. Exit codes: see cli-support.ts.
 */
import type { Command } from "commander";
import { registerArtifactCommands } from "./artifacts-commands.js";
import { usageExitCodes } from "./cli-support.js";
import { registerModelCommands } from "./models-commands.js";
import { registerPipelineCommands } from "./pipeline-commands.js";
import { registerExperimentCommands, registerRunCommands } from "./runs-commands.js";
import { registerTokenCommands } from "./token-commands.js";

export function registerClientCommands(program: Command): void {
  const before = new Set(program.commands);
  registerTokenCommands(program);
  registerExperimentCommands(program);
  registerRunCommands(program);
  registerPipelineCommands(program);
  registerModelCommands(program);
  registerArtifactCommands(program);
  for (const cmd of program.commands) if (!before.has(cmd)) usageExitCodes(cmd);
}
