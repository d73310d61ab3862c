import fs from "node:fs";
import path from "node:path";
import { pipeline } from "../../../client/pipeline-builder";
import { contentHash, parsePipelineSpec } from "../../../src/scheduler/spec";

describe("pipeline builder", () => {
  const build = () =>
    pipeline(
      "train",
      (p) => {
        const lr = p.param("learning_rate", { type: "float", default: 0.01 });
        const dataset = p.param("dataset", { type: "string", description: "which data" });
        const data = p.task("prepare", { command: ["python3", "prepare.py", "--dataset", dataset], pool: "cpu", retries: 2 });
        const train = p.task("train", {
          command: ["python3", "train.py"],
          dependsOn: [data],
          params: { lr },
          env: { SEED: "42" },
          resources: { gpus: 2, cpu: 8, memoryMb: 32768 },
          pool: "gpu",
          timeoutSeconds: 3600,
        });
        p.task("evaluate", { command: "python3 eval.py", operator: "shell", dependsOn: [train, "prepare"] });
        p.registerModel({ task: train, artifactPath: "model", modelName: "churn", alias: "candidate" });
      },
      { description: "built in TypeScript" },
    );

  it("compiles to a spec the server's parser accepts, with the dependencies and resources asked for", () => {
    const spec = parsePipelineSpec(build().toSpec());
    expect(spec.pipeline.name).toBe("train");
    expect(spec.pipeline.params.learning_rate).toEqual({ type: "float", default: 0.01 });
    const train = spec.pipeline.tasks.find((t) => t.id === "train")!;
    expect(train.depends_on).toEqual(["prepare"]);
    expect(train.resources).toMatchObject({ gpus: 2, cpu: 8, memory_mb: 32768 });
    expect(train.params).toEqual({ lr: "{{learning_rate}}" });
    expect(spec.pipeline.tasks.find((t) => t.id === "evaluate")!.depends_on).toEqual(["prepare", "train"]);
    expect(spec.pipeline.on_success?.register_model).toEqual({ task: "train", artifact_path: "model", model_name: "churn", alias: "candidate" });
  });

  it("gives the same content hash through YAML as through JSON", () => {
    const b = build();
    expect(contentHash(parsePipelineSpec(b.toYaml()))).toBe(contentHash(parsePipelineSpec(b.toSpec())));
  });

  it("can express the seed's example pipeline (examples/pipelines/train.yaml) with the same hash", () => {
    const yamlPath = path.resolve(__dirname, "../../../examples/pipelines/train.yaml");
    const fromYaml = parsePipelineSpec(fs.readFileSync(yamlPath, "utf8"));
    const fromBuilder = parsePipelineSpec(
      pipeline(fromYaml.pipeline.name, (p) => {
        for (const [name, decl] of Object.entries(fromYaml.pipeline.params)) p.param(name, decl);
        for (const t of fromYaml.pipeline.tasks) {
          p.task(t.id, {
            command: t.command, operator: t.operator, description: t.description, image: t.image, dependsOn: t.depends_on, params: t.params, env: t.env,
            resources: { cpu: t.resources.cpu, memoryMb: t.resources.memory_mb, gpus: t.resources.gpus, gpuType: t.resources.gpu_type },
            pool: t.pool, retries: t.retries, retryBackoffSeconds: t.retry_backoff_seconds, timeoutSeconds: t.timeout_seconds,
          });
        }
        const rm = fromYaml.pipeline.on_success?.register_model;
        if (rm) p.registerModel({ task: rm.task, artifactPath: rm.artifact_path, modelName: rm.model_name, alias: rm.alias });
      }, { description: fromYaml.pipeline.description }).toSpec(),
    );
    expect(contentHash(fromBuilder)).toBe(contentHash(fromYaml));
  });

  it("refuses what it can see is wrong, naming the task", () => {
    expect(() => pipeline("x", (p) => p.task("b", { command: ["b"], dependsOn: ["a"] }))).toThrow(/task "b": dependsOn: unknown task "a"/);
    expect(() => pipeline("x", (p) => { p.task("a", { command: ["a"] }); p.task("a", { command: ["a"] }); })).toThrow(/"a" is added twice/);
    const other = pipeline("other", (p) => void p.task("a", { command: ["a"] }));
    const foreign = { id: "a", pipeline: other };
    expect(() => pipeline("x", (p) => { p.task("a", { command: ["a"] }); p.task("b", { command: ["b"], dependsOn: [foreign] }); })).toThrow(/belongs to pipeline "other"/);
    expect(() => pipeline("Bad Name", () => undefined)).toThrow(/pipeline name/);
    expect(() => pipeline("empty", () => undefined).toSpec()).toThrow(/no tasks/);
  });

  it("leaves value checks to the server's validator, which names the path", () => {
    const spec = pipeline("x", (p) => void p.task("a", { command: ["a"], resources: { gpus: 99 } })).toSpec();
    expect(() => parsePipelineSpec(spec)).toThrow(/resources\/gpus/);
  });
});
