import { DomainError } from "../../services/errors.js";
import type { JsonValue, ParamDecl, ParamType, ParamValue, PipelineSpec, SpecProblem } from "./pipeline-spec.js";

/** `{{ anything }}`; the inside must be a parameter name to be valid. */
const TEMPLATE = /\{\{(.*?)\}\}/g;
const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const WHOLE_TEMPLATE = /^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$/;

/** One `{{...}}` occurrence found in a string. */
export interface TemplateReference {
  /** The trimmed text between the braces. */
  name: string;
  /** False when the inside is not a parameter name (e.g. `{{ a.b }}`). */
  valid: boolean;
}

/** Every `{{...}}` occurrence in a string, in order. */
export function templateReferences(text: string): TemplateReference[] {
  const refs: TemplateReference[] = [];
  for (const match of text.matchAll(TEMPLATE)) {
    const name = (match[1] ?? "").trim();
    refs.push({ name, valid: PARAM_NAME.test(name) });
  }
  return refs;
}

/**
 * Resolves `{{name}}` in strings, arrays and object values (keys are left alone). A string that
 * is exactly one placeholder takes the parameter's typed value (`"{{epochs}}"` → `3`), so task
 * params keep their types; placeholders inside longer strings are replaced by their text.
 * Throws BAD_USER_INPUT for a name missing from `params`.
 */
export function renderTemplate(value: JsonValue, params: Readonly<Record<string, ParamValue>>): JsonValue {
  if (typeof value === "string") {
    const whole = WHOLE_TEMPLATE.exec(value);
    if (whole) return lookup(whole[1]!, params);
    return renderString(value, params);
  }
  if (Array.isArray(value)) return value.map((item) => renderTemplate(item, params));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, renderTemplate(v, params)]));
  }
  return value;
}

/** Like `renderTemplate` for a string, always giving a string (argv elements, env values). */
export function renderString(text: string, params: Readonly<Record<string, ParamValue>>): string {
  return text.replace(TEMPLATE, (_all, inner: string) => String(lookup(inner.trim(), params)));
}

function lookup(name: string, params: Readonly<Record<string, ParamValue>>): ParamValue {
  if (!Object.prototype.hasOwnProperty.call(params, name)) {
    throw new DomainError("BAD_USER_INPUT", `params.${name}: template refers to an unknown parameter`, `params.${name}`);
  }
  return params[name]!;
}

/**
 * Checks the parameters supplied for a run against the spec's declarations: coerces each to its
 * declared type (strings are accepted for every type, as CLIs and query strings send them), fills
 * defaults, and refuses unknown names and missing required parameters. All problems are reported
 * at once in `details.errors` with paths `params.<name>`; the first is the message and `field`.
 * Returns the values with keys sorted, ready to store on the pipeline run.
 */
export function coerceParams(spec: PipelineSpec, supplied: unknown): Record<string, ParamValue> {
  const declared = spec.pipeline.params;
  const problems: SpecProblem[] = [];
  if (supplied !== null && supplied !== undefined && (typeof supplied !== "object" || Array.isArray(supplied))) {
    throw new DomainError("BAD_USER_INPUT", "params: must be an object of name → value", "params", {
      errors: [{ path: "params", message: "must be an object of name → value" }],
    });
  }
  const given = (supplied ?? {}) as Record<string, unknown>;
  const result: [string, ParamValue][] = [];

  for (const name of Object.keys(given).sort()) {
    if (!Object.prototype.hasOwnProperty.call(declared, name)) {
      const known = Object.keys(declared).sort();
      problems.push({
        path: `params.${name}`,
        message: `unknown parameter; declared: ${known.length ? known.join(", ") : "(none)"}`,
      });
    }
  }
  for (const name of Object.keys(declared).sort()) {
    const decl = declared[name]!;
    const raw = Object.prototype.hasOwnProperty.call(given, name) ? given[name] : undefined;
    if (raw === undefined || raw === null) {
      if (decl.default === undefined) {
        problems.push({ path: `params.${name}`, message: `required parameter of type ${decl.type} is missing` });
      } else {
        result.push([name, decl.default]);
      }
      continue;
    }
    const coerced = coerceParamValue(raw, decl.type);
    if (coerced.ok) result.push([name, coerced.value]);
    else problems.push({ path: `params.${name}`, message: coerced.message });
  }

  if (problems.length > 0) {
    const first = problems[0]!;
    throw new DomainError("BAD_USER_INPUT", `${first.path}: ${first.message}`, first.path, { errors: problems });
  }
  return Object.fromEntries(result);
}

/** Result of coercing one value to a declared parameter type. */
export type CoercionResult = { ok: true; value: ParamValue } | { ok: false; message: string };

const INT_TEXT = /^[+-]?\d+$/;
const FLOAT_TEXT = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** Coerces one value to `type`; strings are parsed, never guessed (`"1.5"` is not an int). */
export function coerceParamValue(raw: unknown, type: ParamType): CoercionResult {
  const shown = describe(raw);
  switch (type) {
    case "int": {
      const n = typeof raw === "number" ? raw : typeof raw === "string" && INT_TEXT.test(raw.trim()) ? Number(raw.trim()) : NaN;
      if (Number.isSafeInteger(n)) return { ok: true, value: n };
      return { ok: false, message: `expected an int, got ${shown}` };
    }
    case "float": {
      const n = typeof raw === "number" ? raw : typeof raw === "string" && FLOAT_TEXT.test(raw.trim()) ? Number(raw.trim()) : NaN;
      if (Number.isFinite(n)) return { ok: true, value: n };
      return { ok: false, message: `expected a float, got ${shown}` };
    }
    case "bool": {
      if (typeof raw === "boolean") return { ok: true, value: raw };
      if (raw === 1 || raw === 0) return { ok: true, value: raw === 1 };
      if (typeof raw === "string") {
        const text = raw.trim().toLowerCase();
        if (["true", "1", "yes", "on"].includes(text)) return { ok: true, value: true };
        if (["false", "0", "no", "off"].includes(text)) return { ok: true, value: false };
      }
      return { ok: false, message: `expected a bool (true/false), got ${shown}` };
    }
    case "string": {
      if (typeof raw === "string") return { ok: true, value: raw };
      // Clients sending JSON may type a dataset version as 42; its text is what the user meant.
      if ((typeof raw === "number" && Number.isFinite(raw)) || typeof raw === "boolean") return { ok: true, value: String(raw) };
      return { ok: false, message: `expected a string, got ${shown}` };
    }
  }
}

/** Checks that a declared default has the declared type (no coercion: the spec is typed YAML/JSON). */
export function defaultMatchesType(decl: ParamDecl): boolean {
  const value = decl.default;
  if (value === undefined) return true;
  switch (decl.type) {
    case "int":
      return typeof value === "number" && Number.isSafeInteger(value);
    case "float":
      return typeof value === "number" && Number.isFinite(value);
    case "bool":
      return typeof value === "boolean";
    case "string":
      return typeof value === "string";
  }
}

function describe(raw: unknown): string {
  if (typeof raw === "string") return JSON.stringify(raw.length > 50 ? `${raw.slice(0, 50)}…` : raw);
  if (Array.isArray(raw)) return "an array";
  if (raw !== null && typeof raw === "object") return "an object";
  return String(raw);
}
