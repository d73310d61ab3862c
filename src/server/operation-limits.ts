import {
  GraphQLError,
  Kind,
  getNamedType,
  isLeafType,
  isListType,
  getNullableType,
  type DocumentNode,
  type FragmentDefinitionNode,
  type GraphQLSchema,
  type OperationDefinitionNode,
  type SelectionSetNode,
  visit,
} from "graphql";
import { getComplexity, type ComplexityEstimator } from "graphql-query-complexity";
import type { Config } from "../config.js";
import { Column } from "../resolvers/types/column-scalars.js";

/**
 * Lists not paged by an argument but known to be long, weighted by (about) their typical length:
 * a pipeline run holds up to 10,000 task runs, where the default list weight assumes 10.
 */
const LONG_LISTS: Record<string, number> = { "PipelineRun.tasks": 100 };

/** Length of a list argument: a plain list, or a column scalar's parsed value (logMetricColumns' keys). */
function listLength(value: unknown): number | undefined {
  if (Array.isArray(value)) return value.length;
  return value instanceof Column ? value.items.length : undefined;
}

/**
 * Lists are weighted by the page they can return: `first`/`maxPoints`/`limit`/`keys` when given,
 * else a default; a connection's page multiplies everything below it. A list of scalars (log
 * lines) costs by its length too: `logs(limit: 10000)` under every task is not free.
 */
const pageWeightedEstimator: ComplexityEstimator = ({ args, childComplexity, field, type }) => {
  const requested =
    typeof args.first === "number"
      ? args.first
      : typeof args.maxPoints === "number"
        ? Math.ceil(args.maxPoints / 100)
        : typeof args.limit === "number"
          ? Math.ceil(args.limit / 100)
          : (listLength(args.keys) ?? listLength(args.runIds));
  const isList = isListType(getNullableType(field.type));
  const isConnection = getNamedType(field.type).name.endsWith("Connection");
  let multiplier = requested ?? LONG_LISTS[`${type.name}.${field.name}`] ?? (isConnection ? 50 : isList ? 10 : 1);
  // A single object built from a list argument (compareRuns(runIds)) holds lists that the
  // default weight already counts ten-fold; weigh the argument's length on top of that only.
  if (!isList && !isConnection && requested !== undefined && typeof args.first !== "number") multiplier = Math.ceil(requested / 10);
  const perItem = isList && isLeafType(getNamedType(field.type)) ? Math.max(1, childComplexity) : childComplexity;
  return 1 + perItem * Math.max(1, multiplier);
};

function limitError(message: string, code = "QUERY_TOO_COMPLEX"): GraphQLError {
  return new GraphQLError(message, { extensions: { code } });
}

/**
 * Depth of the deepest selection, following fragments (cycles are already refused by validation,
 * and guarded here too). Memoised per fragment: nested fragments spread twice at every level
 * would otherwise be walked 2^levels times.
 */
function depthOf(set: SelectionSetNode | undefined, fragments: Map<string, FragmentDefinitionNode>, seen: ReadonlySet<string>, memo = new Map<string, number>()): number {
  if (!set) return 0;
  let max = 0;
  for (const sel of set.selections) {
    if (sel.kind === Kind.FIELD) max = Math.max(max, sel.selectionSet ? 1 + depthOf(sel.selectionSet, fragments, seen, memo) : 1);
    else if (sel.kind === Kind.INLINE_FRAGMENT) max = Math.max(max, depthOf(sel.selectionSet, fragments, seen, memo));
    else if (sel.kind === Kind.FRAGMENT_SPREAD && !seen.has(sel.name.value)) {
      const name = sel.name.value;
      if (!memo.has(name)) memo.set(name, depthOf(fragments.get(name)?.selectionSet, fragments, new Set([...seen, name]), memo));
      max = Math.max(max, memo.get(name)!);
    }
  }
  return max;
}

/**
 * Aliased fields the operation executes: a fragment's aliases count once per spread (a fragment
 * of 25 aliases spread 4 times runs 100). Memoised per fragment, so nested spreads cost linear
 * time even when the count they add up to is huge (and refused).
 */
