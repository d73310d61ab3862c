import type { AppServices } from "./app-services.js";
import type { RequestContext } from "./context.js";
import { DomainError } from "./errors.js";
import type { Principal } from "./principal.js";

/**
 * Re-checks of a credential authenticated earlier, for work that outlives the moment it was
 * checked: a websocket's operations, a live stream's events, an executor's long poll.
 */

/** Whether a credential checked earlier is still good: not revoked, not expired. */
export async function principalStillValid(services: Pick<AppServices, "tokens">, principal: Principal): Promise<boolean> {
  if (principal.tokenId) return services.tokens.isActive(principal.tokenId);
  if (principal.expiresAt) return principal.expiresAt.getTime() > Date.now();
  return true;
}

export function stillAuthorised(ctx: RequestContext): Promise<boolean> {
  return principalStillValid(ctx.services, ctx.principal);
}

export async function assertStillAuthorised(ctx: RequestContext): Promise<void> {
  if (!(await stillAuthorised(ctx))) throw new DomainError("UNAUTHENTICATED", "credentials have been revoked or have expired");
}
