/**
 * Pipelines in TypeScript, compiled to the same spec the server validates (the seed's "hybrid"
 * definition: code for authoring, data for execution):
 *
 * ```ts
 * const spec = pipeline("train", (p) => {
 *   const lr = p.param("learning_rate", { type: "float", default: 0.01 });
 *   const data = p.task("prepare", { command: ["python3", "prepare.py"] });
 *   p.task("train", { command: ["python3", "train.py", "--lr", lr], dependsOn: [data], resources: { gpus: 2 } });
 * }).toSpec();
 * await client.request(CreatePipelineDocument, { input: { spec } });
 * ```
 *
 * The builder checks what it can see locally (duplicate ids, dependencies on tasks of another
 * pipeline, names) and throws with the task at fault; everything else is the server's
 * `parsePipelineSpec`, which accepts exactly what `toSpec()` returns.
 */
import type * as Yaml from "yaml";

type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type ParamType = "int" | "float" | "string" | "bool";

export interface ParamOptions {
  type: ParamType;
  /** Absent: the parameter must be given at submission. */
  default?: string | number | boolean;
  description?: string;
}

export interface TaskResourcesOptions {
  /** CPU cores (fractions allowed). */
  cpu?: number;
  memoryMb?: number;
  gpus?: number;
  /** GPU product label, e.g. "NVIDIA-H100-80GB-HBM3". */
  gpuType?: string;
}

export interface TaskOptions {
  /** argv (operator `command`/`python`) or a shell line (operator `shell`); may hold `{{param}}` templates. */
  command: string | string[];
  operator?: "python" | "shell" | "command";
  description?: string;
  image?: string;
  /** Tasks that must succeed first: handles from `p.task(...)` (or ids of tasks already added). */
  dependsOn?: (TaskHandle | string)[];
  params?: Record<string, JsonValue>;
  env?: Record<string, string>;
  resources?: TaskResourcesOptions;
  /** Executor pool (default "default"). */
  pool?: string;
  /** Retries after the first attempt. */
  retries?: number;
  retryBackoffSeconds?: number;
  timeoutSeconds?: number;
}

/** What `p.task()` returns: pass it in another task's `dependsOn`. */
export interface TaskHandle {
  readonly id: string;
  /** The builder that made it, so a handle from another pipeline is caught. */
  readonly pipeline: PipelineBuilder;
}

export interface RegisterModelOptions {
  task: TaskHandle | string;
  artifactPath: string;
  modelName: string;
  alias?: string;
}

/** The spec document as the server takes it (`createPipeline(input: { spec })`). */
export interface PipelineSpecDocument {
  pipeline: {
    name: string;
    description?: string;
    params?: Record<string, { type: ParamType; default?: string | number | boolean; description?: string }>;
    tasks: Record<string, JsonValue>[];
    on_success?: { register_model: { task: string; artifact_path: string; model_name: string; alias?: string } };
  };
}