function countAliases(operation: OperationDefinitionNode, fragments: Map<string, FragmentDefinitionNode>): number {
  const perFragment = new Map<string, number>();
  const count = (set: SelectionSetNode | undefined, seen: ReadonlySet<string>): number => {
    let n = 0;
    for (const sel of set?.selections ?? []) {
      if (sel.kind === Kind.FIELD) n += (sel.alias ? 1 : 0) + count(sel.selectionSet, seen);
      else if (sel.kind === Kind.INLINE_FRAGMENT) n += count(sel.selectionSet, seen);
      else if (!seen.has(sel.name.value)) {
        const name = sel.name.value;
        if (!perFragment.has(name)) perFragment.set(name, count(fragments.get(name)?.selectionSet, new Set([...seen, name])));
        n += perFragment.get(name)!;
      }
    }
    return n;
  };
  return count(operation.selectionSet, new Set());
}

/**
 * Root fields the operation executes (by response name), through inline fragments and spreads.
 * A set of names: each fragment is collected once however often it is spread (walking every
 * spread would take 2^levels steps for fragments spread twice at each level).
 */
function rootFieldCount(operation: OperationDefinitionNode, fragments: Map<string, FragmentDefinitionNode>): number {
  const names = new Set<string>();
  const visited = new Set<string>();
  const collect = (set: SelectionSetNode | undefined) => {
    for (const sel of set?.selections ?? []) {
      if (sel.kind === Kind.FIELD) names.add(sel.alias?.value ?? sel.name.value);
      else if (sel.kind === Kind.INLINE_FRAGMENT) collect(sel.selectionSet);
      else if (!visited.has(sel.name.value)) {
        visited.add(sel.name.value);
        collect(fragments.get(sel.name.value)?.selectionSet);
      }
    }
  };
  collect(operation.selectionSet);
  return names.size;
}

/**
 * Finds the first string containing NUL in variables (PostgreSQL text cannot hold it). The path is
 * built only on the way back from a hit: a 10,000-element column costs no string building.
 */
function nulPath(value: unknown): (string | number)[] | null {
  if (typeof value === "string") return value.includes("\u0000") ? [] : null;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const item = value[i];
      if (typeof item === "number" || typeof item === "boolean" || item === null) continue;
      if (typeof item === "string") {
        if (item.includes("\u0000")) return [i];
        continue;
      }
      const found = nulPath(item);
      if (found) return [i, ...found];
    }
  } else if (value && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      const found = nulPath(v);
      if (found) return [k, ...found];
    }
  }
  return null;
}

function pathText(name: string, path: (string | number)[]): string {
  return name + path.map((p) => (typeof p === "number" ? `[${p}]` : `.${p}`)).join("");
}

/**
 * NUL characters are refused anywhere in an operation's strings, naming where: no store can keep
 * them, and catching them here means no resolver ever half-processes one.
 */
function nulVariableError(variables: Record<string, unknown> | undefined): GraphQLError | null {
  for (const [name, value] of Object.entries(variables ?? {})) {
    const found = nulPath(value);
    if (found) {
      const field = pathText(name, found);
      return new GraphQLError(`${field}: must not contain NUL characters`, { extensions: { code: "BAD_USER_INPUT", field } });
    }
  }
  return null;
}

function hasNulLiteral(document: DocumentNode): boolean {
  let found = false;
  visit(document, {
    StringValue(node) {
      if (node.value.includes("\u0000")) found = true;
    },
  });
  return found;
}

/** What an operation's text alone decides: literal NULs, depth, aliases and root fields. */
interface StaticVerdict {
  nulLiteral: boolean;
  limitMessages: string[];
}

/**
 * Verdicts per parsed document. Apollo hands the same DocumentNode to every request with the same
 * query text (its document cache), so an executor's claim loop or a chart's refresh pays for these
 * walks once; WebSocket operations are parsed anew and simply miss. Complexity also depends on
 * variables, so its cache key adds the variables' shape (see complexityKey).
 */
const staticVerdicts = new WeakMap<DocumentNode, Map<string, StaticVerdict>>();
const complexities = new WeakMap<DocumentNode, Map<string, number>>();
const MAX_CACHED_PER_DOCUMENT = 1_000;

