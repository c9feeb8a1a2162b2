/**
 * A pure, in-memory model of the service's rules (api.md): stock per (item, location), reservations and their
 * states, availability, idempotency, and the error code each request must get. No I/O and no clock of its own:
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

export interface AllocationBody {
  strategy: 'ordered' | 'most_available' | 'single_location';
  locations?: string[];
  split?: boolean;
}

export interface ReserveBody {
  lines: RequestLine[];
  ttlSeconds?: number;
  reference?: string;
  metadata?: Record<string, string>;
  allocation?: AllocationBody;
}

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
}

export interface LocationFigures {
  location: string;
  onHand: number;
  reserved: number;
  available: number;
}

export interface Availability {
  itemId: string;
  onHand: number;
  reserved: number;
  available: number;
  locations: LocationFigures[];
}

export interface ShortLine {
  itemId: string;
  /** null for an allocated line. */
  location: string | null;
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
      created: {
        lines: ModelLine[];
        ttlMs: number;
        reference: string | null;
        metadata: Record<string, string>;
        allocation: AllocationBody | null;
      };
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
  private readonly reservations = new Map<string, ModelReservation>();
  /** Idempotency-Key → the request it bound and the first answer's body. */
  private readonly keys = new Map<string, { body: string; first: unknown }>();

  clone(): Model {
    const copy = new Model();
    for (const [item, locations] of this.stock) copy.stock.set(item, new Map(locations));
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

  private figures(itemId: string, now: number): Availability {
    const locations = [...(this.stock.get(itemId) ?? new Map<string, number>())]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([location, onHand]) => {
        const reserved = this.reserved(itemId, location, now);
        return { location, onHand, reserved, available: Math.max(0, onHand - reserved) };
      });
    const sum = (k: 'onHand' | 'reserved' | 'available') => locations.reduce((total, l) => total + l[k], 0);
    return { itemId, onHand: sum('onHand'), reserved: sum('reserved'), available: sum('available'), locations };
  }

  // --- Requests (each returns the expected answer and applies its effect) -------------------------------------

  availability(itemId: string, now: number): Expected {
    if (!this.stock.has(itemId)) return problem(404, 'item_not_found');
    return { status: 200, availability: this.figures(itemId, now) };
  }

  /** PUT /items/{itemId}/stock: absolute; creates the item/location. */
  setStock(itemId: string, location: string, quantity: number, now: number): Expected {
    const locations = this.stock.get(itemId) ?? new Map<string, number>();
    locations.set(location, quantity);
    this.stock.set(itemId, locations);
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

  /** Units a reservation may take at (item, location) now. */
  private available(itemId: string, location: string, now: number): number {
    return Math.max(0, (this.onHand(itemId, location) ?? 0) - this.reserved(itemId, location, now));
  }

  /** Whether the request breaks a rule of its lines or its allocation (api.md: 400). */
  private invalid(body: ReserveBody): boolean {
    const a = body.allocation;
    if (a && a.strategy !== 'most_available' && a.locations === undefined) return true;
    if (a?.strategy === 'single_location' && a.split === true) return true;
    const pairs = new Set<string>();
    const allocated = new Set<string>();
    const fixed = new Set<string>();
    for (const l of body.lines) {
      if (l.location === undefined && a) {
        if (allocated.has(l.itemId) || fixed.has(l.itemId)) return true;
        allocated.add(l.itemId);
        continue;
      }
      const pair = `${l.itemId}\u0000${l.location ?? DEFAULT_LOCATION}`;
      if (pairs.has(pair) || allocated.has(l.itemId)) return true;
      pairs.add(pair);
      fixed.add(l.itemId);
    }
    return false;
  }

  /** An allocated item's candidates it is stocked at, in preference order (most_available: most available first). */
  private options(itemId: string, a: AllocationBody, now: number): { location: string; available: number }[] {
    const names = a.locations ?? [...(this.stock.get(itemId)?.keys() ?? [])].sort();
    const options = names
      .filter((location) => this.onHand(itemId, location) !== undefined)
      .map((location, rank) => ({ location, rank, available: this.available(itemId, location, now) }));
    if (a.strategy === 'most_available') options.sort((x, y) => y.available - x.available || x.rank - y.rank);
    return options;
  }

  /** Where an allocated line (not single_location) is held, or what its strategy found. */
  private allocateLine(options: { location: string; available: number }[], quantity: number, split: boolean): ModelLine[] | number {
    if (split) {
      let left = quantity;
      const parts = options.flatMap((o) => {
        const take = Math.min(o.available, left);
        left -= take;
        return take > 0 ? [{ location: o.location, quantity: take }] : [];
      });
      return left === 0 ? parts.map((p) => ({ itemId: '', ...p })) : options.reduce((sum, o) => sum + o.available, 0);
    }
    const o = options.find((x) => x.available >= quantity);
    return o ? [{ itemId: '', location: o.location, quantity }] : Math.max(...options.map((x) => x.available));
  }

  /**
   * single_location: the first candidate holding every allocated line; else, per allocated line, what the best
   * candidate (short by the fewest units in all, the earlier on a tie) has.
   */
  private singleLocation(lines: RequestLine[], locations: string[], now: number): string | number[] {
    let best: number[] | undefined;
    let bestShortfall = Infinity;
    for (const location of locations) {
      const figures = lines.map((l) => (this.onHand(l.itemId, location) === undefined ? 0 : this.available(l.itemId, location, now)));
      const shortfall = lines.reduce((sum, l, i) => sum + Math.max(0, l.quantity - figures[i]!), 0);
      if (shortfall === 0) return location;
      if (shortfall < bestShortfall) [best, bestShortfall] = [figures, shortfall];
    }
    return best!;
  }

  /** POST /reservations. A 201 for a new reservation is recorded afterwards with `created()`. */
  reserve(key: string, body: ReserveBody, now: number): Expected {
    if (this.invalid(body)) return problem(400, 'validation_failed');

    const bound = this.keys.get(key);
    if (bound) return bound.body === canonicalJson(body) ? { status: 201, replayOf: bound.first } : problem(422, 'idempotency_key_reused');

    const a = body.allocation;
    const isAllocated = (l: RequestLine) => a !== undefined && l.location === undefined;
    const missing = body.lines.some((l) =>
      isAllocated(l) ? this.options(l.itemId, a!, now).length === 0 : this.onHand(l.itemId, l.location ?? DEFAULT_LOCATION) === undefined,
    );
    if (missing) return problem(404, 'item_not_found');

    // Per line: its parts, or what was found (short).
    const held: (ModelLine[] | number)[] = body.lines.map((l) => {
      if (isAllocated(l)) return a!.strategy === 'single_location' ? [] : this.allocateLine(this.options(l.itemId, a!, now), l.quantity, a!.split ?? false);
      const location = l.location ?? DEFAULT_LOCATION;
      const available = this.available(l.itemId, location, now);
      return available >= l.quantity ? [{ itemId: '', location, quantity: l.quantity }] : available;
    });
    if (a?.strategy === 'single_location') {
      const allocatedLines = body.lines.filter(isAllocated);
      const where = allocatedLines.length > 0 ? this.singleLocation(allocatedLines, a.locations!, now) : '';
      let k = 0;
      body.lines.forEach((l, i) => {
        if (!isAllocated(l)) return;
        const figure = typeof where === 'string' ? l.quantity : where[k]!;
        k++;
        held[i] = typeof where === 'string' ? [{ itemId: '', location: where, quantity: l.quantity }] : figure < l.quantity ? figure : [];
      });
    }
    const short = body.lines.flatMap((l, i) => {
      const h = held[i]!;
      if (typeof h !== 'number') return [];
      return [{ itemId: l.itemId, location: isAllocated(l) ? null : (l.location ?? DEFAULT_LOCATION), requested: l.quantity, available: h }];
    });
    if (short.length > 0) return problem(409, 'insufficient_stock', short);
    const lines = body.lines.flatMap((l, i) => (held[i] as ModelLine[]).map((p) => ({ ...p, itemId: l.itemId })));
    return {
      status: 201,
      created: {
        lines,
        ttlMs: (body.ttlSeconds ?? 900) * 1000,
        reference: body.reference ?? null,
        metadata: body.metadata ?? {},
        allocation: a ?? null,
      },
    };
  }

  /**
   * Records the reservation a 201 created (the service chose its id and expiry; `lines` as held, which the model
   * decided) and binds the key.
   */
  created(key: string, body: ReserveBody, id: string, expiresAt: number, firstAnswer: unknown, lines: ModelLine[]): void {
    this.reservations.set(id, {
      id,
      lines: lines.map((l) => ({ ...l })),
      expiresAt,
      state: 'pending',
      reference: body.reference ?? null,
      metadata: body.metadata ?? {},
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
