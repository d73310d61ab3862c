import { DomainError } from "../../../src/services/errors.js";
import { coerceParams, parsePipelineSpec, renderTemplate, resolveTaskInvocation } from "../../../src/scheduler/spec/index.js";

const spec = parsePipelineSpec({
  pipeline: {
    name: "p",
    params: {
      learning_rate: { type: "float", default: 0.01 },
      epochs: { type: "int", default: 3 },
      dataset: { type: "string" },
      use_amp: { type: "bool", default: false },
    },
    tasks: [
      { id: "prep", operator: "python", command: ["prepare.py", "--dataset", "{{dataset}}"], env: { DS: "{{ dataset }}", N: 1 } },
      { id: "train", operator: "python", command: ["python3", "train.py"], params: { lr: "{{learning_rate}}", tag: "lr={{learning_rate}}", nested: ["{{epochs}}"] } },
      { id: "eval", command: "echo {{epochs}} > out.txt" },
      { id: "raw", operator: "command", command: ["/bin/true", "{{use_amp}}"] },
    ],
  },
});

function errorOf(fn: () => unknown): DomainError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(DomainError);
    return e as DomainError;
  }
  throw new Error("expected a DomainError");
}

describe("coerceParams", () => {
  it("fills defaults and coerces strings", () => {
    expect(coerceParams(spec, { dataset: "churn", epochs: "10", learning_rate: "1e-3", use_amp: "true" })).toEqual({
      dataset: "churn",
      epochs: 10,
      learning_rate: 0.001,
      use_amp: true,
    });
    expect(coerceParams(spec, { dataset: 2024 })).toEqual({ dataset: "2024", epochs: 3, learning_rate: 0.01, use_amp: false });
    expect(Object.keys(coerceParams(spec, { dataset: "x" }))).toEqual(["dataset", "epochs", "learning_rate", "use_amp"]);
  });

  it("refuses missing required, unknown and ill-typed params, naming each", () => {
    const err = errorOf(() => coerceParams(spec, { epochs: "2.5", learning_rate: "fast", use_amp: "maybe", lr: 1 }));
    expect(err.code).toBe("BAD_USER_INPUT");
    const errors = (err.details as { errors: { path: string; message: string }[] }).errors;
    expect(errors.map((e) => e.path).sort()).toEqual(["params.dataset", "params.epochs", "params.learning_rate", "params.lr", "params.use_amp"]);
    expect(errors.find((e) => e.path === "params.dataset")!.message).toContain("required");
    expect(errors.find((e) => e.path === "params.lr")!.message).toContain("unknown parameter");
    expect(err.field).toBe(errors[0]!.path);
    expect(err.message).toBe(`${errors[0]!.path}: ${errors[0]!.message}`);
  });

  it("refuses non-object input and treats null/undefined as none supplied", () => {
    expect(errorOf(() => coerceParams(spec, [1])).field).toBe("params");
    expect(errorOf(() => coerceParams(spec, undefined)).field).toBe("params.dataset");
    expect(coerceParams(spec, { dataset: "d", epochs: null })).toMatchObject({ epochs: 3 });
  });

  it("refuses unsafe integers and non-finite floats", () => {
    expect(errorOf(() => coerceParams(spec, { dataset: "d", epochs: "99999999999999999999" })).field).toBe("params.epochs");
    expect(errorOf(() => coerceParams(spec, { dataset: "d", learning_rate: "Infinity" })).field).toBe("params.learning_rate");
  });
});

describe("renderTemplate and resolveTaskInvocation", () => {
  const params = coerceParams(spec, { dataset: "churn", epochs: 5 });

  it("keeps the type of a whole-string placeholder and interpolates inside longer strings", () => {
    expect(renderTemplate({ lr: "{{learning_rate}}", tag: "lr={{ learning_rate }}", list: ["{{epochs}}", 1, null] }, params)).toEqual({
      lr: 0.01,
      tag: "lr=0.01",
      list: [5, 1, null],
    });
  });

  it("throws for an unknown name", () => {
    expect(errorOf(() => renderTemplate("{{nope}}", params)).field).toBe("params.nope");
  });

  it("builds argv per operator", () => {
    const [prep, train, evalTask, raw] = spec.pipeline.tasks;
    expect(resolveTaskInvocation(prep!, params)).toEqual({ argv: ["python3", "prepare.py", "--dataset", "churn"], env: { DS: "churn", N: "1" }, params: {} });
    expect(resolveTaskInvocation(train!, params)).toEqual({
      argv: ["python3", "train.py"],
      env: {},
      params: { lr: 0.01, nested: [5], tag: "lr=0.01" },
    });
    expect(resolveTaskInvocation(evalTask!, params).argv).toEqual(["sh", "-c", "echo 5 > out.txt"]);
    expect(resolveTaskInvocation(raw!, params).argv).toEqual(["/bin/true", "false"]);
  });
});