/** The cached value, or `compute()`'s; an undefined result (nothing measured) is not cached. */
function cached<V, R extends V | undefined>(cache: WeakMap<DocumentNode, Map<string, V>>, document: DocumentNode, key: string, compute: () => R): V | R {
  let byKey = cache.get(document);
  if (!byKey) cache.set(document, (byKey = new Map()));
  let value = byKey.get(key);
  if (value === undefined) {
    const computed = compute();
    if (computed === undefined) return computed;
    value = computed as V;
    if (byKey.size >= MAX_CACHED_PER_DOCUMENT) byKey.clear();
    byKey.set(key, value);
  }
  return value;
}

/**
 * The part of the variables that complexity can depend on: numbers and booleans by value (page
 * sizes, @include/@skip), lists by length (keys, runIds), strings not at all (ids, names).
 */
function valueShape(value: unknown): unknown {
  if (Array.isArray(value)) return { n: value.length };
  if (value === null || value === undefined) return null;
  if (typeof value === "number" || typeof value === "boolean") return value;
  if (typeof value === "object") return Object.entries(value).map(([k, v]) => [k, valueShape(v)]);
  return "s";
}

/**
 * Cache key of an operation's complexity: its name and the shape of the variables it declares
 * (undeclared ones are ignored by graphql-js, so they must not be able to steer the key), encoded
 * as JSON so no crafted name can make two different shapes collide.
 */
function complexityKey(operationName: string | null | undefined, operation: OperationDefinitionNode, variables: Record<string, unknown> | undefined): string {
  const declared = (operation.variableDefinitions ?? []).map((d) => d.variable.name.value);
  return JSON.stringify([operationName ?? null, declared.map((name) => [name, valueShape(variables?.[name])])]);
}

/**
 * Checks one operation against the configured limits: depth, aliases, root fields and complexity.
 * Used for HTTP (an Apollo plugin) and WebSocket (graphql-ws onSubscribe) alike.
 */
export function checkOperationLimits(
  schema: GraphQLSchema,
  document: DocumentNode,
  operationName: string | null | undefined,
  variables: Record<string, unknown> | undefined,
  limits: Config["limits"],
): GraphQLError[] {
  const operations = document.definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
  const operation = operationName ? operations.find((o) => o.name?.value === operationName) : operations[0];
  if (!operation) return [];
  const nul = nulVariableError(variables);
  if (nul) return [nul];
  const verdict = cached(staticVerdicts, document, `${operationName ?? ""}|${limits.maxDepth}|${limits.maxAliases}|${limits.maxRootFields}`, () => staticVerdict(document, operation, limits));
  if (verdict.nulLiteral) return [new GraphQLError("a string literal contains a NUL character", { extensions: { code: "BAD_USER_INPUT" } })];
  if (verdict.limitMessages.length) return verdict.limitMessages.map((m) => limitError(m));
  if (limits.maxComplexity) {
    const complexity = cached(complexities, document, complexityKey(operationName, operation, variables), () => {
      try {
        return getComplexity({ schema, query: document, operationName: operationName ?? undefined, variables: variables ?? {}, estimators: [pageWeightedEstimator] });
      } catch {
        // Bad variables: leave the error to graphql's own coercion, which names the variable.
        // Not cached: a later request of the same shape with good variables is measured anew.
        return undefined;
      }
    });
    if (complexity !== undefined && complexity > limits.maxComplexity) return [limitError(`query complexity ${complexity} exceeds the limit of ${limits.maxComplexity}; request smaller pages`)];
  }
  return [];
}

function staticVerdict(document: DocumentNode, operation: OperationDefinitionNode, limits: Config["limits"]): StaticVerdict {
  const fragments = new Map(document.definitions.filter((d): d is FragmentDefinitionNode => d.kind === Kind.FRAGMENT_DEFINITION).map((f) => [f.name.value, f]));
  const limitMessages: string[] = [];
  const depth = depthOf(operation.selectionSet, fragments, new Set());
  if (limits.maxDepth && depth > limits.maxDepth) limitMessages.push(`query depth ${depth} exceeds the limit of ${limits.maxDepth}`);
  const aliases = countAliases(operation, fragments);
  if (limits.maxAliases && aliases > limits.maxAliases) limitMessages.push(`${aliases} aliases exceed the limit of ${limits.maxAliases}`);
  const rootFields = rootFieldCount(operation, fragments);
  if (limits.maxRootFields && rootFields > limits.maxRootFields) limitMessages.push(`${rootFields} root fields exceed the limit of ${limits.maxRootFields}`);
  return { nulLiteral: hasNulLiteral(document), limitMessages };
}
