import { DomainError } from "../../../src/services/errors.js";
import { MAX_FILTER_DEPTH, MAX_FILTER_TERMS, parseFilter, printFilter, type ComparisonNode, type FilterNode } from "../../../src/services/run-filter/index.js";

const cmp = (entity: ComparisonNode["entity"], key: string, op: ComparisonNode["op"], value: ComparisonNode["value"]): ComparisonNode => ({
  kind: "comparison",
  entity,
  key,
  op,
  value,
});

/** Runs `parse` and returns the DomainError it throws (failing the test when it does not). */
function errorOf(input: string): DomainError {
  try {
    parseFilter(input);
  } catch (error) {
    expect(error).toBeInstanceOf(DomainError);
    return error as DomainError;
  }
  throw new Error(`expected ${JSON.stringify(input)} to be rejected`);
}

describe("parseFilter: happy paths", () => {
  it("returns null for an empty or blank filter", () => {
    expect(parseFilter("")).toBeNull();
    expect(parseFilter("  \n\t ")).toBeNull();
  });

  it("parses the README example with AND binding tighter than OR and parentheses kept as groups", () => {
    expect(parseFilter("params.lr = '0.01' and (tags.team = 'nlp' or attributes.status = 'FINISHED')")).toEqual<FilterNode>({
      kind: "and",
      operands: [
        cmp("params", "lr", "=", "0.01"),
        { kind: "or", operands: [cmp("tags", "team", "=", "nlp"), cmp("attributes", "status", "=", "FINISHED")] },
      ],
    });
  });

  it("gives AND precedence over OR without parentheses", () => {
    expect(parseFilter("params.a = '1' OR params.b = '2' AND params.c = '3' OR params.d = '4'")).toEqual<FilterNode>({
      kind: "or",
      operands: [
        cmp("params", "a", "=", "1"),
        { kind: "and", operands: [cmp("params", "b", "=", "2"), cmp("params", "c", "=", "3")] },
        cmp("params", "d", "=", "4"),
      ],
    });
  });

  it("lets parentheses override precedence and nest", () => {
    expect(parseFilter("(params.a = '1' OR params.b = '2') AND ((params.c = '3'))")).toEqual<FilterNode>({
      kind: "and",
      operands: [{ kind: "or", operands: [cmp("params", "a", "=", "1"), cmp("params", "b", "=", "2")] }, cmp("params", "c", "=", "3")],
    });
  });

  it("parses metric comparisons with every numeric operator and number form", () => {
    const cases: [string, ComparisonNode["op"], number][] = [
      ["metrics.val_loss < 0.3", "<", 0.3],
      ["metrics.val_loss<=-1", "<=", -1],
      ["metrics.val_loss > 1e3", ">", 1000],
      ["metrics.val_loss >= -2.5E-2", ">=", -0.025],
      ["metrics.val_loss = .5", "=", 0.5],
      ["metrics.val_loss != +7", "!=", 7],
      ["metrics.val_loss = -0", "=", 0],
    ];
    for (const [text, op, value] of cases) expect(parseFilter(text)).toEqual(cmp("metrics", "val_loss", op, value));
  });

  it("accepts MLflow's singular aliases and normalises them", () => {
    expect(parseFilter("param.lr = '1'")).toEqual(cmp("params", "lr", "=", "1"));
    expect(parseFilter("tag.team = 'x'")).toEqual(cmp("tags", "team", "=", "x"));
    expect(parseFilter("metric.acc > 0")).toEqual(cmp("metrics", "acc", ">", 0));
    expect(parseFilter("attribute.status = 'RUNNING'")).toEqual(cmp("attributes", "status", "=", "RUNNING"));
  });

  it("normalises attribute aliases and accepts bare attribute names", () => {
    expect(parseFilter("attributes.run_name = 'a'")).toEqual(cmp("attributes", "name", "=", "a"));
    expect(parseFilter("run_name = 'a'")).toEqual(cmp("attributes", "name", "=", "a"));
    expect(parseFilter("attributes.id = '6f1c6b1e-4a8e-4c43-9d0e-0a3a9a0f3b11'")).toEqual(
      cmp("attributes", "run_id", "=", "6f1c6b1e-4a8e-4c43-9d0e-0a3a9a0f3b11"),
    );
    expect(parseFilter("status != 'FAILED'")).toEqual(cmp("attributes", "status", "!=", "FAILED"));
    expect(parseFilter("end_time <= 1700000000000")).toEqual(cmp("attributes", "end_time", "<=", 1700000000000));
    expect(parseFilter("attributes.start_time >= '2024-01-31T12:00:00Z'")).toEqual(cmp("attributes", "start_time", ">=", "2024-01-31T12:00:00Z"));
  });

  it("treats keywords, entity prefixes and attribute names case-insensitively", () => {
    expect(parseFilter("PARAMS.lr like 'a%' AnD Tags.t ILike 'B%' oR Attributes.STATUS not IN ('X')")).toEqual<FilterNode>({
      kind: "or",
      operands: [
        { kind: "and", operands: [cmp("params", "lr", "LIKE", "a%"), cmp("tags", "t", "ILIKE", "B%")] },
        cmp("attributes", "status", "NOT IN", ["X"]),
      ],
    });
  });

  it("keeps key case (keys are case-sensitive)", () => {
    expect(parseFilter("params.LR = '1'")).toEqual(cmp("params", "LR", "=", "1"));
  });

  it("parses IN and NOT IN lists", () => {
    expect(parseFilter("params.opt IN ('adam', \"sgd\" ,'rms''prop')")).toEqual(cmp("params", "opt", "IN", ["adam", "sgd", "rms'prop"]));
    expect(parseFilter("tags.team NOT   IN('a')")).toEqual(cmp("tags", "team", "NOT IN", ["a"]));
    expect(parseFilter("attributes.run_id IN ('6f1c6b1e-4a8e-4c43-9d0e-0a3a9a0f3b11')")).toEqual(
      cmp("attributes", "run_id", "IN", ["6f1c6b1e-4a8e-4c43-9d0e-0a3a9a0f3b11"]),
    );
  });

  it("reads quoted keys in backticks or double quotes, with spaces and escapes", () => {
    expect(parseFilter("params.`my key` = 'v'")).toEqual(cmp("params", "my key", "=", "v"));
    expect(parseFilter('metrics."val loss" < 1')).toEqual(cmp("metrics", "val loss", "<", 1));
    expect(parseFilter("tags.`a/b-c.d_e 1` = 'v'")).toEqual(cmp("tags", "a/b-c.d_e 1", "=", "v"));
  });

  it("reads bare keys with dots, dashes and slashes", () => {
    expect(parseFilter("params.model.layers-2/size = '3'")).toEqual(cmp("params", "model.layers-2/size", "=", "3"));
  });

  it("unescapes doubled quotes in both string forms", () => {
    expect(parseFilter("tags.note = 'it''s'")).toEqual(cmp("tags", "note", "=", "it's"));
    expect(parseFilter('tags.note = "say ""hi"""')).toEqual(cmp("tags", "note", "=", 'say "hi"'));
    expect(parseFilter("tags.note = ''")).toEqual(cmp("tags", "note", "=", ""));
  });

  it("keeps an injection attempt as one plain string value", () => {
    expect(parseFilter("params.x = '1'' or 1=1 --'")).toEqual(cmp("params", "x", "=", "1' or 1=1 --"));
  });

  it("does not take a keyword-looking key for a keyword", () => {
    expect(parseFilter("params.and = 'or'")).toEqual(cmp("params", "and", "=", "or"));
  });

  it("prints a canonical form that parses back to the same AST", () => {
    const ast = parseFilter("param.`my key` like 'a''%' or (run_name = 'x' and metric.loss < -1e-9)");
    expect(printFilter(ast)).toBe("params.`my key` LIKE 'a''%' OR (attributes.name = 'x' AND metrics.loss < -1e-9)");
    expect(parseFilter(printFilter(ast))).toEqual(ast);
  });
});

