import { DomainError } from "./errors.js";

/**
 * The registeredModels filter: terms joined by AND, each
 * `name = 'x'`, `name != 'x'`, `name LIKE 'churn%'`, `name ILIKE '%Churn%'` or `tags.<key> = 'v'`
 * (MLflow's search_registered_models subset). Compiles to parameterised SQL over `registered_models m`.
 */
export function parseModelFilter(filter: string, field: string): { sql: string; params: unknown[] } {
  const text = filter.trim();
  if (text === "") return { sql: "TRUE", params: [] };
  const params: unknown[] = [];
  const clauses: string[] = [];
  const term = /^\s*(name|tags\.(?:`[^`]+`|[A-Za-z0-9_.\-/]+))\s*(=|!=|LIKE|ILIKE)\s*'((?:[^']|'')*)'\s*/i;
  let rest = text;
  for (;;) {
    const m = term.exec(rest);
    if (!m) throw new DomainError("BAD_USER_INPUT", `${field}: expected name|tags.<key> (=, !=, LIKE, ILIKE) '<value>' at ${JSON.stringify(rest.slice(0, 40))}`, field);
    const value = m[3].replace(/''/g, "'");
    const op = m[2].toUpperCase();
    params.push(value);
    const bind = `$${params.length}`;
    if (m[1].toLowerCase() === "name") clauses.push(`m.name ${op} ${bind}`);
    else {
      params.push(m[1].slice(5).replace(/^`|`$/g, ""));
      clauses.push(`EXISTS (SELECT 1 FROM registered_model_tags t WHERE t.model_id = m.id AND t.key = $${params.length} AND t.value ${op} ${bind})`);
    }
    rest = rest.slice(m[0].length);
    if (rest === "") break;
    const and = /^and\s+/i.exec(rest);
    if (!and) throw new DomainError("BAD_USER_INPUT", `${field}: expected AND at ${JSON.stringify(rest.slice(0, 40))}`, field);
    rest = rest.slice(and[0].length);
  }
  return { sql: clauses.join(" AND "), params };
}
