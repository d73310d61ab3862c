import { findCycles, type DagNode } from "./dag.js";
import { defaultMatchesType, templateReferences } from "./params.js";
import { paramEnvName } from "./task-invocation.js";
import type { ParamDecl, SpecProblem } from "./pipeline-spec.js";
import { modelAliasProblem } from "../../services/validation.js";

/**
 * Checks the JSON Schema cannot express: unique task ids, known dependencies, no cycles,
 * `{{param}}` references to declared parameters, defaults of the declared type, a command shape
 * that fits the operator, and an `on_success` task that exists.
 *
 * Runs on the raw document, even one that failed the schema, so a user sees every problem in one
 * round trip; parts of the wrong shape are skipped here (the schema reports them).
 */
export function semanticProblems(doc: unknown): SpecProblem[] {
  const problems: SpecProblem[] = [];
  const pipeline = isRecord(doc) ? doc["pipeline"] : undefined;
  if (!isRecord(pipeline)) return problems;

  const declared = new Set<string>();
  if (isRecord(pipeline["params"])) {
    for (const [name, decl] of Object.entries(pipeline["params"])) {
      declared.add(name);
      if (isRecord(decl) && typeof decl["type"] === "string" && decl["default"] !== undefined) {
        if (!defaultMatchesType(decl as unknown as ParamDecl)) {
          problems.push({
            path: `/pipeline/params/${escapePointer(name)}/default`,
            message: `default ${JSON.stringify(decl["default"])} is not of type ${decl["type"]}`,
          });
        }
      }
    }
  }

  const tasks = Array.isArray(pipeline["tasks"]) ? pipeline["tasks"] : [];
  const firstIndex = new Map<string, number>();
  tasks.forEach((task, i) => {
    if (!isRecord(task) || typeof task["id"] !== "string") return;
    const id = task["id"];
    const seen = firstIndex.get(id);
    if (seen === undefined) firstIndex.set(id, i);
    else problems.push({ path: `/pipeline/tasks/${i}/id`, message: `duplicate task id "${id}" (first used by /pipeline/tasks/${seen})` });
  });
  const knownIds = [...firstIndex.keys()];

  const nodes: DagNode[] = [];
  tasks.forEach((task, i) => {
    if (!isRecord(task)) return;
    const base = `/pipeline/tasks/${i}`;
    const deps = Array.isArray(task["depends_on"]) ? task["depends_on"] : [];
    deps.forEach((dep, j) => {
      if (typeof dep !== "string") return;
      if (!firstIndex.has(dep)) {
        problems.push({ path: `${base}/depends_on/${j}`, message: `unknown task ${JSON.stringify(dep)}${suggest(dep, knownIds)}` });
      }
    });
    if (typeof task["id"] === "string") {
      nodes.push({ id: task["id"], depends_on: deps.filter((d): d is string => typeof d === "string") });
    } else {
      // Keeps node indexes equal to task indexes; an id no dependency can name.
      nodes.push({ id: `\u0000${i}`, depends_on: [] });
    }

    checkCommandShape(task, base, problems);
    checkTemplates(task["command"], `${base}/command`, declared, problems);
    checkTemplates(task["params"], `${base}/params`, declared, problems);
    checkParamEnvNames(task["params"], `${base}/params`, problems);
    checkTemplates(task["env"], `${base}/env`, declared, problems);

    const resources = task["resources"];
    if (isRecord(resources) && resources["gpu_type"] !== undefined && (resources["gpus"] === undefined || resources["gpus"] === 0)) {
      problems.push({ path: `${base}/resources/gpu_type`, message: "gpu_type needs gpus of at least 1" });
    }
  });

  for (const cycle of findCycles(nodes)) {
    problems.push({
      path: `/pipeline/tasks/${cycle.closingTaskIndex}/depends_on/${cycle.closingDependencyIndex}`,
      message: `cycle: ${cycle.ids.join(" -> ")}`,
    });
  }

  const onSuccess = pipeline["on_success"];
  const register = isRecord(onSuccess) ? onSuccess["register_model"] : undefined;
  if (isRecord(register) && typeof register["task"] === "string" && !firstIndex.has(register["task"])) {
    problems.push({
      path: "/pipeline/on_success/register_model/task",
      message: `unknown task ${JSON.stringify(register["task"])}${suggest(register["task"], knownIds)}`,
    });
  }
  if (isRecord(register) && typeof register["alias"] === "string") {
    const problem = onSuccessAliasProblem(register["alias"]);
    if (problem) problems.push({ path: "/pipeline/on_success/register_model/alias", message: problem });
  }
  if (isRecord(register) && typeof register["artifact_path"] === "string") {
    const p = register["artifact_path"];
    if (p.startsWith("/") || p.split("/").includes("..")) {
      problems.push({ path: "/pipeline/on_success/register_model/artifact_path", message: "must be a relative path inside the run's artifacts" });
    }
  }
  return problems;
}

