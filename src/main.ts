#!/usr/bin/env node
// graphql-js runs a costly cross-realm `instanceOf` check on every type test unless NODE_ENV is
// production (about 6 % of CPU under metric ingest); the server is production unless told otherwise.
process.env.NODE_ENV ??= "production";
import "reflect-metadata";
import fs from "node:fs";
import path from "node:path";
import { Command } from "commander";
import { ConfigError, loadConfig } from "./config.js";
import { createLogger } from "./server/logger.js";
import { missingNodeFlags } from "./server/node-flags.js";
import { registerExecutorCommand } from "./executors/executor-command.js";
import { registerClientCommands } from "./cli/index.js";

const program = new Command();
// Positional: the program's own options (--version) count only before a subcommand, so
// `mlgraph pipeline submit train --version 2` reaches submit's --version instead of printing ours.
program.name("mlgraph").description("MLOps platform served as one GraphQL API").version("0.1.0").enablePositionalOptions();

program
  .command("serve")
  .description("serve the GraphQL API (HTTP and WebSocket on one port), on embedded PostgreSQL and ClickHouse unless configured")
  .option("--host <host>", "address to listen on (MLGRAPH_HOST, default 127.0.0.1)")
  .option("--port <port>", "port (MLGRAPH_PORT, default 4000)")
  .option("--data-dir <dir>", "where embedded data lives (MLGRAPH_DATA_DIR, default ./.mlgraph)")
  .option("--log-level <level>", "fatal|error|warn|info|debug|trace|silent (MLGRAPH_LOG_LEVEL, default info)")
  .action(async (opts: { host?: string; port?: string; dataDir?: string; logLevel?: string }) => {
    const config = loadConfig(opts);
    const log = createLogger(config.logLevel);
    const { startServer } = await import("./server/app.js");
    const server = await startServer(config, log);
    const missingFlags = missingNodeFlags(process.execArgv, config.nodeOptions);
    if (missingFlags.length > 0) {
      log.info({ missingFlags }, "Node was started without the server's flags (npm start passes them; or set NODE_OPTIONS): metric ingest is 5-10 % slower");
    }
    // Machine-readable line for scripts and tests that start the server on port 0.
    process.stdout.write(`mlgraph listening on ${server.url}\n`);
    let stopping = false;
    const stop = async (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, "shutting down: draining HTTP and WebSocket, stopping stores");
      const forced = setTimeout(() => {
        log.error("shutdown took longer than 20 s; exiting");
        process.exit(1);
      }, 20_000);
      forced.unref();
      await server.stop();
      log.info("stopped");
      process.exit(0);
    };
    process.on("SIGTERM", () => void stop("SIGTERM"));
    process.on("SIGINT", () => void stop("SIGINT"));
  });

program
  .command("schema")
  .description("print the GraphQL schema (SDL) the server builds")
  .option("--out <file>", "write to this file instead of stdout")
  .option("--roles", "print each root field's required roles as JSON instead")
  .action(async (opts: { out?: string; roles?: boolean }) => {
    const { buildAppSchema, printAppSchema, rootFieldRoles } = await import("./server/schema.js");
    const schema = await buildAppSchema();
    if (opts.roles) {
      process.stdout.write(JSON.stringify(rootFieldRoles(), null, 2) + "\n");
      return;
    }
    const sdl = printAppSchema(schema);
    if (opts.out) {
      fs.mkdirSync(path.dirname(opts.out), { recursive: true });
      fs.writeFileSync(opts.out, sdl);
    } else {
      process.stdout.write(sdl);
    }
  });

registerExecutorCommand(program);
registerClientCommands(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`mlgraph: configuration error: ${err.message}\n`);
    process.exit(2);
  }
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`mlgraph: ${message}\n`);
  process.exit(1);
});
