import { pino, type Logger } from "pino";
import type { Config } from "../config.js";

/** Structured JSON logs on stdout (one line an event); secrets are redacted. */
export function createLogger(level: Config["logLevel"]): Logger {
  return pino({
    level,
    base: { service: "mlgraph" },
    redact: { paths: ["req.headers.authorization", "authorization", "token", "secret"], censor: "[redacted]" },
  });
}
