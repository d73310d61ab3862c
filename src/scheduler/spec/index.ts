/** Pipeline spec: types, parsing/validation, hashing, graph helpers and parameter handling. */
export * from "./pipeline-spec.js";
export { parsePipelineSpec, parseSpecText, schemaProblems, MAX_SPEC_BYTES } from "./parse-spec.js";
export { semanticProblems } from "./validate-spec.js";
export { canonicalJson, contentHash } from "./content-hash.js";
export { topologicalOrder, roots, dependentsOf, findCycles, type DagNode, type DependencyCycle } from "./dag.js";
export { coerceParams, coerceParamValue, renderTemplate, renderString, templateReferences, type CoercionResult } from "./params.js";
export { invocationSizeProblem, resolveTaskInvocation, type TaskInvocation } from "./task-invocation.js";
