import type { Command } from "commander";
import { CreateApiTokenDocument, ListApiTokensDocument, RevokeApiTokenDocument } from "../../client/index.js";
import { action, connect, notFound, printJson, printTable, usage, withConnection, type ConnectionFlags } from "./cli-support.js";

const ROLES = ["viewer", "editor", "admin", "executor"];

/** `mlgraph token create|revoke|list`: API tokens (admin). */
export function registerTokenCommands(program: Command): void {
  const token = program.command("token").description("create, list and revoke API tokens (needs an admin token)");

  withConnection(
    token
      .command("create <name>")
      .description("create a token; prints its secret once (use it as MLGRAPH_TOKEN)")
      .option("--role <role>", `one of ${ROLES.join(", ")}`, "viewer")
      .option("--pool <pool>", "executor tokens: the only pool it may claim from")
      .option("--expires <iso-date>", "when it stops working, e.g. 2026-01-01T00:00:00Z"),
  ).action(
    action(async (name: string, flags: ConnectionFlags & { role: string; pool?: string; expires?: string }) => {
      if (!ROLES.includes(flags.role)) throw usage(`--role: expected one of ${ROLES.join(", ")}, got ${JSON.stringify(flags.role)}`);
      if (flags.expires && Number.isNaN(Date.parse(flags.expires))) throw usage(`--expires: ${JSON.stringify(flags.expires)} is not a date`);
      const { createApiToken } = await connect(flags).request(CreateApiTokenDocument, {
        input: { name, role: flags.role, pool: flags.pool, expiresAt: flags.expires ? new Date(flags.expires).toISOString() : undefined },
      });
      if (flags.json) return printJson(createApiToken);
      process.stdout.write(`created token ${createApiToken.token.id} (${createApiToken.token.name}, role ${createApiToken.token.role})\n`);
      process.stdout.write(`secret (shown only once): ${createApiToken.secret}\n`);
    }),
  );

  withConnection(token.command("list").description("list tokens (metadata only)")).action(
    action(async (flags: ConnectionFlags) => {
      const { apiTokens } = await connect(flags).request(ListApiTokensDocument, {});
      if (flags.json) return printJson(apiTokens);
      printTable(
        ["ID", "NAME", "ROLE", "PREFIX", "CREATED", "EXPIRES", "REVOKED"],
        apiTokens.map((t) => [t.id, t.name, t.role, t.prefix, t.createdAt, t.expiresAt, t.revokedAt]),
      );
    }),
  );

  withConnection(token.command("revoke <id>").description("revoke a token at once (live subscriptions using it end too)")).action(
    action(async (id: string, flags: ConnectionFlags) => {
      const { revokeApiToken } = await connect(flags).request(RevokeApiTokenDocument, { id });
      if (!revokeApiToken) throw notFound(`token ${id} not found`);
      if (flags.json) return printJson({ id, revoked: true });
      process.stdout.write(`revoked token ${id}\n`);
    }),
  );
}
