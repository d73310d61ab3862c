/**
 * Types of a normalized pipeline spec: what `parsePipelineSpec` returns and what a pipeline
 * version stores. Field names stay snake_case so the stored JSON is the user's document with
 * defaults filled in, and round-trips through the JSON Schema in schema/pipeline-spec.schema.json.
 */

/** Any JSON value (task params may hold nested structures). */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** Declared type of a pipeline parameter. */
export type ParamType = "int" | "float" | "string" | "bool";

/** Value of a pipeline parameter after coercion. */
export type ParamValue = string | number | boolean;

/** How the executor turns `command` into a process. */
export type TaskOperator = "python" | "shell" | "command";

export interface ParamDecl {
  type: ParamType;
  /** Absent means the parameter is required at submission. */
  default?: ParamValue;
  description?: string;
}

export interface TaskResources {
  /** CPU cores; fractions allowed (0.5 = 500m). */
  cpu: number;
  memory_mb: number;
  gpus: number;
  /** GPU product label (nvidia.com/gpu.product), e.g. "NVIDIA-H100-80GB-HBM3". */
  gpu_type?: string;
}

export interface TaskSpec {
  id: string;
  description?: string;
  operator: TaskOperator;
  /** A string for `shell`, argv otherwise. May contain `{{param}}` templates. */
  command: string | string[];
  image?: string;
  /** Sorted, so the content hash does not depend on the order the user listed them in. */
  depends_on: string[];
  params: Record<string, JsonValue>;
  env: Record<string, string>;
  resources: TaskResources;
  pool: string;
  /** Retries after the first attempt: a task runs at most `retries + 1` times. */
  retries: number;
  retry_backoff_seconds: number;
  timeout_seconds: number;
}

export interface RegisterModelAction {
  task: string;
  artifact_path: string;
  model_name: string;
  alias?: string;
}

export interface PipelineBody {
  name: string;
  description?: string;
  params: Record<string, ParamDecl>;
  tasks: TaskSpec[];
  on_success?: { register_model?: RegisterModelAction };
}

/** A normalized, validated pipeline spec (the document root is `pipeline:`). */
export interface PipelineSpec {
  pipeline: PipelineBody;
}

/** One validation problem: a JSON Pointer into the submitted document and what is wrong there. */
export interface SpecProblem {
  path: string;
  message: string;
}

/** Defaults filled in by normalization; documented in the schema's descriptions. */
export const TASK_DEFAULTS = {
  pool: "default",
  retries: 0,
  retry_backoff_seconds: 10,
  /** ML tasks run minutes to days; a day bounds a hung attempt without cutting real training short. */
  timeout_seconds: 86_400,
  resources: { cpu: 1, memory_mb: 512, gpus: 0 },
} as const;

/** Limits of what one task may ask for; also in the JSON Schema (kept equal by a unit test). */
export const RESOURCE_LIMITS = {
  cpu: 512,
  memory_mb: 4 * 1024 * 1024,
  gpus: 16,
} as const;
