/**
 * A pure, in-memory model of the service's rules (api.md): stock and safety stock per (item, location), reservations,
 * their priorities and states, availability, idempotency, and the error code each request must get. No I/O and no clock of its own:
 * every rule that depends on time takes `now` (epoch ms), and a reservation is expired once now >= expiresAt.
 *
 * The simulation drives the real service and this model with the same requests and compares the answers.
 */

export const DEFAULT_LOCATION = 'default';

export interface ModelLine {
  itemId: string;
  location: string;
  quantity: number;
}

export interface RequestLine {
  itemId: string;
  location?: string;
  quantity: number;
}

export interface ReserveBody {
  lines: RequestLine[];
  ttlSeconds?: number;
  reference?: string;
  metadata?: Record<string, string>;
  priority?: Priority;
}

export type Priority = 'normal' | 'high';

/** What is stored; `expired` is never stored, it is derived from the clock. */
type HeldState = 'pending' | 'confirmed' | 'released';
export type Status = HeldState | 'expired';

export interface ModelReservation {
  id: string;
  lines: ModelLine[];
  expiresAt: number;
  state: HeldState;
  reference: string | null;
  metadata: Record<string, string>;
  priority: Priority;
}

export interface LocationFigures {
  location: string;
  onHand: number;
  reserved: number;
  safetyStock: number;
  available: number;
  availableHighPriority: number;
}

export interface Availability {
  itemId: string;
  onHand: number;
  reserved: number;
  safetyStock: number;
  available: number;
  availableHighPriority: number;
  locations: LocationFigures[];
}

export interface ShortLine {
  itemId: string;
  location: string;
  requested: number;
  available: number;
}

/** The answer the service must give: its status, its problem code, and the parts of the body the model knows. */
export type Expected =
  | { status: 200; availability: Availability }
  | { status: 200 | 201; reservationId: string; reservationStatus: Status }
  /** A new reservation: the service picks id and expiresAt; the caller records them with `created()`. */
  | {
      status: 201;
      created: { lines: ModelLine[]; ttlMs: number; reference: string | null; metadata: Record<string, string>; priority: Priority };
    }
  /** The first answer again, byte for byte as a JSON value. */
  | { status: 201; replayOf: unknown }
  | { status: 400 | 404 | 409 | 422; code: string; lines?: ShortLine[] };

/** JSON with object keys sorted: the same JSON value gives the same text (how idempotency compares bodies). */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

const problem = (status: 400 | 404 | 409 | 422, code: string, lines?: ShortLine[]): Expected =>
  lines ? { status, code, lines } : { status, code };

export class Model {
  /** item → location → on-hand. */
  private readonly stock = new Map<string, Map<string, number>>();
  /** item → location → safety stock (units only high-priority reservations may take); absent: 0. */
  private readonly safety = new Map<string, Map<string, number>>();
  private readonly reservations = new Map<string, ModelReservation>();
  /** Idempotency-Key → the request it bound and the first answer's body. */
  private readonly keys = new Map<string, { body: string; first: unknown }>();

  clone(): Model {
    const copy = new Model();
    for (const [item, locations] of this.stock) copy.stock.set(item, new Map(locations));
    for (const [item, locations] of this.safety) copy.safety.set(item, new Map(locations));
    for (const [id, r] of this.reservations) copy.reservations.set(id, { ...r, lines: r.lines.map((l) => ({ ...l })) });
    for (const [key, v] of this.keys) copy.keys.set(key, v);
    return copy;
  }

  // --- Derived state -------------------------------------------------------------------------------------------

  statusOf(r: ModelReservation, now: number): Status {
    return r.state === 'pending' && now >= r.expiresAt ? 'expired' : r.state;
  }

  reservation(id: string): ModelReservation | undefined {
    return this.reservations.get(id);
  }

  allReservations(): ModelReservation[] {
    return [...this.reservations.values()];
  }

  items(): string[] {
    return [...this.stock.keys()];
  }

  /** Units held at (item, location) by pending reservations whose TTL has not passed. */
  reserved(itemId: string, location: string, now: number): number {
    let total = 0;
    for (const r of this.reservations.values()) {
      if (this.statusOf(r, now) !== 'pending') continue;
      for (const l of r.lines) if (l.itemId === itemId && l.location === location) total += l.quantity;
    }
    return total;
  }

  onHand(itemId: string, location: string): number | undefined {
    return this.stock.get(itemId)?.get(location);
  }

  safetyStock(itemId: string, location: string): number {
    return this.safety.get(itemId)?.get(location) ?? 0;
  }

  /** What a reservation of this priority may take at (item, location). */
  available(itemId: string, location: string, priority: Priority, now: number): number {
    const free = (this.onHand(itemId, location) ?? 0) - this.reserved(itemId, location, now);
    return Math.max(0, priority === 'high' ? free : free - this.safetyStock(itemId, location));
  }

  private figures(itemId: string, now: number): Availability {
    const locations = [...(this.stock.get(itemId) ?? new Map<string, number>())]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([location, onHand]) => ({
        location,
        onHand,
        reserved: this.reserved(itemId, location, now),
        safetyStock: this.safetyStock(itemId, location),
        available: this.available(itemId, location, 'normal', now),
        availableHighPriority: this.available(itemId, location, 'high', now),
      }));
    const sum = (k: 'onHand' | 'reserved' | 'safetyStock' | 'available' | 'availableHighPriority') =>
      locations.reduce((total, l) => total + l[k], 0);
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

