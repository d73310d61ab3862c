import { readFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { stringify as toYaml } from "yaml";
import { DomainError } from "../../../src/services/errors.js";
import {
  RESOURCE_LIMITS,
  contentHash,
  parsePipelineSpec,
  roots,
  topologicalOrder,
  type SpecProblem,
} from "../../../src/scheduler/spec/index.js";
import schema from "../../../schema/pipeline-spec.schema.json";

const EXAMPLE = join(__dirname, "../../../examples/pipelines/train.yaml");

function baseSpec(): { pipeline: Record<string, unknown> & { tasks: Record<string, unknown>[] } } {
  return {
    pipeline: {
      name: "training_pipeline",
      params: { learning_rate: { type: "float", default: 0.01 }, epochs: { type: "int", default: 3 }, dataset: { type: "string" } },
      tasks: [
        { id: "prepare_data", operator: "python", command: ["prepare.py", "--dataset", "{{dataset}}"] },
        { id: "train_model", operator: "python", command: ["train.py"], depends_on: ["prepare_data"], params: { lr: "{{learning_rate}}" } },
        { id: "evaluate_model", command: "python3 evaluate.py --epochs {{epochs}}", depends_on: ["train_model"] },
      ],
      on_success: { register_model: { task: "train_model", artifact_path: "model", model_name: "churn", alias: "candidate" } },
    },
  };
}

/** Runs `fn`, expects a spec DomainError and returns its problems. */
function problemsOf(input: string | object): SpecProblem[] {
  try {
    parsePipelineSpec(input);
  } catch (e) {
    expect(e).toBeInstanceOf(DomainError);
    const err = e as DomainError;
    expect(err.code).toBe("BAD_USER_INPUT");
    expect(err.field).toBe("spec");
    const errors = (err.details as { errors: SpecProblem[] }).errors;
    expect(errors.length).toBeGreaterThan(0);
    expect(err.message).toContain(errors[0]!.message);
    return errors;
  }
  throw new Error("expected the spec to be refused");
}

function expectProblem(problems: SpecProblem[], path: string, text: string | RegExp): void {
  const hit = problems.find((p) => p.path === path && (typeof text === "string" ? p.message.includes(text) : text.test(p.message)));
  if (!hit) throw new Error(`no problem at ${path} matching ${String(text)}; got ${JSON.stringify(problems, null, 2)}`);
}

describe("parsePipelineSpec: valid specs", () => {
  it("parses the example YAML and fills defaults", () => {
    const spec = parsePipelineSpec(readFileSync(EXAMPLE, "utf8"));
    expect(spec.pipeline.name).toBe("training_pipeline");
    expect(topologicalOrder(spec)).toEqual(["prepare_data", "train_model", "evaluate_model"]);
    expect(roots(spec)).toEqual(["prepare_data"]);
    const train = spec.pipeline.tasks[1]!;
    expect(train).toMatchObject({ pool: "gpu", resources: { gpus: 1, cpu: 8, memory_mb: 32768 }, env: { TRAIN_SEED: "42" } });
    expect(spec.pipeline.on_success?.register_model).toEqual({ task: "train_model", artifact_path: "model", model_name: "churn", alias: "candidate" });
  });

  it("fills defaults and picks the operator from the command's shape", () => {
    const spec = parsePipelineSpec({ pipeline: { name: "p", tasks: [{ id: "a", command: "echo hi" }, { id: "b", command: ["echo", "hi"] }] } });
    expect(spec.pipeline.tasks[0]).toEqual({
      id: "a",
      operator: "shell",
      command: "echo hi",
      depends_on: [],
      params: {},
      env: {},
      resources: { cpu: 1, memory_mb: 512, gpus: 0 },
      pool: "default",
      retries: 0,
      retry_backoff_seconds: 10,
      timeout_seconds: 86400,
    });
    expect(spec.pipeline.tasks[1]!.operator).toBe("command");
    expect(spec.pipeline.params).toEqual({});
  });

  it("gives YAML and JSON of the same spec the same hash", () => {
    const obj = baseSpec();
    const fromJson = parsePipelineSpec(JSON.stringify(obj));
    const fromYaml = parsePipelineSpec(toYaml(obj));
    const fromObject = parsePipelineSpec(obj);
    expect(fromYaml).toEqual(fromJson);
    expect(contentHash(fromYaml)).toBe(contentHash(fromJson));
    expect(contentHash(fromObject)).toBe(contentHash(fromJson));
    expect(contentHash(fromJson)).toMatch(/^[0-9a-f]{64}$/);
  });

  it("hashes written-out defaults like omitted ones, and a real change differently", () => {
    const a = baseSpec();
    const b = baseSpec();
    b.pipeline.tasks[0]!["pool"] = "default";
    b.pipeline.tasks[0]!["retries"] = 0;
    b.pipeline.tasks[0]!["resources"] = { cpu: 1 };
    expect(contentHash(parsePipelineSpec(b))).toBe(contentHash(parsePipelineSpec(a)));
    b.pipeline.tasks[0]!["retries"] = 1;
    expect(contentHash(parsePipelineSpec(b))).not.toBe(contentHash(parsePipelineSpec(a)));
  });

  it("ignores the order of depends_on entries", () => {
    const mk = (deps: string[]) =>
      contentHash(parsePipelineSpec({ pipeline: { name: "p", tasks: [{ id: "a", command: "x" }, { id: "b", command: "x" }, { id: "c", command: "x", depends_on: deps }] } }));
    expect(mk(["a", "b"])).toBe(mk(["b", "a"]));
  });

  it("accepts a 1,000-task chain (no recursion limits)", () => {
    const tasks = Array.from({ length: 1000 }, (_, i) => ({ id: `t${i}`, command: "true", depends_on: i ? [`t${i - 1}`] : [] }));
    const spec = parsePipelineSpec({ pipeline: { name: "long", tasks } });
    expect(topologicalOrder(spec)).toEqual(tasks.map((t) => t.id));
  });
});

describe("parsePipelineSpec: each problem with its JSON path", () => {
  it("reports an unknown dependency with a suggestion", () => {
    const s = baseSpec();
    s.pipeline.tasks[2]!["depends_on"] = ["trian_model"];
    const problems = problemsOf(s);
    expectProblem(problems, "/pipeline/tasks/2/depends_on/0", 'unknown task "trian_model"; did you mean "train_model"?');
  });

  it("refuses task params whose environment names collide (lr and LR would share MLGRAPH_PARAM_LR)", () => {
    const problems = problemsOf({ pipeline: { name: "p", tasks: [{ id: "a", command: "x", params: { lr: 1, LR: 2, "batch-size": 3, batch_size: 4 } }] } });
    expectProblem(problems, "/pipeline/tasks/0/params/LR", 'params "lr" and "LR" would both be passed as MLGRAPH_PARAM_LR');
    expectProblem(problems, "/pipeline/tasks/0/params/batch_size", "MLGRAPH_PARAM_BATCH_SIZE");
    expect(() => parsePipelineSpec({ pipeline: { name: "p", tasks: [{ id: "a", command: "x", params: { lr: 1, lr2: 2 } }] } })).not.toThrow();
  });

  it("reports duplicate task ids", () => {
    const s = baseSpec();
    s.pipeline.tasks[2]!["id"] = "prepare_data";
    s.pipeline.tasks[2]!["depends_on"] = [];
    expectProblem(problemsOf(s), "/pipeline/tasks/2/id", 'duplicate task id "prepare_data"');
  });

  it("names a cycle", () => {
    const s = { pipeline: { name: "p", tasks: [
      { id: "a", command: "x", depends_on: ["c"] },
      { id: "b", command: "x", depends_on: ["a"] },
      { id: "c", command: "x", depends_on: ["b"] },
      { id: "d", command: "x" },
    ] } };
    const problems = problemsOf(s);
    expect(problems).toHaveLength(1);
    // a depends on c, c on b, b on a: the edge b -> a closes it.
    expectProblem(problems, "/pipeline/tasks/1/depends_on/0", "cycle: a -> c -> b -> a");
  });

  it("names a self-dependency and two separate cycles", () => {
    const problems = problemsOf({ pipeline: { name: "p", tasks: [
      { id: "a", command: "x", depends_on: ["a"] },
      { id: "b", command: "x", depends_on: ["c"] },
      { id: "c", command: "x", depends_on: ["b"] },
    ] } });
    expectProblem(problems, "/pipeline/tasks/0/depends_on/0", "cycle: a -> a");
    expectProblem(problems, "/pipeline/tasks/2/depends_on/0", "cycle: b -> c -> b");
  });

  it("reports undeclared {{param}} references in command, params and env", () => {
    const s = baseSpec();
    s.pipeline.tasks[0]!["command"] = ["prepare.py", "--x", "{{datset}}"];
    s.pipeline.tasks[1]!["params"] = { lr: "{{lr_rate}}", nested: { list: ["{{ nope }}"] } };
    s.pipeline.tasks[1]!["env"] = { SEED: "{{seed}}" };
    const problems = problemsOf(s);
    expectProblem(problems, "/pipeline/tasks/0/command/2", '{{datset}} refers to an undeclared param; did you mean "dataset"?');
    expectProblem(problems, "/pipeline/tasks/1/params/lr", "{{lr_rate}}");
    expectProblem(problems, "/pipeline/tasks/1/params/nested/list/0", "{{nope}}");
    expectProblem(problems, "/pipeline/tasks/1/env/SEED", "{{seed}}");
  });

  it("reports malformed templates", () => {
    const s = baseSpec();
    s.pipeline.tasks[2]!["command"] = "run {{ a.b }}";
    expectProblem(problemsOf(s), "/pipeline/tasks/2/command", "malformed template");
  });

  it.each([
    ["cpu", -1, /must be > 0/],
    ["cpu", 513, /must be <= 512/],
    ["memory_mb", 4 * 1024 * 1024 + 1, /must be <= 4194304/],
    ["memory_mb", -5, /must be >= 1/],
    ["gpus", 17, /must be <= 16/],
    ["gpus", -1, /must be >= 0/],
    ["gpus", 1.5, /must be integer/],
  ])("refuses impossible resources: %s = %p", (field, value, text) => {
    const s = baseSpec();
    s.pipeline.tasks[1]!["resources"] = { [field]: value };
    expectProblem(problemsOf(s), `/pipeline/tasks/1/resources/${field}`, text);
  });

  it("keeps the schema's resource limits equal to RESOURCE_LIMITS", () => {
    const r = (schema as unknown as { definitions: { resources: { properties: Record<string, { maximum: number }> } } }).definitions.resources.properties;
    expect(r["cpu"]!.maximum).toBe(RESOURCE_LIMITS.cpu);
    expect(r["memory_mb"]!.maximum).toBe(RESOURCE_LIMITS.memory_mb);
    expect(r["gpus"]!.maximum).toBe(RESOURCE_LIMITS.gpus);
  });

  it("refuses gpu_type without gpus", () => {
    const s = baseSpec();
    s.pipeline.tasks[1]!["resources"] = { gpu_type: "NVIDIA-H100-80GB-HBM3" };
    expectProblem(problemsOf(s), "/pipeline/tasks/1/resources/gpu_type", "gpus of at least 1");
  });

  it("requires on_success.register_model.task to exist", () => {
    const s = baseSpec();
    (s.pipeline["on_success"] as { register_model: { task: string } }).register_model.task = "train";
    expectProblem(problemsOf(s), "/pipeline/on_success/register_model/task", 'unknown task "train"');
  });

  it("refuses an on_success alias that is @champion, reserved or malformed, when the spec is saved", () => {
    // The scheduler registers with its own admin identity: @champion here let anyone who may
    // submit a pipeline move it without an approved Production transition.
    for (const [alias, message] of [
      ["champion", "@champion moves only with an approved Production transition"],
      ["Champion", "@champion moves only with an approved Production transition"],
      ["v3", "is reserved"],
      ["latest", "is reserved"],
      ["9lives", "an alias starts with a letter"],
    ] as const) {
      const s = baseSpec();
      (s.pipeline["on_success"] as { register_model: { alias: string } }).register_model.alias = alias;
      expectProblem(problemsOf(s), "/pipeline/on_success/register_model/alias", message);
    }
    const fine = baseSpec();
    (fine.pipeline["on_success"] as { register_model: { alias: string } }).register_model.alias = "candidate-2";
    expect(parsePipelineSpec(fine).pipeline.on_success?.register_model?.alias).toBe("candidate-2");
  });

  it("refuses unknown properties everywhere, suggesting the known one", () => {
    const s = baseSpec();
    s.pipeline.tasks[1]!["depend_on"] = ["prepare_data"];
    s.pipeline["extra"] = 1;
    (s.pipeline["params"] as Record<string, Record<string, unknown>>)["epochs"]!["min"] = 1;
    s.pipeline.tasks[0]!["resources"] = { gpu: 1 };
    const problems = problemsOf(s);
    expectProblem(problems, "/pipeline/tasks/1/depend_on", 'unknown property "depend_on"; did you mean "depends_on"?');
    expectProblem(problems, "/pipeline/extra", 'unknown property "extra"');
    expectProblem(problems, "/pipeline/params/epochs/min", 'unknown property "min"');
    expectProblem(problems, "/pipeline/tasks/0/resources/gpu", 'unknown property "gpu"; did you mean "gpus"?');
  });

  it("reports schema problems: missing, enum, type, pattern", () => {
    const s = baseSpec();
    s.pipeline["name"] = "Training Pipeline";
    delete s.pipeline.tasks[0]!["command"];
    s.pipeline.tasks[1]!["operator"] = "pyhton";
    s.pipeline.tasks[2]!["retries"] = "3";
    const problems = problemsOf(s);
    expectProblem(problems, "/pipeline/name", "must match");
    expectProblem(problems, "/pipeline/tasks/0/command", "is required");
    expectProblem(problems, "/pipeline/tasks/1/operator", 'must be one of python, shell, command (got "pyhton")');
    expectProblem(problems, "/pipeline/tasks/2/retries", "must be integer");
  });

  it("refuses a command whose shape does not fit the operator", () => {
    const s = baseSpec();
    s.pipeline.tasks[0]!["operator"] = "shell";
    s.pipeline.tasks[2]!["operator"] = "command";
    const problems = problemsOf(s);
    expectProblem(problems, "/pipeline/tasks/0/command", 'operator "shell" takes one string');
    expectProblem(problems, "/pipeline/tasks/2/command", 'operator "command" takes an argv array');
  });

  it("refuses a default of the wrong type and an invalid param name", () => {
    const s = baseSpec();
    s.pipeline["params"] = { epochs: { type: "int", default: 2.5 }, "bad-name": { type: "string" } };
    s.pipeline.tasks = [{ id: "a", command: "x" }];
    delete s.pipeline["on_success"];
    const problems = problemsOf(s);
    expectProblem(problems, "/pipeline/params/epochs/default", "is not of type int");
    expectProblem(problems, "/pipeline/params/bad-name", "invalid name");
  });

  it("carries all problems, the first (in document order) in the message", () => {
    const s = baseSpec();
    s.pipeline.tasks[2]!["depends_on"] = ["nope"];
    s.pipeline.tasks[0]!["resources"] = { gpus: 99 };
    try {
      parsePipelineSpec(s);
      throw new Error("not refused");
    } catch (e) {
      const err = e as DomainError;
      const errors = (err.details as { errors: SpecProblem[] }).errors;
      expect(errors.map((p) => p.path)).toEqual(["/pipeline/tasks/0/resources/gpus", "/pipeline/tasks/2/depends_on/0"]);
      expect(err.message).toBe("invalid pipeline spec: /pipeline/tasks/0/resources/gpus: must be <= 16 (got 99) (and 1 more problem)");
    }
  });

  it("reports YAML syntax errors and duplicate keys", () => {
    expectProblem(problemsOf("pipeline:\n  name: [unclosed\n"), "", /^YAML:/);
    expectProblem(problemsOf("pipeline:\n  name: a\n  name: b\n  tasks: []\n"), "", /YAML:.*[Dd]uplicate|unique/);
  });

  it("refuses empty and non-object specs", () => {
    expectProblem(problemsOf(""), "", "spec is empty");
    expectProblem(problemsOf("- a\n- b\n"), "", "must be object");
    expectProblem(problemsOf({ pipeline: { name: "p", tasks: [] } }), "/pipeline/tasks", "must NOT have fewer than 1 items");
  });

  it("refuses non-finite numbers from YAML", () => {
    const s = baseSpec();
    const yaml = toYaml(s).replace("default: 0.01", "default: .inf");
    expect(yaml).toContain(".inf");
    const problems = problemsOf(yaml);
    expect(problems.some((p) => p.path.startsWith("/pipeline/params/learning_rate/default"))).toBe(true);
  });
});

// ---- property tests --------------------------------------------------------------------------

/** Random DAG: task i may depend only on tasks before it. */
const dagArb = fc.integer({ min: 1, max: 25 }).chain((n) =>
  fc.tuple(
    fc.constant(n),
    fc.array(fc.array(fc.boolean(), { minLength: n, maxLength: n }), { minLength: n, maxLength: n }),
  ).map(([count, matrix]) =>
    Array.from({ length: count }, (_, i) => ({
      id: `t${i}`,
      command: "true",
      depends_on: Array.from({ length: i }, (_, j) => j).filter((j) => matrix[i]![j]).map((j) => `t${j}`),
    })),
  ),
);

describe("property: DAG validation", () => {
  it("accepts every DAG and topologicalOrder respects every edge", () => {
    fc.assert(
      fc.property(dagArb, fc.boolean(), (tasks, shuffle) => {
        const listed = shuffle ? [...tasks].reverse() : tasks;
        const spec = parsePipelineSpec({ pipeline: { name: "dag", tasks: listed } });
        const order = topologicalOrder(spec);
        expect([...order].sort()).toEqual(tasks.map((t) => t.id).sort());
        const pos = new Map(order.map((id, i) => [id, i]));
        for (const t of tasks) for (const d of t.depends_on) expect(pos.get(d)!).toBeLessThan(pos.get(t.id)!);
        expect(roots(spec)).toEqual(listed.filter((t) => t.depends_on.length === 0).map((t) => t.id));
      }),
      { numRuns: 200 },
    );
  });

  it("refuses a DAG plus one back edge, naming a cycle made of real edges", () => {
    fc.assert(
      fc.property(
        dagArb.filter((tasks) => tasks.length >= 1),
        fc.nat(),
        fc.nat(),
        (tasks, x, y) => {
          // Back edge from an earlier task to a later (or the same) one along an existing path.
          const to = x % tasks.length;
          const from = to + (y % (tasks.length - to)); // from >= to
          // Make sure a path from `from` down to `to` exists: chain it explicitly.
          const withPath = tasks.map((t, i) => (i > to && i <= from && !t.depends_on.includes(`t${i - 1}`) ? { ...t, depends_on: [...t.depends_on, `t${i - 1}`] } : t));
          withPath[to] = { ...withPath[to]!, depends_on: [...withPath[to]!.depends_on, `t${from}`] };
          const problems = problemsOf({ pipeline: { name: "cyc", tasks: withPath } });
          const cycles = problems.filter((p) => p.message.startsWith("cycle: "));
          expect(cycles.length).toBeGreaterThanOrEqual(1);
          expect(problems.length).toBe(cycles.length);
          const deps = new Map(withPath.map((t) => [t.id, new Set(t.depends_on)]));
          for (const c of cycles) {
            const ids = c.message.slice("cycle: ".length).split(" -> ");
            expect(ids[0]).toBe(ids[ids.length - 1]);
            for (let i = 0; i + 1 < ids.length; i++) expect(deps.get(ids[i]!)!.has(ids[i + 1]!)).toBe(true);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("hashes the same regardless of key order", () => {
    const shuffleKeys = (value: unknown, rnd: () => number): unknown => {
      if (Array.isArray(value)) return value.map((v) => shuffleKeys(v, rnd));
      if (value !== null && typeof value === "object") {
        const entries = Object.entries(value);
        for (let i = entries.length - 1; i > 0; i--) {
          const j = Math.floor(rnd() * (i + 1));
          [entries[i], entries[j]] = [entries[j]!, entries[i]!];
        }
        return Object.fromEntries(entries.map(([k, v]) => [k, shuffleKeys(v, rnd)]));
      }
      return value;
    };
    const reference = contentHash(parsePipelineSpec(baseSpec()));
    fc.assert(
      fc.property(fc.integer(), (seed) => {
        let s = seed >>> 0;
        const rnd = () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
        const shuffled = shuffleKeys(baseSpec(), rnd) as object;
        expect(contentHash(parsePipelineSpec(shuffled))).toBe(reference);
        expect(contentHash(parsePipelineSpec(toYaml(shuffled)))).toBe(reference);
      }),
      { numRuns: 100 },
    );
  });
});

