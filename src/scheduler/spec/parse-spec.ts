import type { ErrorObject, ValidateFunction } from "ajv";
import type * as AjvModule from "ajv";
import type * as Yaml from "yaml";
import pipelineSpecSchema from "../../../schema/pipeline-spec.schema.json";
import { DomainError } from "../../services/errors.js";
import {
  TASK_DEFAULTS,
  type JsonValue,
  type ParamDecl,
  type PipelineSpec,
  type SpecProblem,
  type TaskOperator,
  type TaskSpec,
} from "./pipeline-spec.js";
import { escapePointer, semanticProblems, suggest } from "./validate-spec.js";

/** Larger specs are refused before parsing; a 10,000-task fan-out/fan-in fits. */
export const MAX_SPEC_BYTES = 4 * 1024 * 1024;

let validator: ValidateFunction | undefined;

function schemaValidator(): ValidateFunction {
  // allErrors: the user sees every problem at once; verbose: messages can quote the bad value.
  // ajv and yaml are required when first used: loading them was about 0.1 s of every server start.
  if (!validator) {
    const { default: Ajv } = require("ajv") as typeof AjvModule;
    validator = new Ajv({ allErrors: true, allowUnionTypes: true, strict: true, verbose: true }).compile(pipelineSpecSchema);
  }
  return validator;
}

/**
 * Parses, validates and normalizes a pipeline spec given as YAML or JSON text or as an already
 * parsed object. Normalization fills defaults, sorts `depends_on` and map keys, turns env values
 * into strings and picks the operator (`shell` for a string command, `command` for argv), so
 * equal pipelines give equal `contentHash`es.
 *
 * Throws `DomainError("BAD_USER_INPUT", <first problem>, "spec", { errors: SpecProblem[] })`
 * listing every problem found, each with a JSON Pointer into the document
 * (e.g. `/pipeline/tasks/2/depends_on/0: unknown task "trian"`).
 */
export function parsePipelineSpec(input: string | object): PipelineSpec {
  const doc = typeof input === "string" ? parseSpecText(input) : cloneAsJson(input);
  const problems = [...schemaProblems(doc), ...semanticProblems(doc)];
  if (problems.length > 0) throw specError(problems);
  return normalizeSpec(doc as RawSpec);
}

/** Parses YAML (JSON is accepted as the YAML subset it is) into plain data. */
export function parseSpecText(text: string): unknown {
  if (Buffer.byteLength(text, "utf8") > MAX_SPEC_BYTES) {
    throw specError([{ path: "", message: `spec is larger than ${MAX_SPEC_BYTES} bytes` }]);
  }
  // uniqueKeys: a repeated key is an error, not a silent last-one-wins; maxAliasCount bounds
  // alias expansion ("billion laughs").
  const { parseDocument } = require("yaml") as typeof Yaml;
  const parsed = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (parsed.errors.length > 0) {
    throw specError(parsed.errors.map((e) => ({ path: "", message: `YAML: ${e.message.split("\n")[0]}` })));
  }
  const value: unknown = parsed.toJS({ maxAliasCount: 100 });
  if (value === null || value === undefined) throw specError([{ path: "", message: "spec is empty" }]);
  return value;
}

function cloneAsJson(input: object): unknown {
  try {
    return JSON.parse(JSON.stringify(input)) as unknown;
  } catch (e) {
    throw specError([{ path: "", message: `spec is not plain JSON data: ${(e as Error).message}` }]);
  }
}

function specError(problems: SpecProblem[]): DomainError {
  const sorted = dedupe(problems).sort((a, b) => a.path.localeCompare(b.path, "en", { numeric: true }));
  const first = sorted[0]!;
  const message = first.path ? `${first.path}: ${first.message}` : first.message;
  const more = sorted.length > 1 ? ` (and ${sorted.length - 1} more problem${sorted.length > 2 ? "s" : ""})` : "";
  return new DomainError("BAD_USER_INPUT", `invalid pipeline spec: ${message}${more}`, "spec", { errors: sorted });
}