  // --- Requests (each returns the expected answer and applies its effect) -------------------------------------

  availability(itemId: string, now: number): Expected {
    if (!this.stock.has(itemId)) return problem(404, 'item_not_found');
    return { status: 200, availability: this.figures(itemId, now) };
  }

  /** PUT /items/{itemId}/stock: absolute; creates the item/location; a safety stock omitted stays. */
  setStock(itemId: string, location: string, quantity: number, now: number, safetyStock?: number): Expected {
    const locations = this.stock.get(itemId) ?? new Map<string, number>();
    locations.set(location, quantity);
    this.stock.set(itemId, locations);
    if (safetyStock !== undefined) {
      const safety = this.safety.get(itemId) ?? new Map<string, number>();
      safety.set(location, safetyStock);
      this.safety.set(itemId, safety);
    }
    return { status: 200, availability: this.figures(itemId, now) };
  }

  /** POST /items/{itemId}/stock/adjustments: only a stocked location; never below zero. */
  adjust(itemId: string, location: string, delta: number, now: number): Expected {
    const onHand = this.onHand(itemId, location);
    if (onHand === undefined) return problem(404, 'item_not_found');
    if (onHand + delta < 0) return problem(409, 'insufficient_stock', [{ itemId, location, requested: -delta, available: onHand }]);
    this.stock.get(itemId)!.set(location, onHand + delta);
    return { status: 200, availability: this.figures(itemId, now) };
  }

  /** POST /reservations. A 201 for a new reservation is recorded afterwards with `created()`. */
  reserve(key: string, body: ReserveBody, now: number): Expected {
    const lines = body.lines.map((l) => ({ itemId: l.itemId, location: l.location ?? DEFAULT_LOCATION, quantity: l.quantity }));
    const pairs = new Set(lines.map((l) => `${l.itemId}\u0000${l.location}`));
    if (pairs.size !== lines.length) return problem(400, 'validation_failed');

    const bound = this.keys.get(key);
    if (bound) return bound.body === canonicalJson(body) ? { status: 201, replayOf: bound.first } : problem(422, 'idempotency_key_reused');

    if (lines.some((l) => this.onHand(l.itemId, l.location) === undefined)) return problem(404, 'item_not_found');
    const priority = body.priority ?? 'normal';
    const short = lines.flatMap((l) => {
      const available = this.available(l.itemId, l.location, priority, now);
      return available < l.quantity ? [{ itemId: l.itemId, location: l.location, requested: l.quantity, available }] : [];
    });
    if (short.length > 0) return problem(409, 'insufficient_stock', short);
    return {
      status: 201,
      created: {
        lines,
        ttlMs: (body.ttlSeconds ?? 900) * 1000,
        reference: body.reference ?? null,
        metadata: body.metadata ?? {},
        priority,
      },
    };
  }

  /** Records the reservation a 201 created (the service chose its id and expiry) and binds the key. */
  created(key: string, body: ReserveBody, id: string, expiresAt: number, firstAnswer: unknown): void {
    this.reservations.set(id, {
      id,
      lines: body.lines.map((l) => ({ itemId: l.itemId, location: l.location ?? DEFAULT_LOCATION, quantity: l.quantity })),
      expiresAt,
      state: 'pending',
      reference: body.reference ?? null,
      metadata: body.metadata ?? {},
      priority: body.priority ?? 'normal',
    });
    this.keys.set(key, { body: canonicalJson(body), first: firstAnswer });
  }

  get(id: string, now: number): Expected {
    const r = this.reservations.get(id);
    if (!r) return problem(404, 'reservation_not_found');
    return { status: 200, reservationId: id, reservationStatus: this.statusOf(r, now) };
  }

  /** The held units leave on-hand for good; only while on-hand still covers every line. */
  confirm(id: string, now: number): Expected {
    const r = this.reservations.get(id);
    if (!r) return problem(404, 'reservation_not_found');
    switch (this.statusOf(r, now)) {
      case 'confirmed':
        return { status: 200, reservationId: id, reservationStatus: 'confirmed' };
      case 'released':
        return problem(409, 'reservation_released');
      case 'expired':
        return problem(409, 'reservation_expired');
      case 'pending':
        break;
    }
    const short = r.lines.flatMap((l) => {
      const onHand = this.onHand(l.itemId, l.location) ?? 0;
      return onHand < l.quantity ? [{ itemId: l.itemId, location: l.location, requested: l.quantity, available: onHand }] : [];
    });
    if (short.length > 0) return problem(409, 'insufficient_stock', short);
    for (const l of r.lines) this.stock.get(l.itemId)!.set(l.location, this.onHand(l.itemId, l.location)! - l.quantity);
    r.state = 'confirmed';
    return { status: 200, reservationId: id, reservationStatus: 'confirmed' };
  }

  /** The units are available again at once. Released or expired: 200 unchanged. Confirmed: 409. */
  release(id: string, now: number): Expected {
    const r = this.reservations.get(id);
    if (!r) return problem(404, 'reservation_not_found');
    const status = this.statusOf(r, now);
    if (status === 'confirmed') return problem(409, 'reservation_confirmed');
    if (status === 'pending') r.state = 'released';
    return { status: 200, reservationId: id, reservationStatus: status === 'pending' ? 'released' : status };
  }
}
