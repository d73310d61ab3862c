/**
 * Who is calling, and what their role allows. Roles are ranked for people (viewer < editor <
 * admin); `executor` and `task` are machine roles that read like a viewer and write only where a
 * resolver names them explicitly (and services check their scope).
 */
export type Role = "viewer" | "editor" | "admin" | "executor" | "task";

export const USER_ROLES = ["viewer", "editor", "admin"] as const;
export const ALL_ROLES: Role[] = ["viewer", "editor", "admin", "executor", "task"];

export interface Principal {
  kind: "token" | "oidc" | "anonymous";
  /** Token id or OIDC subject; "anonymous" when the server runs open on loopback. */
  id: string;
  name: string;
  role: Role;
  /**
   * For executor tokens `{pool}`, for task tokens `{taskRunId, runId}` plus `submitterId` and
   * `submitter` (id and name of who submitted the pipeline run) when known.
   */
  scope: Record<string, string>;
  tokenId?: string;
  /** For OIDC JWTs: when the credential stops being valid. */
  expiresAt?: Date;
}

const RANK: Record<Role, number> = { viewer: 1, executor: 1, task: 1, editor: 2, admin: 3 };

/**
 * True when `principal` meets one of `required`. People's roles are hierarchical; machine roles
 * match only themselves (plus viewer-level reads).
 */
export function satisfiesRole(principal: Principal, required: readonly string[]): boolean {
  if (required.length === 0) return true;
  return required.some((r) => {
    if (r === "executor" || r === "task") return principal.role === r;
    if (r === "viewer" || r === "editor" || r === "admin") {
      const isMachine = principal.role === "executor" || principal.role === "task";
      if (isMachine) return r === "viewer";
      return RANK[principal.role] >= RANK[r];
    }
    return false;
  });
}

export function isRole(value: string): value is Role {
  return (ALL_ROLES as string[]).includes(value);
}

/**
 * Who a registry request is attributed to: a task token acts for whoever submitted its pipeline
 * run (so that person cannot approve what their pipeline asked for); anyone else for themselves.
 */
export function actingFor(principal: Principal): { id: string; name: string } {
  if (principal.role === "task" && principal.scope.submitterId) {
    return { id: principal.scope.submitterId, name: `${principal.scope.submitter ?? principal.scope.submitterId} via ${principal.name}` };
  }
  return { id: principal.id, name: principal.name };
}
