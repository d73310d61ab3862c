import type { JsonValue, ParamValue, TaskSpec } from "./pipeline-spec.js";
import { renderString, renderTemplate } from "./params.js";

/** What an executor runs for one task of one pipeline run. */
export interface TaskInvocation {
  argv: string[];
  env: Record<string, string>;
  params: Record<string, JsonValue>;
}

/** Environment-variable-safe form of a param name: `lr` → `MLGRAPH_PARAM_LR`. */
export function paramEnvName(name: string): string {
  return `MLGRAPH_PARAM_${name.toUpperCase().replace(/[^A-Z0-9_]/g, "_")}`;
}

const PYTHON_INTERPRETER = /^(.*\/)?python(\d+(\.\d+)?)?$/;

/**
 * Resolves a task's operator, command, env and params against a run's coerced parameters.
 * python: argv run with python3 (not prepended when argv[0] already names a python interpreter);
 * shell: `sh -c <string>`; command: argv as is.
 */
export function resolveTaskInvocation(task: TaskSpec, params: Readonly<Record<string, ParamValue>>): TaskInvocation {
  const argv = typeof task.command === "string" ? [renderString(task.command, params)] : task.command.map((part) => renderString(part, params));
  let finalArgv: string[];
  switch (task.operator) {
    case "shell":
      finalArgv = ["sh", "-c", argv.join(" ")];
      break;
    case "python":
      finalArgv = PYTHON_INTERPRETER.test(argv[0] ?? "") ? argv : ["python3", ...argv];
      break;
    case "command":
      finalArgv = argv;
      break;
  }
  return {
    argv: finalArgv,
    env: Object.fromEntries(Object.entries(task.env).map(([k, v]) => [k, renderString(v, params)])),
    params: Object.fromEntries(Object.entries(task.params).map(([k, v]) => [k, renderTemplate(v, params)])),
  };
}

/**
 * Linux refuses to start a process when one argument or environment string exceeds 128 KiB
 * (MAX_ARG_STRLEN) or all of them together exceed ARG_MAX (2 MiB by default, shared with the
 * executor's own environment). A run whose params render past these limits would be accepted and
 * then fail every attempt with E2BIG, so submission refuses it. The limits leave room for the
 * variables the executor adds (token, ids, checkpoint).
 */
export const MAX_INVOCATION_STRING_BYTES = 96 * 1024;
export const MAX_INVOCATION_TOTAL_BYTES = 1024 * 1024;

/**
 * What is wrong with starting `invocation` as a process, or undefined. The executor puts each
 * task param in the environment twice (MLGRAPH_PARAM_<NAME> and inside MLGRAPH_PARAMS).
 */
export function invocationSizeProblem(invocation: TaskInvocation): string | undefined {
  const strings: [string, string][] = [
    ...invocation.argv.map((a, i): [string, string] => [`command[${i}]`, a]),
    ...Object.entries(invocation.env).map(([k, v]): [string, string] => [`env.${k}`, v]),
    ...Object.entries(invocation.params).map(([k, v]): [string, string] => [`params.${k}`, typeof v === "string" ? v : JSON.stringify(v)]),
    ["MLGRAPH_PARAMS", JSON.stringify(invocation.params)],
  ];
  let total = 0;
  for (const [where, text] of strings) {
    const bytes = Buffer.byteLength(text, "utf8");
    if (bytes > MAX_INVOCATION_STRING_BYTES) return `${where} renders to ${bytes} bytes; a process argument or environment value may hold at most ${MAX_INVOCATION_STRING_BYTES}`;
    total += bytes;
  }
  if (total > MAX_INVOCATION_TOTAL_BYTES) return `command, env and params render to ${total} bytes in all; at most ${MAX_INVOCATION_TOTAL_BYTES} fit a process start`;
  return undefined;
}
