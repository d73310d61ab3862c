import type { ComparisonNode, ComparisonOperator, FilterEntity, FilterNode, FilterValue } from "./filter-ast.js";
import { describeToken, syntaxError, tokenize, type Token } from "./filter-lexer.js";
import { ATTRIBUTE_ALIASES, checkScalar, ENTITY_ALIASES, isValidKey, ruleFor, termName, type TermRule } from "./filter-rules.js";

/**
 * Recursive-descent parser for the run filter language:
 *
 * ```
 * filter     := [ orExpr ] EOF
 * orExpr     := andExpr { OR andExpr }
 * andExpr    := primary { AND primary }
 * primary    := "(" orExpr ")" | comparison
 * comparison := identifier operator ( literal | "(" literal { "," literal } ")" )
 * identifier := entity "." key | attribute        -- entity: params|tags|metrics|attributes (+ aliases)
 * key        := bare-word-rest | `quoted` | "quoted"  -- quoted form directly after the dot
 * operator   := = | != | < | > | <= | >= | LIKE | ILIKE | IN | NOT IN
 * ```
 *
 * Keywords are case-insensitive. Type errors (a number for a param, LIKE on a metric) are reported
 * here, with their position, rather than at compile time.
 */

/** Parenthesis nesting allowed; bounds recursion so hostile input cannot overflow the stack. */
export const MAX_FILTER_DEPTH = 64;

/** Comparisons allowed in one filter; each metric term costs one metric-store query. */
export const MAX_FILTER_TERMS = 100;

const KEYWORDS = new Set(["and", "or", "not", "in", "like", "ilike", "asc", "desc"]);
const SYMBOL_OPERATORS = new Set<ComparisonOperator>(["=", "!=", "<", ">", "<=", ">="]);
const OPERATOR_LIST = "=, !=, <, >, <=, >=, LIKE, ILIKE, IN or NOT IN";
const IDENTIFIER_EXPECTED = "an identifier such as params.lr, metrics.loss, tags.team or attributes.status";

/** Token cursor shared by the filter and orderBy parsers. */
export class TokenCursor {
  private index = 0;

  constructor(
    private readonly tokens: readonly Token[],
    /** Input field named in errors: `filter`, `orderBy[2]`. */
    readonly field: string,
  ) {}

  peek(): Token {
    return this.tokens[this.index];
  }

  next(): Token {
    const token = this.tokens[this.index];
    if (token.kind !== "eof") this.index += 1;
    return token;
  }

  /** True when the next token is the bare keyword `keyword` (any case). */
  atKeyword(keyword: string): boolean {
    const token = this.peek();
    return token.kind === "word" && token.text.toLowerCase() === keyword;
  }

  fail(expected: string, token: Token = this.peek(), hint?: string): never {
    throw syntaxError(this.field, expected, token.start, describeToken(token), hint);
  }
}

/** A parsed identifier with the offset it started at. */
export interface ParsedIdentifier {
  readonly entity: FilterEntity;
  readonly key: string;
  readonly start: number;
}

/**
 * Parses `params.lr`, ``tags.`my key` ``, `metrics."val loss"`, `attributes.run_name` or a bare
 * attribute (`status`), normalising aliases. Shared by the orderBy parser.
 */
export function parseIdentifier(cursor: TokenCursor): ParsedIdentifier {
  const token = cursor.peek();
  if (token.kind !== "word" || KEYWORDS.has(token.text.toLowerCase())) cursor.fail(IDENTIFIER_EXPECTED);
  cursor.next();
  const dot = token.text.indexOf(".");
  if (dot === -1) {
    // MLflow reads an identifier without a prefix as an attribute.
    const attribute = ATTRIBUTE_ALIASES.get(token.text.toLowerCase());
    if (attribute === undefined) cursor.fail(IDENTIFIER_EXPECTED, token, "a name without a prefix must be a run attribute");
    return { entity: "attributes", key: attribute, start: token.start };
  }
  const prefix = token.text.slice(0, dot);
  const entity = ENTITY_ALIASES.get(prefix.toLowerCase());
  if (entity === undefined) {
    throw syntaxError(cursor.field, "params., tags., metrics. or attributes.", token.start, JSON.stringify(`${prefix}.`));
  }
  let key = token.text.slice(dot + 1);
  let keyStart = token.start + dot + 1;
  let keyText = JSON.stringify(key);
  if (key === "") {
    const quoted = cursor.peek();
    const isQuotedKey = quoted.kind === "quotedKey" || (quoted.kind === "string" && quoted.quote === '"');
    if (!isQuotedKey || quoted.start !== token.end) {
      throw syntaxError(cursor.field, `a key after "${token.text}" (quote a key with spaces in backticks or double quotes)`, token.end, describeToken(quoted));
    }
    cursor.next();
    key = quoted.value;
    keyStart = quoted.start;
    keyText = JSON.stringify(quoted.text);
  }
  if (entity === "attributes") {
    const attribute = ATTRIBUTE_ALIASES.get(key.toLowerCase());
    if (attribute === undefined) {
      throw syntaxError(cursor.field, `an attribute (${[...ATTRIBUTE_ALIASES.keys()].join(", ")})`, keyStart, keyText);
    }
    return { entity, key: attribute, start: token.start };
  }
  if (!isValidKey(key)) {
    throw syntaxError(cursor.field, "a key of 1 to 250 letters, digits, spaces or _ . - /", keyStart, keyText);
  }
  return { entity, key, start: token.start };
}

