import { createRemoteJWKSet, jwtVerify, errors as joseErrors, type JWTPayload } from "jose";
import type { Config } from "../config.js";
import { DomainError } from "../services/errors.js";
import { isRole, type Principal, type Role } from "../services/principal.js";

type OidcConfig = NonNullable<Config["auth"]["oidc"]>;

/** Algorithms accepted from the issuer; `none` and HMAC (shared-secret) algorithms never are. */
const ALLOWED_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];

/**
 * Validates OIDC Bearer JWTs against the issuer's JWKS (fetched, cached and refreshed by jose when
 * an unknown `kid` appears), checks issuer, audience and time claims, and maps a claim to a role.
 * Every failure is UNAUTHENTICATED, with a reason that helps the operator but leaks nothing.
 */
export class OidcVerifier {
  private jwks?: ReturnType<typeof createRemoteJWKSet>;

  constructor(private readonly config: OidcConfig) {}

  private async keySet(): Promise<ReturnType<typeof createRemoteJWKSet>> {
    if (this.jwks) return this.jwks;
    let jwksUrl = this.config.jwksUrl;
    if (!jwksUrl) {
      const discovery = `${this.config.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
      const res = await fetch(discovery, { signal: AbortSignal.timeout(5000) }).catch(() => null);
      const body = res?.ok ? ((await res.json()) as { jwks_uri?: string }) : null;
      if (!body?.jwks_uri) throw new DomainError("UNAVAILABLE", "OIDC discovery failed: set OIDC_JWKS_URL");
      jwksUrl = body.jwks_uri;
    }
    this.jwks = createRemoteJWKSet(new URL(jwksUrl), { cacheMaxAge: 10 * 60_000, cooldownDuration: 30_000, timeoutDuration: 5000 });
    return this.jwks;
  }

  async verify(jwt: string): Promise<Principal> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(jwt, await this.keySet(), {
        issuer: this.config.issuer,
        audience: this.config.audience,
        algorithms: ALLOWED_ALGORITHMS,
        clockTolerance: 30,
        requiredClaims: ["sub", "exp"],
      }));
    } catch (err) {
      if (err instanceof DomainError) throw err;
      throw new DomainError("UNAUTHENTICATED", `invalid OIDC token: ${describeJoseError(err)}`);
    }
    const role = this.roleOf(payload);
    return {
      kind: "oidc",
      id: String(payload.sub),
      name: String(payload.email ?? payload.preferred_username ?? payload.sub),
      role,
      scope: {},
      expiresAt: payload.exp ? new Date(payload.exp * 1000) : undefined,
    };
  }

  /**
   * The highest role any of the token's claim values maps to; viewer when none maps. With a role
   * map, only mapped values count: a group that merely happens to be named "admin" in the
   * identity provider (where users may be able to create groups) must not make its members admins.
   * Without one, claim values are role names.
   */
  private roleOf(payload: JWTPayload): Role {
    const claim = payload[this.config.roleClaim];
    const values = Array.isArray(claim) ? claim.map(String) : claim === undefined ? [] : [String(claim)];
    const ranked: Role[] = ["admin", "editor", "viewer"];
    const map = this.config.roleMap;
    const hasMap = Object.keys(map).length > 0;
    const mapped = values
      .map((v) => (hasMap ? (Object.hasOwn(map, v) ? map[v] : undefined) : v))
      .filter((r): r is Role => r !== undefined && isRole(r) && ranked.includes(r));
    return ranked.find((r) => mapped.includes(r)) ?? "viewer";
  }
}

function describeJoseError(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return "expired";
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `claim ${err.claim} ${err.reason}`;
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return "signature does not verify";
  if (err instanceof joseErrors.JWKSNoMatchingKey) return "signed with an unknown key";
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return "algorithm not allowed";
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid) return "malformed token";
  if (err instanceof joseErrors.JWKSTimeout) return "key set timed out";
  return "verification failed";
}