function dedupe(problems: SpecProblem[]): SpecProblem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const key = `${p.path}\u0000${p.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** JSON Schema problems, rephrased for people (paths point at the offending member). */
export function schemaProblems(doc: unknown): SpecProblem[] {
  const validate = schemaValidator();
  if (validate(doc)) return [];
  return (validate.errors ?? []).flatMap(describeAjvError);
}

function describeAjvError(error: ErrorObject): SpecProblem[] {
  const path = error.instancePath;
  const params = error.params as Record<string, unknown>;
  // propertyNames failures arrive twice: once per inner keyword (with propertyName) and once as a summary.
  if (error.keyword === "propertyNames") return [];
  if (error.propertyName !== undefined) {
    return [{ path: `${path}/${escapePointer(error.propertyName)}`, message: `invalid name ${JSON.stringify(error.propertyName)}: ${error.message ?? "invalid"}` }];
  }
  switch (error.keyword) {
    case "additionalProperties": {
      const name = String(params["additionalProperty"]);
      const allowed = Object.keys((error.parentSchema as { properties?: Record<string, unknown> } | undefined)?.properties ?? {});
      return [{ path: `${path}/${escapePointer(name)}`, message: `unknown property ${JSON.stringify(name)}${suggest(name, allowed)}` }];
    }
    case "required":
      return [{ path: `${path}/${escapePointer(String(params["missingProperty"]))}`, message: "is required" }];
    case "enum":
      return [{ path, message: `must be one of ${(params["allowedValues"] as unknown[]).join(", ")} (got ${show(error.data)})` }];
    case "type":
      return [{ path, message: `must be ${String(params["type"]).replace(",", " or ")} (got ${show(error.data)})` }];
    case "maximum":
    case "minimum":
    case "exclusiveMinimum":
    case "exclusiveMaximum":
      return [{ path, message: `${error.message ?? "out of range"} (got ${show(error.data)})` }];
    case "pattern":
      return [{ path, message: `must match ${String(params["pattern"])} (got ${show(error.data)})` }];
    case "uniqueItems":
      return [{ path, message: `has duplicate items (positions ${String(params["j"])} and ${String(params["i"])})` }];
    default:
      return [{ path, message: error.message ?? `fails ${error.keyword}` }];
  }
}

function show(value: unknown): string {
  if (Array.isArray(value)) return "an array";
  if (value !== null && typeof value === "object") return "an object";
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 60)}…` : text;
}

interface RawTask {
  id: string;
  description?: string;
  operator?: TaskOperator;
  command: string | string[];
  image?: string;
  depends_on?: string[];
  params?: Record<string, JsonValue>;
  env?: Record<string, string | number | boolean>;
  resources?: { cpu?: number; memory_mb?: number; gpus?: number; gpu_type?: string };
  pool?: string;
  retries?: number;
  retry_backoff_seconds?: number;
  timeout_seconds?: number;
}

interface RawSpec {
  pipeline: {
    name: string;
    description?: string;
    params?: Record<string, ParamDecl>;
    tasks: RawTask[];
    on_success?: { register_model?: { task: string; artifact_path: string; model_name: string; alias?: string } };
  };
}

function sortedEntries<T>(record: Record<string, T> | undefined): [string, T][] {
  return Object.entries(record ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Fills defaults and fixes key order; only called on a document that passed validation. */
function normalizeSpec(raw: RawSpec): PipelineSpec {
  const p = raw.pipeline;
  const tasks: TaskSpec[] = p.tasks.map((t) => {
    const r = t.resources ?? {};
    return {
      id: t.id,
      ...(t.description !== undefined && { description: t.description }),
      operator: t.operator ?? (typeof t.command === "string" ? "shell" : "command"),
      command: typeof t.command === "string" ? t.command : [...t.command],
      ...(t.image !== undefined && { image: t.image }),
      depends_on: [...(t.depends_on ?? [])].sort(),
      params: Object.fromEntries(sortedEntries(t.params)),
      env: Object.fromEntries(sortedEntries(t.env).map(([k, v]) => [k, String(v)])),
      resources: {
        cpu: r.cpu ?? TASK_DEFAULTS.resources.cpu,
        memory_mb: r.memory_mb ?? TASK_DEFAULTS.resources.memory_mb,
        gpus: r.gpus ?? TASK_DEFAULTS.resources.gpus,
        ...(r.gpu_type !== undefined && { gpu_type: r.gpu_type }),
      },
      pool: t.pool ?? TASK_DEFAULTS.pool,
      retries: t.retries ?? TASK_DEFAULTS.retries,
      retry_backoff_seconds: t.retry_backoff_seconds ?? TASK_DEFAULTS.retry_backoff_seconds,
      timeout_seconds: t.timeout_seconds ?? TASK_DEFAULTS.timeout_seconds,
    };
  });
  const register = p.on_success?.register_model;
  return {
    pipeline: {
      name: p.name,
      ...(p.description !== undefined && { description: p.description }),
      params: Object.fromEntries(
        sortedEntries(p.params).map(([name, d]) => [
          name,
          { type: d.type, ...(d.default !== undefined && { default: d.default }), ...(d.description !== undefined && { description: d.description }) },
        ]),
      ),
      tasks,
      ...(register !== undefined && {
        on_success: {
          register_model: {
            task: register.task,
            artifact_path: register.artifact_path,
            model_name: register.model_name,
            ...(register.alias !== undefined && { alias: register.alias }),
          },
        },
      }),
    },
  };
}