/** Options of {@link parseFilter}. */
export interface ParseFilterOptions {
  /** Input field named in errors (default `filter`). */
  readonly field?: string;
}

/**
 * Parses a run-search filter. Returns null for an empty (or all-whitespace) filter, which
 * matches every run. Throws DomainError("BAD_USER_INPUT", "filter: expected … at position N, found …",
 * "filter") on malformed input; the error's `details` carry `position`, `expected` and `found`.
 */
export function parseFilter(input: string, options: ParseFilterOptions = {}): FilterNode | null {
  const field = options.field ?? "filter";
  const cursor = new TokenCursor(tokenize(input, field), field);
  if (cursor.peek().kind === "eof") return null;
  const parser = new FilterParser(cursor);
  const node = parser.parseOr(0);
  if (cursor.peek().kind !== "eof") cursor.fail("AND, OR or end of input");
  return node;
}

class FilterParser {
  private terms = 0;

  constructor(private readonly cursor: TokenCursor) {}

  parseOr(depth: number): FilterNode {
    const operands = [this.parseAnd(depth)];
    while (this.cursor.atKeyword("or")) {
      this.cursor.next();
      operands.push(this.parseAnd(depth));
    }
    return operands.length === 1 ? operands[0] : { kind: "or", operands };
  }

  private parseAnd(depth: number): FilterNode {
    const operands = [this.parsePrimary(depth)];
    while (this.cursor.atKeyword("and")) {
      this.cursor.next();
      operands.push(this.parsePrimary(depth));
    }
    return operands.length === 1 ? operands[0] : { kind: "and", operands };
  }

  private parsePrimary(depth: number): FilterNode {
    const open = this.cursor.peek();
    if (open.kind !== "lparen") return this.parseComparison();
    if (depth >= MAX_FILTER_DEPTH) this.cursor.fail(`at most ${MAX_FILTER_DEPTH} nested parentheses`);
    this.cursor.next();
    const node = this.parseOr(depth + 1);
    if (this.cursor.peek().kind !== "rparen") this.cursor.fail('AND, OR or ")"', undefined, `the "(" at position ${open.start + 1} is not closed`);
    this.cursor.next();
    return node;
  }

  private parseComparison(): ComparisonNode {
    const first = this.cursor.peek();
    if (first.kind !== "word") this.cursor.fail(`${IDENTIFIER_EXPECTED} or "("`);
    this.terms += 1;
    if (this.terms > MAX_FILTER_TERMS) this.cursor.fail(`at most ${MAX_FILTER_TERMS} comparisons`);
    const { entity, key } = parseIdentifier(this.cursor);
    const name = termName(entity, key);
    const opToken = this.cursor.peek();
    const op = this.parseOperator();
    // ruleFor is defined here: parseIdentifier only returns known attributes.
    const rule = ruleFor(entity, key) as TermRule;
    if (!rule.operators.includes(op)) {
      throw syntaxError(this.cursor.field, `one of ${rule.operators.join(", ")} for ${name}`, opToken.start, op);
    }
    const value = op === "IN" || op === "NOT IN" ? this.parseList(rule, name) : this.parseLiteral(rule, name);
    return { kind: "comparison", entity, key, op, value };
  }

  private parseOperator(): ComparisonOperator {
    const token = this.cursor.peek();
    if (token.kind === "operator") {
      if (!SYMBOL_OPERATORS.has(token.text as ComparisonOperator)) this.cursor.fail(`a comparison operator (${OPERATOR_LIST})`);
      this.cursor.next();
      return token.text as ComparisonOperator;
    }
    if (token.kind === "word") {
      const word = token.text.toLowerCase();
      if (word === "like" || word === "ilike" || word === "in") {
        this.cursor.next();
        return word.toUpperCase() as ComparisonOperator;
      }
      if (word === "not") {
        this.cursor.next();
        if (!this.cursor.atKeyword("in")) this.cursor.fail('IN after "NOT"');
        this.cursor.next();
        return "NOT IN";
      }
    }
    return this.cursor.fail(`a comparison operator (${OPERATOR_LIST})`);
  }

  private parseList(rule: TermRule, name: string): FilterValue {
    if (this.cursor.peek().kind !== "lparen") this.cursor.fail('"(" to start the list of values');
    this.cursor.next();
    const values: string[] = [];
    for (;;) {
      const value = this.parseLiteral(rule, name);
      // Only string-typed terms allow IN (see filter-rules), so every element is a string.
      values.push(value as string);
      const token = this.cursor.peek();
      if (token.kind === "rparen") {
        this.cursor.next();
        return values;
      }
      if (token.kind !== "comma") this.cursor.fail('"," or ")" in the list of values');
      this.cursor.next();
    }
  }

  private parseLiteral(rule: TermRule, name: string): string | number {
    const token = this.cursor.peek();
    let value: string | number;
    if (token.kind === "string") value = token.value;
    else if (token.kind === "number") value = token.number as number;
    else return this.cursor.fail("a value");
    const expected = checkScalar(rule.valueKind, value);
    if (expected !== undefined) this.cursor.fail(`${expected} for ${name}`);
    this.cursor.next();
    return value;
  }
}
