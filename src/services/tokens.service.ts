import crypto from "node:crypto";
import DataLoader from "dataloader";
import type { DataSource } from "typeorm";
import { ApiToken } from "../entities/api-token.entity.js";
import { DomainError } from "./errors.js";
import { isRole, type Principal, type Role } from "./principal.js";
import type { RequestContext } from "./context.js";
import { validateId, validateText, LIMITS } from "./validation.js";

const SECRET_PREFIX = "mlg_";

export function hashSecret(secret: string): string {
  return crypto.createHash("sha256").update(secret).digest("hex");
}

/**
 * A new token: the secret shown once (the prefix marks it as ours, 32 random bytes make it
 * unguessable), the hash stored instead of it, and the prefix listed to tell tokens apart.
 */
export function mintSecret(): { secret: string; tokenHash: string; prefix: string } {
  const secret = SECRET_PREFIX + crypto.randomBytes(32).toString("base64url");
  return { secret, tokenHash: hashSecret(secret), prefix: secret.slice(0, 10) };
}

export interface CreatedToken {
  token: ApiToken;
  secret: string;
}

/** API tokens: stored as SHA-256 hashes, shown once, revocable, optionally expiring and scoped. */
export class TokensService {
  /**
   * Live subscriptions re-check their token on every event, so one event to 1,000 subscribers is
   * 1,000 checks in the same tick. This batches the checks of a tick into one query. It caches
   * nothing (every check reads the table as it is now, so a revocation is seen at the next event)
   * and its answer depends only on the token id, which is why one batcher can serve all requests
   * (unlike the per-request DataLoaders, which cache).
   */
  private readonly activeTokens = new DataLoader<string, boolean>(
    async (ids) => {
      const active: { id: string }[] = await this.db.query(
        "SELECT id FROM api_tokens WHERE id = ANY($1::uuid[]) AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
        [ids],
      );
      const found = new Set(active.map((r) => r.id));
      return ids.map((id) => found.has(id));
    },
    { cache: false, maxBatchSize: 1_000 },
  );

  constructor(private readonly db: DataSource) {}

  /** Creates a token; `scope` is only for machine tokens minted by the platform itself. */
  async create(
    ctx: RequestContext | null,
    input: { name: string; role: string; expiresAt?: Date | null; scope?: Record<string, string> },
  ): Promise<CreatedToken> {
    const name = validateText(input.name, "input.name", LIMITS.nameLength);
    if (!isRole(input.role)) {
      throw new DomainError("BAD_USER_INPUT", `input.role: expected viewer, editor, admin, executor or task, got ${JSON.stringify(input.role)}`, "input.role");
    }
    if ((input.role === "task") && !input.scope?.runId) {
      throw new DomainError("BAD_USER_INPUT", "input.role: task tokens are minted by the scheduler for one task run", "input.role");
    }
    if (input.expiresAt && input.expiresAt.getTime() <= Date.now()) {
      throw new DomainError("BAD_USER_INPUT", "input.expiresAt: must be in the future", "input.expiresAt");
    }
    const { secret, tokenHash, prefix } = mintSecret();
    const token = this.db.getRepository(ApiToken).create({
      name,
      role: input.role,
      tokenHash,
      prefix,
      scope: input.scope ?? {},
      createdBy: ctx ? ctx.principal.name : "system",
      expiresAt: input.expiresAt ?? null,
      revokedAt: null,
    });
    await this.db.getRepository(ApiToken).save(token);
    return { token, secret };
  }

  async revoke(_ctx: RequestContext, id: string): Promise<boolean> {
    validateId(id, "id");
    const result = await this.db
      .createQueryBuilder()
      .update(ApiToken)
      .set({ revokedAt: () => "now()" })
      .where("id = :id AND revoked_at IS NULL", { id })
      .execute();
    if (!result.affected) {
      const exists = await this.db.getRepository(ApiToken).existsBy({ id });
      if (!exists) throw new DomainError("NOT_FOUND", `api token ${JSON.stringify(id)} not found`, "id");
    }
    return true;
  }

  async list(_ctx: RequestContext): Promise<ApiToken[]> {
    return this.db.getRepository(ApiToken).find({ order: { createdAt: "DESC" } });
  }

  /** Resolves a presented secret to a principal, or throws UNAUTHENTICATED. */
  async authenticate(secret: string): Promise<Principal> {
    if (!secret.startsWith(SECRET_PREFIX)) throw new DomainError("UNAUTHENTICATED", "invalid API token");
    const token = await this.db.getRepository(ApiToken).findOneBy({ tokenHash: hashSecret(secret) });
    if (!token) throw new DomainError("UNAUTHENTICATED", "invalid API token");
    if (token.revokedAt) throw new DomainError("UNAUTHENTICATED", "API token has been revoked");
    if (token.expiresAt && token.expiresAt.getTime() <= Date.now()) throw new DomainError("UNAUTHENTICATED", "API token has expired");
    return { kind: "token", id: token.id, tokenId: token.id, name: token.name, role: token.role as Role, scope: token.scope ?? {} };
  }

  /** Whether a token is still usable; live subscriptions re-check this on each event. */
  isActive(tokenId: string): Promise<boolean> {
    return this.activeTokens.load(tokenId);
  }

  async countAdmins(): Promise<number> {
    return this.db.getRepository(ApiToken).count({ where: { role: "admin" } });
  }
}
