import type { JsonValue, ParamValue, TaskSpec } from "./pipeline-spec.js";
import { renderString, renderTemplate } from "./params.js";

/** What an executor runs for one task of one pipeline run. */
export interface TaskInvocation {
  argv: string[];
  env: Record<string, string>;
  params: Record<string, JsonValue>;
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
