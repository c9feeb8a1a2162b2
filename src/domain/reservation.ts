import {
  DEFAULT_PRIORITY,
  DEFAULT_TTL_SECONDS,
  type Priority,
  type Allocation,
  type AvailabilityDocument,
  type ReservationDocument,
  type ReservationRequest,
  type ReservationStatus,
} from './schemas.js';

/** One line of a reservation, location resolved. */
export interface Line {
  itemId: string;
  location: string;
  /** Units held. */
  quantity: number;
  /** Set by a partial confirm only (api.md, "Partial confirm"): the units sold; the rest were released. */
  confirmedQuantity?: number;
}

/** The key of an (itemId, location) pair, which a reservation holds at most once (neither can contain NUL). */
export const pairKey = (itemId: string, location: string): string => `${itemId}\u0000${location}`;

/** A reservation as PostgreSQL stores it; `status` is the stored one (pending may have passed its TTL). */
export interface ReservationRecord {
  id: string;
  status: ReservationStatus;
  reference: string | null;
  metadata: Record<string, string>;
  priority: Priority;
  /** What is held: one entry per (itemId, location), allocated lines as allocated. */
  lines: Line[];
  expiresAt: Date;
  createdAt: Date;
  updatedAt: Date;
  /** The request's allocation, as sent; null without one. */
  allocation: Allocation | null;
  /** Whose it is (src/domain/tenancy.ts); not part of the document. */
  tenant: string;
  /** The stored version (api.md, "Versions"): 1 when created, +1 on every recorded change. */
  version: number;
}

/**
 * A new reservation as requested, holding `lines` (as held: allocated), created at `createdAt` (absent optional
 * fields read back null and {}).
 */
export function pendingReservation(
  id: string,
  request: ReservationRequest,
  lines: Line[],
  createdAt: Date,
  tenant: string,
): ReservationRecord {
  return {
    id,
    tenant,
    status: 'pending',
    reference: request.reference ?? null,
    metadata: request.metadata ?? {},
    priority: request.priority ?? DEFAULT_PRIORITY,
    lines,
    expiresAt: new Date(createdAt.getTime() + (request.ttlSeconds ?? DEFAULT_TTL_SECONDS) * 1000),
    createdAt,
    updatedAt: createdAt,
    allocation: request.allocation ?? null,
    version: 1,
  };
}

/** A pending reservation is expired from the instant now >= expiresAt, whether or not the sweeper ran. */
export function effectiveStatus(r: Pick<ReservationRecord, 'status' | 'expiresAt'>, now: Date): ReservationStatus {
  return r.status === 'pending' && now.getTime() >= r.expiresAt.getTime() ? 'expired' : r.status;
}

export function toDocument(r: ReservationRecord, now = new Date()): ReservationDocument {
  const status = effectiveStatus(r, now);
  // An expiry the sweeper has not recorded yet happened at expiresAt, and made the version it will record.
  const unrecordedExpiry = status === 'expired' && r.status === 'pending';
  const updatedAt = unrecordedExpiry ? r.expiresAt : r.updatedAt;
  return {
    id: r.id,
    status,
    reference: r.reference,
    lines: r.lines.map(({ itemId, location, quantity, confirmedQuantity }) =>
      confirmedQuantity === undefined ? { itemId, location, quantity } : { itemId, location, quantity, confirmedQuantity },
    ),
    expiresAt: r.expiresAt.toISOString(),
    createdAt: r.createdAt.toISOString(),
    updatedAt: updatedAt.toISOString(),
    metadata: r.metadata,
    priority: r.priority,
    allocation: r.allocation,
    version: unrecordedExpiry ? r.version + 1 : r.version,
  };
}

/**
 * The availability document from an item's figures per location (as Redis keeps them: a location without an
 * on-hand figure is not stocked, a missing reserved or safety figure is 0), or null when no location is stocked.
 * `available` is what a normal-priority reservation may take, `availableHighPriority` what a high-priority one may
 * (the rule the reserve script applies: availableAt in src/redis/lua/includes/common.lua).
 */
export function toAvailability(
  itemId: string,
  stock: ReadonlyMap<string, { onHand: number | null; reserved: number | null; safety?: number | null }>,
): AvailabilityDocument | null {
  const byLocation = new Map<string, { onHand: number; reserved: number; safetyStock: number }>();
  for (const [location, figures] of stock) {
    if (figures.onHand !== null) {
      byLocation.set(location, { onHand: figures.onHand, reserved: figures.reserved ?? 0, safetyStock: Math.max(0, figures.safety ?? 0) });
    }
  }
  if (byLocation.size === 0) return null;
  const locations = [...byLocation]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([location, { onHand, reserved, safetyStock }]) => ({
      location,
      onHand,
      reserved,
      safetyStock,
      available: Math.max(0, onHand - reserved - safetyStock),
      availableHighPriority: Math.max(0, onHand - reserved),
    }));
  const sum = (key: 'onHand' | 'reserved' | 'safetyStock' | 'available' | 'availableHighPriority') =>
    locations.reduce((total, l) => total + l[key], 0);
  return {
    itemId,
    onHand: sum('onHand'),
    reserved: sum('reserved'),
    safetyStock: sum('safetyStock'),
    available: sum('available'),
    availableHighPriority: sum('availableHighPriority'),
    locations,
  };
}