const NAME = /^[a-z0-9_-]+$/;
const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export class PipelineBuilder {
  private readonly tasks = new Map<string, Record<string, JsonValue>>();
  private readonly params: NonNullable<PipelineSpecDocument["pipeline"]["params"]> = {};
  private registerModelAction: PipelineSpecDocument["pipeline"]["on_success"];

  constructor(
    readonly name: string,
    private readonly description?: string,
  ) {
    if (!NAME.test(name)) throw new Error(`pipeline name ${JSON.stringify(name)}: use lowercase letters, digits, '_' and '-'`);
  }

  /** Declares a pipeline parameter; returns its template (`"{{name}}"`) to use in commands and params. */
  param(name: string, options: ParamOptions): string {
    if (!PARAM_NAME.test(name)) throw new Error(`param ${JSON.stringify(name)}: use letters, digits and '_' (not starting with a digit)`);
    if (this.params[name]) throw new Error(`param ${JSON.stringify(name)} is declared twice`);
    this.params[name] = { type: options.type, ...(options.default !== undefined ? { default: options.default } : {}), ...(options.description ? { description: options.description } : {}) };
    return `{{${name}}}`;
  }

  /** Adds a task; its dependencies must have been added before (so the DAG cannot cycle). */
  task(id: string, options: TaskOptions): TaskHandle {
    if (!NAME.test(id)) throw new Error(`task ${JSON.stringify(id)}: use lowercase letters, digits, '_' and '-'`);
    if (this.tasks.has(id)) throw new Error(`task ${JSON.stringify(id)} is added twice`);
    const dependsOn = (options.dependsOn ?? []).map((dep) => this.resolve(dep, `task ${JSON.stringify(id)}: dependsOn`));
    const r = options.resources;
    const resources: Record<string, JsonValue> = {};
    if (r?.cpu !== undefined) resources.cpu = r.cpu;
    if (r?.memoryMb !== undefined) resources.memory_mb = r.memoryMb;
    if (r?.gpus !== undefined) resources.gpus = r.gpus;
    if (r?.gpuType !== undefined) resources.gpu_type = r.gpuType;
    const task: Record<string, JsonValue> = { id, command: options.command };
    if (options.operator) task.operator = options.operator;
    if (options.description) task.description = options.description;
    if (options.image) task.image = options.image;
    if (dependsOn.length > 0) task.depends_on = dependsOn;
    if (options.params) task.params = options.params;
    if (options.env) task.env = options.env;
    if (Object.keys(resources).length > 0) task.resources = resources;
    if (options.pool) task.pool = options.pool;
    if (options.retries !== undefined) task.retries = options.retries;
    if (options.retryBackoffSeconds !== undefined) task.retry_backoff_seconds = options.retryBackoffSeconds;
    if (options.timeoutSeconds !== undefined) task.timeout_seconds = options.timeoutSeconds;
    this.tasks.set(id, task);
    return { id, pipeline: this };
  }

  /** On success, registers the artifact a task's run logged as a new model version. */
  registerModel(options: RegisterModelOptions): void {
    const task = this.resolve(options.task, "registerModel: task");
    this.registerModelAction = {
      register_model: { task, artifact_path: options.artifactPath, model_name: options.modelName, ...(options.alias ? { alias: options.alias } : {}) },
    };
  }

  /** The spec document (plain JSON data). */
  toSpec(): PipelineSpecDocument {
    if (this.tasks.size === 0) throw new Error(`pipeline ${JSON.stringify(this.name)} has no tasks`);
    return {
      pipeline: {
        name: this.name,
        ...(this.description ? { description: this.description } : {}),
        ...(Object.keys(this.params).length > 0 ? { params: structuredClone(this.params) } : {}),
        tasks: [...this.tasks.values()].map((t) => structuredClone(t)),
        ...(this.registerModelAction ? { on_success: structuredClone(this.registerModelAction) } : {}),
      },
    };
  }

  /** The spec as YAML, e.g. to commit next to the code or pass to `mlgraph pipeline create`. */
  toYaml(): string {
    // Required here: the CLI and executors load the client, and most of them never write YAML.
    const { stringify } = require("yaml") as typeof Yaml;
    return stringify(this.toSpec());
  }

  private resolve(dep: TaskHandle | string, where: string): string {
    const id = typeof dep === "string" ? dep : dep.id;
    if (typeof dep !== "string" && dep.pipeline !== this) throw new Error(`${where}: task ${JSON.stringify(id)} belongs to pipeline ${JSON.stringify(dep.pipeline.name)}`);
    if (!this.tasks.has(id)) throw new Error(`${where}: unknown task ${JSON.stringify(id)} (add a task before the tasks that depend on it)`);
    return id;
  }
}

/** Builds a pipeline: `pipeline("train", p => { ... })`. */
export function pipeline(name: string, define: (p: PipelineBuilder) => void, options: { description?: string } = {}): PipelineBuilder {
  const builder = new PipelineBuilder(name, options.description);
  define(builder);
  return builder;
}
