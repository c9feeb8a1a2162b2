/**
 * Tenancy: a reservation belongs to the tenant of the key that created it. A client key sees only its own
 * tenant's reservations; another tenant's answer exactly as one that does not exist (404, never 403, so ids
 * leak nothing). Operators see every tenant. Stock is shared: availability is not tenant-scoped.
 */

/** The tenant of keys configured without one, and of everything while authentication is off. */
export const DEFAULT_TENANT = 'default';

/** `client`: reservations (its tenant's) and availability; `operator`: everything, every tenant. */
export type Role = 'client' | 'operator';

/** Who is calling, as the HTTP layer authenticated them. */
export interface Caller {
  /** The credential's name: the idempotency scope. */
  name: string;
  role: Role;
  /** The tenant new reservations are created under. */
  tenant: string;
}

/** May this caller see (and act on) a reservation of `tenant`? */
export function canAccess(caller: Caller, tenant: string): boolean {
  return caller.role === 'operator' || caller.tenant === tenant;
}

/** The one tenant whose reservations this caller may see, or null for every tenant's (an operator). */
export function visibleTenant(caller: Caller): string | null {
  return caller.role === 'operator' ? null : caller.tenant;
}
