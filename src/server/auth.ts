import type { AuthCheckerInterface, ResolverData } from "type-graphql";
import type { RequestContext } from "../services/context.js";
import { DomainError } from "../services/errors.js";
import { satisfiesRole, type Principal } from "../services/principal.js";
import type { AppServices } from "../services/app-services.js";
import { authRequired } from "../config.js";

export const ANONYMOUS_ADMIN: Principal = { kind: "anonymous", id: "anonymous", name: "anonymous (open loopback server)", role: "admin", scope: {} };

/**
 * Turns an `Authorization` header value (HTTP) or `connection_init` payload value (graphql-ws)
 * into a principal. A presented credential is always checked, even on an open server.
 */
export async function authenticate(services: AppServices, authorization: string | undefined | null): Promise<Principal> {
  if (authorization) {
    const match = /^Bearer\s+(\S+)$/i.exec(authorization.trim());
    if (!match) throw new DomainError("UNAUTHENTICATED", "Authorization must be `Bearer <token>`");
    const credential = match[1];
    if (credential.split(".").length === 3 && services.oidc) return services.oidc.verify(credential);
    return services.tokens.authenticate(credential);
  }
  if (authRequired(services.config)) throw new DomainError("UNAUTHENTICATED", "authentication required: send `Authorization: Bearer <token>`");
  return ANONYMOUS_ADMIN;
}

/** The one place role requirements declared with @Authorized are enforced. */
export class RoleAuthChecker implements AuthCheckerInterface<RequestContext> {
  check({ context }: ResolverData<RequestContext>, roles: string[]): boolean {
    if (!satisfiesRole(context.principal, roles)) {
      throw new DomainError("FORBIDDEN", `this operation needs role ${roles.join(" or ")}; you are ${context.principal.role}`);
    }
    return true;
  }
}

export const authChecker = RoleAuthChecker;