describe("parseFilter: malformed input names the position and what was expected", () => {
  const cases: [string, string, string][] = [
    ["missing value", "params.lr = '0.01' and tags.t =", "filter: expected a value at position 32, found end of input"],
    ["missing value before AND", "params.lr =  and", 'filter: expected a value at position 14, found "and"'],
    ["unterminated string", "params.lr = 'abc", "filter: expected a closing ' for the string at position 13, found end of input"],
    ["unterminated quoted key", "params.`abc = '1'", "filter: expected a closing ` for the key at position 8, found end of input"],
    ["trailing garbage", "params.lr = '1' garbage", 'filter: expected AND, OR or end of input at position 17, found "garbage"'],
    ["dangling AND", "params.lr = '1' AND", expect.stringContaining("filter: expected an identifier such as params.lr") as unknown as string],
    ["unclosed parenthesis", "(params.lr = '1'", 'filter: expected AND, OR or ")" at position 17, found end of input (the "(" at position 1 is not closed)'],
    ["extra closing parenthesis", "params.lr = '1')", 'filter: expected AND, OR or end of input at position 16, found ")"'],
    ["empty parentheses", "()", expect.stringContaining('at position 2, found ")"') as unknown as string],
    ["bad operator ==", "params.lr == '1'", 'filter: expected a comparison operator (=, !=, <, >, <=, >=, LIKE, ILIKE, IN or NOT IN) at position 11, found "=="'],
    ["bad operator word", "params.lr IS '1'", 'filter: expected a comparison operator (=, !=, <, >, <=, >=, LIKE, ILIKE, IN or NOT IN) at position 11, found "IS"'],
    ["NOT without IN", "params.lr NOT LIKE '1'", 'filter: expected IN after "NOT" at position 15, found "LIKE"'],
    ["LIKE on a metric", "metrics.loss LIKE '0.1%'", "filter: expected one of =, !=, <, >, <=, >= for metrics.loss at position 14, found LIKE"],
    ["IN on a metric", "metrics.loss IN (1, 2)", "filter: expected one of =, !=, <, >, <=, >= for metrics.loss at position 14, found IN"],
    ["< on a param", "params.lr < '1'", "filter: expected one of =, !=, LIKE, ILIKE, IN, NOT IN for params.lr at position 11, found <"],
    ["string for a metric", "metrics.loss < '0.3'", "filter: expected a number for metrics.loss at position 16, found \"'0.3'\""],
    ["number for a param", "params.lr = 0.01", 'filter: expected a quoted string for params.lr at position 13, found "0.01"'],
    ["non-uuid run id", "attributes.run_id = 'abc'", "filter: expected a quoted UUID for attributes.run_id at position 21, found \"'abc'\""],
    ["bad date", "attributes.start_time > 'yesterday'", expect.stringContaining("expected epoch milliseconds or a quoted ISO-8601 date for attributes.start_time at position 25") as unknown as string],
    ["unknown entity", "param_s.lr = '1'", 'filter: expected params., tags., metrics. or attributes. at position 1, found "param_s."'],
    ["unknown attribute", "attributes.colour = 'red'", expect.stringContaining('filter: expected an attribute (status, name, run_name,') as unknown as string],
    ["unknown bare name", "lr = '1'", expect.stringContaining('at position 1, found "lr" (a name without a prefix must be a run attribute)') as unknown as string],
    ["missing key", "params. = '1'", 'filter: expected a key after "params." (quote a key with spaces in backticks or double quotes) at position 8, found "="'],
    ["single-quoted key", "params.'lr' = '1'", expect.stringContaining("at position 8, found \"'lr'\"") as unknown as string],
    ["bad key character", "params.`a*b` = '1'", 'filter: expected a key of 1 to 250 letters, digits, spaces or _ . - / at position 8, found "`a*b`"'],
    ["key too long", `params.${"k".repeat(251)} = '1'`, expect.stringContaining("filter: expected a key of 1 to 250") as unknown as string],
    ["unexpected character", "params.lr = '1' ; drop table runs", 'filter: expected an identifier, operator, value, parenthesis or comma at position 17, found ";"'],
    ["empty IN list", "params.lr IN ()", 'filter: expected a value at position 15, found ")"'],
    ["IN without parentheses", "params.lr IN 'a'", "filter: expected \"(\" to start the list of values at position 14, found \"'a'\""],
    ["unterminated IN list", "params.lr IN ('a' 'b')", "filter: expected \",\" or \")\" in the list of values at position 19, found \"'b'\""],
    ["bad exponent", "metrics.x > 1e", 'filter: expected exponent digits at position 15, found end of input'],
    ["number out of range", "metrics.x > 1e999", 'filter: expected a number within the float64 range at position 13, found "1e999"'],
    ["lone minus", "metrics.x > -", 'filter: expected an identifier, operator, value, parenthesis or comma at position 13, found "-"'],
    ["value where identifier expected", "'a' = params.x", expect.stringContaining("at position 1, found \"'a'\"") as unknown as string],
  ];

  it.each(cases)("%s", (_name, input, message) => {
    const error = errorOf(input);
    expect(error.code).toBe("BAD_USER_INPUT");
    expect(error.field).toBe("filter");
    expect(error.message).toEqual(message);
  });

  it("puts position, expected and found in the error details", () => {
    const error = errorOf("params.lr = '0.01' and tags.t =");
    expect(error.details).toEqual({ position: 32, expected: "a value", found: "end of input" });
  });

  it("uses the field name given", () => {
    try {
      parseFilter("params.lr =", { field: "where" });
      throw new Error("not rejected");
    } catch (error) {
      expect((error as DomainError).field).toBe("where");
      expect((error as DomainError).message).toBe("where: expected a value at position 12, found end of input");
    }
  });

  it("bounds parenthesis nesting instead of overflowing the stack", () => {
    const ok = `${"(".repeat(MAX_FILTER_DEPTH)}params.a = '1'${")".repeat(MAX_FILTER_DEPTH)}`;
    expect(parseFilter(ok)).toEqual(cmp("params", "a", "=", "1"));
    const deep = `${"(".repeat(100_000)}params.a = '1'${")".repeat(100_000)}`;
    expect(errorOf(deep).message).toBe(`filter: expected at most ${MAX_FILTER_DEPTH} nested parentheses at position ${MAX_FILTER_DEPTH + 1}, found "("`);
  });

  it("bounds the number of comparisons", () => {
    const terms = (n: number): string => Array.from({ length: n }, (_, i) => `params.p${i} = '1'`).join(" OR ");
    expect(parseFilter(terms(MAX_FILTER_TERMS))).not.toBeNull();
    expect(errorOf(terms(MAX_FILTER_TERMS + 1)).message).toContain(`expected at most ${MAX_FILTER_TERMS} comparisons`);
  });
});
