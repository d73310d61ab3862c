import { createRemoteJWKSet, customFetch, jwtVerify, errors as joseErrors, type JWTPayload } from "jose";
import type { Config } from "../config.js";
import { DomainError } from "../services/errors.js";
import { isRole, type Principal, type Role } from "../services/principal.js";

type OidcConfig = NonNullable<Config["auth"]["oidc"]>;

/** Algorithms accepted from the issuer; `none` and HMAC (shared-secret) algorithms never are. */
const ALLOWED_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];

const discoveryUnavailable = () => new DomainError("UNAVAILABLE", "OIDC discovery failed: the issuer is unreachable or answered no jwks_uri; try again shortly (or set OIDC_JWKS_URL)");
const keySetUnavailable = () => new DomainError("UNAVAILABLE", "OIDC key set is unreachable; try again shortly");

/**
 * Validates OIDC Bearer JWTs against the issuer's JWKS (fetched, cached and refreshed by jose when
 * an unknown `kid` appears), checks issuer, audience and time claims, and maps a claim to a role.
 * A refused token is UNAUTHENTICATED, with a reason that helps the operator but leaks nothing; an
 * issuer that cannot be reached is UNAVAILABLE (no verdict on the token: the caller should retry).
 */
export class OidcVerifier {
  private jwks?: ReturnType<typeof createRemoteJWKSet>;
  /** The discovery in flight, shared by the requests that arrive meanwhile. */
  private discovering?: Promise<string>;
  private discoveryFailedAt?: number;
  private keySetFailedAt?: number;
  /**
   * How long a failed discovery or key-set fetch is remembered (OIDC_FETCH_RETRY_SECONDS, 10 s).
   * Any caller, anonymous ones too, can send a bearer shaped like a JWT, and each would otherwise
   * cost an outbound fetch (up to 5 s) while the issuer is down; during the cooldown such tokens
   * are answered UNAVAILABLE at once.
   */
  private readonly fetchFailureCooldownMs: number;

  constructor(private readonly config: OidcConfig) {
    this.fetchFailureCooldownMs = config.fetchRetrySeconds * 1000;
  }

  private async keySet(): Promise<ReturnType<typeof createRemoteJWKSet>> {
    if (this.jwks) return this.jwks;
    const jwksUrl = this.config.jwksUrl ?? (await this.discover());
    this.jwks ??= createRemoteJWKSet(new URL(jwksUrl), {
      cacheMaxAge: 10 * 60_000,
      cooldownDuration: 30_000,
      timeoutDuration: 5000,
      // jose refetches on every verification while it holds no keys, failed fetches included.
      [customFetch]: (url, init) => this.fetchKeySet(url, init),
    });
    return this.jwks;
  }

  private discover(): Promise<string> {
    if (this.discoveryFailedAt !== undefined && Date.now() - this.discoveryFailedAt < this.fetchFailureCooldownMs) {
      return Promise.reject(discoveryUnavailable());
    }
    this.discovering ??= (async () => {
      const discovery = `${this.config.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
      try {
        const res = await fetch(discovery, { signal: AbortSignal.timeout(5000) });
        const body = res.ok ? ((await res.json()) as { jwks_uri?: unknown }) : null;
        if (typeof body?.jwks_uri !== "string" || !URL.canParse(body.jwks_uri)) throw new Error("no usable jwks_uri");
        this.discoveryFailedAt = undefined;
        return body.jwks_uri;
      } catch {
        this.discoveryFailedAt = Date.now();
        throw discoveryUnavailable();
      }
    })().finally(() => {
      this.discovering = undefined;
    });
    return this.discovering;
  }

  /** jose's fetch of the key set, refused without a request while a recent one failed. */
  private async fetchKeySet(url: string, init: RequestInit): Promise<Response> {
    if (this.keySetFailedAt !== undefined && Date.now() - this.keySetFailedAt < this.fetchFailureCooldownMs) throw keySetUnavailable();
    let res: Response;
    try {
      res = await fetch(url, init);
    } catch {
      this.keySetFailedAt = Date.now();
      throw keySetUnavailable();
    }
    if (res.status !== 200) {
      this.keySetFailedAt = Date.now();
      await res.body?.cancel().catch(() => undefined);
      throw keySetUnavailable();
    }
    this.keySetFailedAt = undefined;
    return res;
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
      // A key set that timed out or is not one: the issuer's fault, not the token's.
      if (err instanceof joseErrors.JWKSTimeout || err instanceof joseErrors.JWKSInvalid || (err instanceof joseErrors.JOSEError && err.code === "ERR_JOSE_GENERIC")) {
        throw keySetUnavailable();
      }
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
  return "verification failed";
}
