import { DomainError } from "../errors.js";

/**
 * Hand-written lexer for the run filter / orderBy language. It knows nothing of the grammar:
 * keywords (AND, OR, LIKE, IN, NOT, ASC, DESC) come out as `word` tokens and the parser matches
 * them case-insensitively, and any run of comparison characters comes out as one `operator` token
 * so that `==` or `=>` is reported as an unknown operator rather than as two odd tokens.
 */

export type TokenKind = "word" | "string" | "quotedKey" | "number" | "operator" | "lparen" | "rparen" | "comma" | "eof";

export interface Token {
  readonly kind: TokenKind;
  /** The source text of the token (with quotes, for strings and quoted keys). */
  readonly text: string;
  /** Decoded content: unquoted and unescaped for strings and quoted keys, the text otherwise. */
  readonly value: string;
  /** For `number` tokens, the parsed value. */
  readonly number?: number;
  /** For `string` tokens, which quote opened it (a double-quoted string may also be a key). */
  readonly quote?: "'" | '"';
  /** 0-based offset of the first character. */
  readonly start: number;
  /** 0-based offset just past the last character. */
  readonly end: number;
}

/**
 * Builds the BAD_USER_INPUT error every malformed filter or orderBy yields. Positions are
 * 1-based columns because that is what people count in an error message.
 */
export function syntaxError(field: string, expected: string, offset: number, found?: string, hint?: string): DomainError {
  const position = offset + 1;
  const suffix = (found === undefined ? "" : `, found ${found}`) + (hint === undefined ? "" : ` (${hint})`);
  return new DomainError("BAD_USER_INPUT", `${field}: expected ${expected} at position ${position}${suffix}`, field, {
    position,
    expected,
    ...(found === undefined ? {} : { found }),
  });
}

/** Describes a token for "found …" in error messages. */
export function describeToken(token: Token): string {
  if (token.kind === "eof") return "end of input";
  return JSON.stringify(token.text.length > 40 ? `${token.text.slice(0, 40)}…` : token.text);
}

const isDigit = (c: string): boolean => c >= "0" && c <= "9";
const isLetter = (c: string): boolean => (c >= "a" && c <= "z") || (c >= "A" && c <= "Z");
const isWhitespace = (c: string): boolean => c === " " || c === "\t" || c === "\n" || c === "\r";

/** Characters that may start a bare word (an identifier or a keyword). */
export const isWordStart = (c: string): boolean => isLetter(c) || c === "_";

/**
 * Characters that may continue a bare word. They are the key characters MLflow allows minus the
 * space, so `params.my-key/v2.1` is one word; a key with a space must be quoted.
 */
export const isWordPart = (c: string): boolean =>
  isLetter(c) || isDigit(c) || c === "_" || c === "." || c === "-" || c === "/";

const OPERATOR_CHARS = "=!<>~";

/** Splits `input` into tokens, ending with one `eof` token; throws DomainError on a bad character. */
export function tokenize(input: string, field: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  const n = input.length;

  const readQuoted = (quote: string): { value: string; end: number } => {
    const start = i;
    let value = "";
    let j = i + 1;
    for (;;) {
      // Point at the opening quote: the end of input says nothing about where the mistake is.
      if (j >= n) throw syntaxError(field, `a closing ${quote} for the ${quote === "`" ? "key" : "string"}`, start, "end of input");
      const c = input[j];
      if (c === quote) {
        // A doubled quote is an escaped quote, as in SQL.
        if (input[j + 1] === quote) {
          value += quote;
          j += 2;
          continue;
        }
        return { value, end: j + 1 };
      }
      value += c;
      j += 1;
    }
  };

  const readNumber = (): Token => {
    const start = i;
    let j = i;
    if (input[j] === "-" || input[j] === "+") j += 1;
    let digits = 0;
    while (j < n && isDigit(input[j])) {
      j += 1;
      digits += 1;
    }
    if (input[j] === ".") {
      j += 1;
      while (j < n && isDigit(input[j])) {
        j += 1;
        digits += 1;
      }
    }
    if (digits === 0) throw syntaxError(field, "a digit", j, describeChar(input, j));
    if (input[j] === "e" || input[j] === "E") {
      j += 1;
      if (input[j] === "-" || input[j] === "+") j += 1;
      if (!isDigit(input[j] ?? "")) throw syntaxError(field, "exponent digits", j, describeChar(input, j));
      while (j < n && isDigit(input[j])) j += 1;
    }
    const text = input.slice(start, j);
    const parsed = Number(text);
    if (!Number.isFinite(parsed)) throw syntaxError(field, "a number within the float64 range", start, JSON.stringify(text));
    // -0 would print as "0" and compare equal to 0 anyway; keep one zero.
    return { kind: "number", text, value: text, number: parsed === 0 ? 0 : parsed, start, end: j };
  };

  while (i < n) {
    const c = input[i];
    if (isWhitespace(c)) {
      i += 1;
      continue;
    }
    const start = i;
    if (c === "(" || c === ")" || c === ",") {
      tokens.push({ kind: c === "(" ? "lparen" : c === ")" ? "rparen" : "comma", text: c, value: c, start, end: i + 1 });
      i += 1;
    } else if (c === "'" || c === '"') {
      const { value, end } = readQuoted(c);
      tokens.push({ kind: "string", text: input.slice(start, end), value, quote: c, start, end });
      i = end;
    } else if (c === "`") {
      const { value, end } = readQuoted(c);
      tokens.push({ kind: "quotedKey", text: input.slice(start, end), value, start, end });
      i = end;
    } else if (isDigit(c) || ((c === "-" || c === "+" || c === ".") && startsNumber(input, i))) {
      const token = readNumber();
      tokens.push(token);
      i = token.end;
    } else if (isWordStart(c)) {
      let j = i + 1;
      while (j < n && isWordPart(input[j])) j += 1;
      const text = input.slice(start, j);
      tokens.push({ kind: "word", text, value: text, start, end: j });
      i = j;
    } else if (OPERATOR_CHARS.includes(c)) {
      let j = i + 1;
      while (j < n && OPERATOR_CHARS.includes(input[j])) j += 1;
      const text = input.slice(start, j);
      tokens.push({ kind: "operator", text, value: text, start, end: j });
      i = j;
    } else {
      throw syntaxError(field, "an identifier, operator, value, parenthesis or comma", i, describeChar(input, i));
    }
  }
  tokens.push({ kind: "eof", text: "", value: "", start: n, end: n });
  return tokens;
}

/** True when a sign or dot at `i` begins a number (`-1`, `+.5`, `.5`). */
function startsNumber(input: string, i: number): boolean {
  let j = i;
  if (input[j] === "-" || input[j] === "+") j += 1;
  if (isDigit(input[j] ?? "")) return true;
  return input[j] === "." && isDigit(input[j + 1] ?? "");
}

function describeChar(input: string, i: number): string {
  return i >= input.length ? "end of input" : JSON.stringify(input[i]);
}