function checkCommandShape(task: Record<string, unknown>, base: string, problems: SpecProblem[]): void {
  const operator = task["operator"];
  const command = task["command"];
  if (operator === "shell" && Array.isArray(command)) {
    problems.push({ path: `${base}/command`, message: 'operator "shell" takes one string run by sh -c; use operator "command" for an argv array' });
  } else if ((operator === "python" || operator === "command") && typeof command === "string") {
    problems.push({
      path: `${base}/command`,
      message: `operator "${operator}" takes an argv array (e.g. ["train.py", "--lr", "{{learning_rate}}"]); use operator "shell" for a string`,
    });
  }
}

function checkTemplates(value: unknown, path: string, declared: Set<string>, problems: SpecProblem[]): void {
  if (typeof value === "string") {
    for (const ref of templateReferences(value)) {
      if (!ref.valid) problems.push({ path, message: `malformed template {{${ref.name}}}: expected {{param_name}}` });
      else if (!declared.has(ref.name)) {
        problems.push({ path, message: `{{${ref.name}}} refers to an undeclared param${suggest(ref.name, [...declared])}` });
      }
    }
  } else if (Array.isArray(value)) {
    value.forEach((item, i) => checkTemplates(item, `${path}/${i}`, declared, problems));
  } else if (isRecord(value)) {
    for (const [key, item] of Object.entries(value)) checkTemplates(item, `${path}/${escapePointer(key)}`, declared, problems);
  }
}

/** `; did you mean "x"?` when a known name is within a small edit distance, else "". */
export function suggest(name: string, known: readonly string[]): string {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    // A prefix match ("gpu" for "gpus") beats an equally close stranger ("cpu").
    const d = editDistance(name, candidate) - (candidate.startsWith(name) || name.startsWith(candidate) ? 0.5 : 0);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  const limit = Math.max(1, Math.floor(name.length / 3));
  return best !== undefined && bestDistance <= limit ? `; did you mean ${JSON.stringify(best)}?` : "";
}

/** Optimal-string-alignment distance: a transposition ("trian" for "train") is one edit. */
function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 3) return Infinity;
  let before: number[] = [];
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) cur[j] = Math.min(cur[j]!, before[j - 2]! + 1);
    }
    before = prev;
    prev = cur;
  }
  return prev[b.length]!;
}

/** JSON Pointer escaping of one reference token (RFC 6901). */
export function escapePointer(token: string): string {
  return token.replace(/~/g, "~0").replace(/\//g, "~1");
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/**
 * The alias a successful run puts on the version it registers. Checked here, when the spec is
 * saved, not after a run registered its version. Never `champion`: the scheduler acts with its
 * own (admin) identity, so that would let anyone who may submit a pipeline move @champion without
 * the approved Production transition it requires.
 */
function onSuccessAliasProblem(alias: string): string | null {
  const name = alias.startsWith("@") ? alias.slice(1) : alias;
  const problem = modelAliasProblem(name);
  if (problem) return problem;
  if (name.toLowerCase() === "champion") {
    return "@champion moves only with an approved Production transition: register with another alias (e.g. candidate) and request the transition";
  }
  return null;
}

/**
 * Each task param reaches the process as MLGRAPH_PARAM_<NAME> too; `lr` and `LR` (or `a-b` and
 * `a_b`) would share one variable and the last would silently win.
 */
function checkParamEnvNames(params: unknown, base: string, problems: SpecProblem[]): void {
  if (!isRecord(params)) return;
  const byEnvName = new Map<string, string>();
  for (const name of Object.keys(params)) {
    const envName = paramEnvName(name);
    const other = byEnvName.get(envName);
    if (other === undefined) byEnvName.set(envName, name);
    else problems.push({ path: `${base}/${escapePointer(name)}`, message: `params ${JSON.stringify(other)} and ${JSON.stringify(name)} would both be passed as ${envName}; rename one` });
  }
}
