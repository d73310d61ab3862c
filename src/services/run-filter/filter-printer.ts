import type { FilterNode, FilterValue, OrderByTerm } from "./filter-ast.js";
import { isWordPart } from "./filter-lexer.js";

/**
 * Prints an AST back to filter text that {@link parseFilter} reads as the same AST: canonical
 * spelling, single-quoted strings, keys quoted in backticks only when they need it, and
 * parentheses exactly where the tree has a nested group. Useful to echo a normalised filter back
 * to users and to store saved searches.
 */
export function printFilter(node: FilterNode | null): string {
  if (node === null) return "";
  switch (node.kind) {
    case "comparison":
      return `${printIdentifier(node.entity, node.key)} ${node.op} ${printValue(node.value)}`;
    case "and":
    case "or":
      // A nested AND/OR is always its own group in the AST (the parser flattens chains), so it
      // is always parenthesised; that also keeps `a OR b` inside an AND correct.
      return node.operands.map((o) => (o.kind === "comparison" ? printFilter(o) : `(${printFilter(o)})`)).join(node.kind === "and" ? " AND " : " OR ");
  }
}

/** Prints one orderBy term, e.g. ``metrics.`val loss` DESC``. */
export function printOrderByTerm(term: OrderByTerm): string {
  return `${printIdentifier(term.entity, term.key)} ${term.direction}`;
}

function printIdentifier(entity: string, key: string): string {
  const bare = key.length > 0 && [...key].every(isWordPart);
  return bare ? `${entity}.${key}` : `${entity}.\`${key.replaceAll("`", "``")}\``;
}

function printValue(value: FilterValue): string {
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return quote(value);
  return `(${value.map(quote).join(", ")})`;
}

function quote(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}
