import { GraphQLError, GraphQLScalarType, Kind, type ValueNode } from "graphql";

/**
 * A column argument's value as resolvers receive it. Wrapped, not a bare array: type-graphql
 * rebuilds every array argument element by element (one call and one new array per column,
 * for scalars too), which was ~6 % of the server's main thread during columnar ingest; an object
 * of a scalar type is passed through as it is.
 */
export class Column<T> {
  constructor(readonly items: T[]) {}
}

/**
 * Column scalars for the columnar ingest form (`logMetricColumns`): a whole JSON array checked in
 * one tight loop. A plain `[Float!]!` list is coerced by graphql-js value by value (a path object
 * and a scalar call per element), which was the largest single cost of ingesting 1,000-point
 * batches. Element types are checked here; ranges (finite values, non-negative steps, key syntax)
 * are checked by the metric store, whose errors name the array and index, e.g. `values[3]`.
 */
function columnScalar<T>(name: string, description: string, element: string, accepts: (v: unknown) => v is T, fromLiteral: (node: ValueNode) => T | undefined) {
  const checked = (value: unknown): T[] => {
    if (!Array.isArray(value)) throw new GraphQLError(`${name}: expected a list of ${element}s`);
    for (let i = 0; i < value.length; i++) {
      if (!accepts(value[i])) throw new GraphQLError(`${name}: element ${i} is not ${element === "integer" ? "an" : "a"} ${element}: ${JSON.stringify(value[i]) ?? String(value[i])}`);
    }
    return value as T[];
  };
  return new GraphQLScalarType<Column<T>, T[]>({
    name,
    description,
    parseValue: (value) => new Column(checked(value)),
    parseLiteral(ast) {
      if (ast.kind !== Kind.LIST) throw new GraphQLError(`${name}: expected a list of ${element}s`);
      return new Column(
        ast.values.map((node, i) => {
          const v = fromLiteral(node);
          if (v === undefined) throw new GraphQLError(`${name}: element ${i} is not ${element === "integer" ? "an" : "a"} ${element}`);
          return v;
        }),
      );
    },
    serialize: (value) => checked(value instanceof Column ? value.items : value),
  });
}

export const FloatColumn = columnScalar<number>(
  "FloatColumn",
  "A list of numbers sent as one JSON array, e.g. [0.5, 0.25] (checked in one pass; faster than [Float!] for large batches).",
  "number",
  (v): v is number => typeof v === "number",
  (node) => (node.kind === Kind.FLOAT || node.kind === Kind.INT ? Number(node.value) : undefined),
);

export const SafeIntColumn = columnScalar<number>(
  "SafeIntColumn",
  "A list of integers within ±(2^53 - 1) sent as one JSON array, e.g. [0, 1, 2] (checked in one pass; faster than [SafeInt!] for large batches).",
  "integer",
  (v): v is number => Number.isSafeInteger(v),
  (node) => (node.kind === Kind.INT && Number.isSafeInteger(Number(node.value)) ? Number(node.value) : undefined),
);

export const StringColumn = columnScalar<string>(
  "StringColumn",
  'A list of strings sent as one JSON array, e.g. ["loss", "acc"] (checked in one pass; faster than [String!] for large batches).',
  "string",
  (v): v is string => typeof v === "string",
  (node) => (node.kind === Kind.STRING ? node.value : undefined),
);

/**
 * Output scalar for comparison matrices: rows of numbers (null where there is no value),
 * serialised as one JSON value instead of a GraphQL object per cell.
 */
export const FloatMatrix = new GraphQLScalarType<(number | null)[][], (number | null)[][]>({
  name: "FloatMatrix",
  description: "Rows of numbers, null where there is no value, e.g. [[0.5, null], [0.25, 0.1]] (an output of comparisons).",
  serialize(value) {
    if (!Array.isArray(value) || !value.every((row) => Array.isArray(row) && row.every((v) => v === null || typeof v === "number"))) {
      throw new GraphQLError("FloatMatrix: expected rows of numbers or nulls");
    }
    return value as (number | null)[][];
  },
  parseValue() {
    throw new GraphQLError("FloatMatrix is an output type");
  },
  parseLiteral() {
    throw new GraphQLError("FloatMatrix is an output type");
  },
});
