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
  /** Set on every line by a partial confirm only: the units of this line it sold (0: all released). */
  confirmedQuantity?: number;
}

export interface RequestLine {
  itemId: string;
  location?: string;
  quantity: number;
}

export type Strategy = 'ordered' | 'most_available' | 'single_location';

export interface Allocation {
  strategy: Strategy;
  locations?: string[];
  split?: boolean;
}

export type Priority = 'normal' | 'high';

export interface ReserveBody {
  lines: RequestLine[];
  ttlSeconds?: number;
  reference?: string;
  metadata?: Record<string, string>;
  allocation?: Allocation;
  priority?: Priority;
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
  /** The stored version: 1 when created, +1 on confirm, release or extend (an expiry adds its own +1 when derived). */
  version: number;
  /** When the service created it (epoch ms): lists by reference are newest first, then by id. */
  createdAt: number;
}

/**
 * What an If-Match header says (api.md "Versions"): a version, or malformed (`W/"1"`, `1`, `"0"`, …: 400 before
 * anything else); absent (undefined) or `*`, the call is unconditional.
 */
export type IfMatch = number | 'malformed' | undefined;

/** The most reservations one reference may have for a release by reference (api.md, "Saga operations"). */
export const MAX_RELEASE_BY_REFERENCE = 100;

/** The longest TTL, at creation and on extend (api.md "Saga operations": the same limits): 1 day. */
export const MAX_TTL_SECONDS = 86_400;

/** The most entries a partial confirm's `lines` may have. */
export const MAX_CONFIRM_LINES = 100;

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
  /** null for an allocated line: no location could be chosen. */
  location: string | null;
  requested: number;
  available: number;
}

/** What a location has: on-hand, and the safety stock only high-priority reservations may take. */
interface Stocked {
  onHand: number;
  safetyStock: number;
}

/** A line's decision: the parts held, or what the strategy could find. */
type Placement = { held: ModelLine[] } | { short: ShortLine };

/**
 * One reservation document. `expiresAt` as the model knows it, or for an extension (whose new expiry the service's
 * clock picks; the caller records it with `extended()`) how long after the document's updatedAt.
 */
export interface ExpectedDocument {
  status: 200;
  reservationId: string;
  reservationStatus: Status;
  version: number;
  lines: ModelLine[];
  expiresAt: number | { afterUpdateMs: number };
}

/** The answer the service must give: its status, its problem code, and the parts of the body the model knows. */
export type Expected =
  | { status: 200; availability: Availability }
  | ExpectedDocument
  /** A new reservation: the service picks id and expiresAt; the caller records them with `created()`. */
  | {
      status: 201;
      created: {
        lines: ModelLine[];
        ttlMs: number;
        reference: string | null;
        metadata: Record<string, string>;
        priority: Priority;
        allocation: Allocation | null;
      };
    }
  /** Reservations of a reference, in the list's order, as id and status; `more`: whether a next page follows. */
  | { status: 200; items: { id: string; status: Status; version: number }[]; more?: boolean; reference?: string }
  /** The first answer again, byte for byte as a JSON value. */
  | { status: 201; replayOf: unknown }
  | { status: 400 | 404 | 409 | 412 | 422; code: string; lines?: ShortLine[] };

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

const problem = (status: 400 | 404 | 409 | 412 | 422, code: string, lines?: ShortLine[]): Expected =>
  lines ? { status, code, lines } : { status, code };

export class Model {
  /** item → location → on-hand and safety stock. */
  private readonly stock = new Map<string, Map<string, Stocked>>();
  private readonly reservations = new Map<string, ModelReservation>();
  /** Idempotency-Key → the request it bound and the first answer's body. */
  private readonly keys = new Map<string, { body: string; first: unknown }>();

  clone(): Model {
    const copy = new Model();
    for (const [item, locations] of this.stock) {
      copy.stock.set(item, new Map([...locations].map(([location, s]) => [location, { ...s }])));
    }
    for (const [id, r] of this.reservations) copy.reservations.set(id, { ...r, lines: r.lines.map((l) => ({ ...l })) });
    for (const [key, v] of this.keys) copy.keys.set(key, v);
    return copy;
  }

  // --- Derived state -------------------------------------------------------------------------------------------

  statusOf(r: ModelReservation, now: number): Status {
    return r.state === 'pending' && now >= r.expiresAt ? 'expired' : r.state;
  }

  /** The version a reservation reads at: an expiry is a change of its own, the instant the TTL passes. */
  versionOf(r: ModelReservation, now: number): number {
    return this.statusOf(r, now) === 'expired' ? r.version + 1 : r.version;
  }

  private document(r: ModelReservation, now: number): ExpectedDocument {
    return {
      status: 200,
      reservationId: r.id,
      reservationStatus: this.statusOf(r, now),
      version: this.versionOf(r, now),
      lines: r.lines.map((l) => ({ ...l })),
      expiresAt: r.expiresAt,
    };
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
    return this.stock.get(itemId)?.get(location)?.onHand;
  }

  safetyStock(itemId: string, location: string): number | undefined {
    return this.stock.get(itemId)?.get(location)?.safetyStock;
  }

  /** Locations the item is stocked at, by name. */
  private locationsOf(itemId: string): string[] {
    return [...(this.stock.get(itemId)?.keys() ?? [])].sort(byName);
  }

  /** What a reservation of `priority` may take at a stocked location: safety stock is for high priority only. */
  private availableTo(priority: Priority, itemId: string, location: string, now: number): number {
    const s = this.stock.get(itemId)!.get(location)!;
    const free = s.onHand - this.reserved(itemId, location, now);
    return Math.max(0, priority === 'high' ? free : free - s.safetyStock);
  }

  private figures(itemId: string, now: number): Availability {
    const locations = this.locationsOf(itemId).map((location) => {
      const { onHand, safetyStock } = this.stock.get(itemId)!.get(location)!;
      const reserved = this.reserved(itemId, location, now);
      return {
        location,
        onHand,
        reserved,
        safetyStock,
        available: Math.max(0, onHand - reserved - safetyStock),
        availableHighPriority: Math.max(0, onHand - reserved),
      };
    });
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

  /** PUT /items/{itemId}/stock: absolute; creates the item/location; an omitted safety stock is kept (0 when new). */
  setStock(itemId: string, location: string, quantity: number, now: number, safetyStock?: number): Expected {
    const locations = this.stock.get(itemId) ?? new Map<string, Stocked>();
    locations.set(location, { onHand: quantity, safetyStock: safetyStock ?? locations.get(location)?.safetyStock ?? 0 });
    this.stock.set(itemId, locations);
    return { status: 200, availability: this.figures(itemId, now) };
  }

  /** POST /items/{itemId}/stock/adjustments: only a stocked location; never below zero. */
  adjust(itemId: string, location: string, delta: number, now: number): Expected {
    const onHand = this.onHand(itemId, location);
    if (onHand === undefined) return problem(404, 'item_not_found');
    if (onHand + delta < 0) return problem(409, 'insufficient_stock', [{ itemId, location, requested: -delta, available: onHand }]);
    this.stock.get(itemId)!.get(location)!.onHand = onHand + delta;
    return { status: 200, availability: this.figures(itemId, now) };
  }

  /** POST /reservations. A 201 for a new reservation is recorded afterwards with `created()`. */
  reserve(key: string, body: ReserveBody, now: number): Expected {
    if (!isValid(body)) return problem(400, 'validation_failed');

    const bound = this.keys.get(key);
    if (bound) return bound.body === canonicalJson(body) ? { status: 201, replayOf: bound.first } : problem(422, 'idempotency_key_reused');

    const allocation = body.allocation ?? null;
    const isAllocated = (l: RequestLine) => allocation !== null && l.location === undefined;
    const priority = body.priority ?? 'normal';
    const candidatesOf = (itemId: string) => candidates(allocation!, this.locationsOf(itemId));
    const missing = body.lines.some((l) =>
      isAllocated(l) ? candidatesOf(l.itemId).length === 0 : this.onHand(l.itemId, l.location ?? DEFAULT_LOCATION) === undefined,
    );
    if (missing) return problem(404, 'item_not_found');

    const avail = (itemId: string, location: string) => this.availableTo(priority, itemId, location, now);
    const singleLocation = allocation?.strategy === 'single_location' ? this.chooseSingleLocation(body.lines.filter(isAllocated), allocation, avail) : null;
    const placements: Placement[] = body.lines.map((l) => {
      if (!isAllocated(l)) {
        const location = l.location ?? DEFAULT_LOCATION;
        const available = avail(l.itemId, location);
        return available < l.quantity
          ? { short: { itemId: l.itemId, location, requested: l.quantity, available } }
          : { held: [{ itemId: l.itemId, location, quantity: l.quantity }] };
      }
      if (singleLocation) return singleLocation.get(l)!;
      return allocate(l, allocation!, candidatesOf(l.itemId), (location) => avail(l.itemId, location));
    });
    const short = placements.flatMap((p) => ('short' in p ? [p.short] : []));
    if (short.length > 0) return problem(409, 'insufficient_stock', short);
    return {
      status: 201,
      created: {
        lines: placements.flatMap((p) => ('held' in p ? p.held : [])),
        ttlMs: (body.ttlSeconds ?? 900) * 1000,
        reference: body.reference ?? null,
        metadata: body.metadata ?? {},
        priority,
        allocation,
      },
    };
  }

  /**
   * single_location: the first candidate that can hold every allocated line. None can: each allocated line the
   * best candidate (short by the fewest units over all allocated lines together; ties: earlier) cannot hold is short,
   * with what that candidate has of it.
   */
  private chooseSingleLocation(
    lines: RequestLine[],
    allocation: Allocation,
    avail: (itemId: string, location: string) => number,
  ): Map<RequestLine, Placement> {
    const fits = (l: RequestLine, location: string) => this.onHand(l.itemId, location) !== undefined && avail(l.itemId, location) >= l.quantity;
    const has = (l: RequestLine, location: string) => (this.onHand(l.itemId, location) === undefined ? 0 : avail(l.itemId, location));
    const locations = allocation.locations!;
    const whole = locations.find((location) => lines.every((l) => fits(l, location)));
    if (whole !== undefined) return new Map(lines.map((l) => [l, { held: [{ itemId: l.itemId, location: whole, quantity: l.quantity }] }]));
    const shortfall = (location: string) => lines.reduce((units, l) => units + Math.max(0, l.quantity - has(l, location)), 0);
    let best = locations[0]!;
    for (const location of locations) if (shortfall(location) < shortfall(best)) best = location;
    return new Map(
      lines.map((l): [RequestLine, Placement] => [
        l,
        fits(l, best)
          ? { held: [{ itemId: l.itemId, location: best, quantity: l.quantity }] }
          : { short: { itemId: l.itemId, location: null, requested: l.quantity, available: has(l, best) } },
      ]),
    );
  }

  /** Records the reservation a 201 created (the service chose its id and expiry) and binds the key. */
  created(key: string, body: ReserveBody, lines: ModelLine[], id: string, expiresAt: number, createdAt: number, firstAnswer: unknown): void {
    this.reservations.set(id, {
      id,
      lines: lines.map((l) => ({ ...l })),
      expiresAt,
      createdAt,
      state: 'pending',
      reference: body.reference ?? null,
      metadata: body.metadata ?? {},
      version: 1,
    });
    this.keys.set(key, { body: canonicalJson(body), first: firstAnswer });
  }

  get(id: string, now: number): Expected {
    const r = this.reservations.get(id);
    if (!r) return problem(404, 'reservation_not_found');
    return this.document(r, now);
  }

  /**
   * The held units leave on-hand for good; only while on-hand still covers every line. With If-Match: a repeat
   * (confirmed already) answers 200 first, then another version is 412, before any other conflict.
   *
   * A body with `lines` confirms part (api.md "Saga operations", partial confirm): the listed pairs for their
   * quantity, the rest released, in one change. The body is judged first (its shape, a pair listed twice), then
   * whether the reservation exists, then the pairs against its lines whatever its state (each held, at most what
   * is held); only then the rules above, with on-hand judged against the confirmed quantities.
   */
  confirm(id: string, now: number, ifMatch?: IfMatch, body?: unknown): Expected {
    const listed = confirmLines(body);
    if (listed === 'invalid' || ifMatch === 'malformed') return problem(400, 'validation_failed');
    const r = this.reservations.get(id);
    if (!r) return problem(404, 'reservation_not_found');
    const heldOf = (w: ModelLine) => r.lines.find((l) => l.itemId === w.itemId && l.location === w.location);
    if (listed && !listed.every((w) => w.quantity <= (heldOf(w)?.quantity ?? 0))) return problem(400, 'validation_failed');
    const status = this.statusOf(r, now);
    if (status === 'confirmed') return this.document(r, now);
    if (ifMatch !== undefined && ifMatch !== this.versionOf(r, now)) return problem(412, 'precondition_failed');
    switch (status) {
      case 'released':
        return problem(409, 'reservation_released');
      case 'expired':
        return problem(409, 'reservation_expired');
      case 'pending':
        break;
    }
    // The units each line sells: all of it, or (partly) what the body lists of it.
    const sold = r.lines.map((l) => (listed ? (listed.find((w) => w.itemId === l.itemId && w.location === l.location)?.quantity ?? 0) : l.quantity));
    const short = r.lines.flatMap((l, i) => {
      const onHand = this.onHand(l.itemId, l.location) ?? 0;
      return onHand < sold[i]! ? [{ itemId: l.itemId, location: l.location, requested: sold[i]!, available: onHand }] : [];
    });
    if (short.length > 0) return problem(409, 'insufficient_stock', short);
    r.lines.forEach((l, i) => (this.stock.get(l.itemId)!.get(l.location)!.onHand -= sold[i]!));
    if (listed) r.lines = r.lines.map((l, i) => ({ ...l, confirmedQuantity: sold[i]! }));
    r.state = 'confirmed';
    r.version++;
    return this.document(r, now);
  }

  /**
   * The units are available again at once. Released: 200 unchanged (whatever the If-Match); then another version
   * is 412; confirmed: 409; expired: 200 unchanged.
   */
  release(id: string, now: number, ifMatch?: IfMatch): Expected {
    if (ifMatch === 'malformed') return problem(400, 'validation_failed');
    const r = this.reservations.get(id);
    if (!r) return problem(404, 'reservation_not_found');
    const status = this.statusOf(r, now);
    if (status === 'released') return this.document(r, now);
    if (ifMatch !== undefined && ifMatch !== this.versionOf(r, now)) return problem(412, 'precondition_failed');
    if (status === 'confirmed') return problem(409, 'reservation_confirmed');
    if (status === 'pending') {
      r.state = 'released';
      r.version++;
    }
    return this.document(r, now);
  }

  /**
   * POST /reservations/{id}/extend: a pending, unexpired reservation expires `ttlSeconds` after the service's now
   * (recorded from its answer with `extended()`). The body first (400), then If-Match against the version it reads
   * at, whatever its state (412), then the state's 409.
   */
  extend(id: string, body: unknown, now: number, ifMatch?: IfMatch): Expected {
    if (!isExtendBody(body) || ifMatch === 'malformed') return problem(400, 'validation_failed');
    const r = this.reservations.get(id);
    if (!r) return problem(404, 'reservation_not_found');
    if (ifMatch !== undefined && ifMatch !== this.versionOf(r, now)) return problem(412, 'precondition_failed');
    const status = this.statusOf(r, now);
    if (status !== 'pending') return problem(409, `reservation_${status}`);
    r.version++;
    return { ...this.document(r, now), expiresAt: { afterUpdateMs: body.ttlSeconds * 1000 } };
  }

  /** Records the expiry an extension's answer named. */
  extended(id: string, expiresAt: number): void {
    this.reservations.get(id)!.expiresAt = expiresAt;
  }

  /** The reservations of a reference, newest first (createdAt, then id, both descending). */
  private ofReference(reference: string): ModelReservation[] {
    return [...this.reservations.values()]
      .filter((r) => r.reference === reference)
      .sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  }

  /**
   * GET /reservations?reference=…: the first `limit` (status read at now, if filtered) below the reservation
   * `afterId` (the previous page's last; null: from the newest). A position, as the cursor is: what happened above
   * it since does not move the page.
   */
  listByReference(reference: string, status: Status | null, now: number, afterId: string | null, limit: number): Expected {
    const all = this.ofReference(reference);
    const below = afterId === null ? all : all.slice(all.findIndex((r) => r.id === afterId) + 1);
    const passing = below
      .map((r) => ({ id: r.id, status: this.statusOf(r, now), version: this.versionOf(r, now) }))
      .filter((r) => status === null || r.status === status);
    return { status: 200, items: passing.slice(0, limit), more: passing.length > limit };
  }

  /** POST /reservations/release: every pending one released, the rest as they are; more than the bound: 409, nothing. */
  releaseByReference(reference: string, now: number): Expected {
    const all = this.ofReference(reference);
    if (all.length > MAX_RELEASE_BY_REFERENCE) return problem(409, 'too_many_reservations');
    for (const r of all) {
      if (this.statusOf(r, now) !== 'pending') continue;
      r.state = 'released';
      r.version++;
    }
    return { status: 200, reference, items: all.map((r) => ({ id: r.id, status: this.statusOf(r, now), version: this.versionOf(r, now) })) };
  }
}

const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * A confirm body's `lines`, the location defaulted: null to confirm everything (no body, or none listed), 'invalid'
 * for a shape the contract refuses or a pair listed twice.
 */
function confirmLines(body: unknown): ModelLine[] | null | 'invalid' {
  if (body === undefined) return null;
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return 'invalid';
  const lines = (body as { lines?: unknown }).lines;
  if (lines === undefined) return null;
  if (!Array.isArray(lines) || lines.length < 1 || lines.length > MAX_CONFIRM_LINES) return 'invalid';
  const out: ModelLine[] = [];
  for (const entry of lines as unknown[]) {
    const { itemId, location, quantity } = (entry ?? {}) as { itemId?: unknown; location?: unknown; quantity?: unknown };
    if (typeof itemId !== 'string' || (location !== undefined && typeof location !== 'string')) return 'invalid';
    if (!Number.isInteger(quantity) || (quantity as number) < 1) return 'invalid';
    out.push({ itemId, location: location ?? DEFAULT_LOCATION, quantity: quantity as number });
  }
  const pairs = new Set(out.map((l) => `${l.itemId}\u0000${l.location}`));
  return pairs.size === out.length ? out : 'invalid';
}

/** An extend body: `ttlSeconds` only, an integer from 1 to MAX_TTL_SECONDS. */
function isExtendBody(body: unknown): body is { ttlSeconds: number } {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return false;
  const keys = Object.keys(body);
  const ttl = (body as { ttlSeconds?: unknown }).ttlSeconds;
  return keys.length === 1 && keys[0] === 'ttlSeconds' && Number.isInteger(ttl) && (ttl as number) >= 1 && (ttl as number) <= MAX_TTL_SECONDS;
}

/** The rules a body must keep besides its shape (api.md): pairs at most once, an allocated item in one line only. */
function isValid(body: ReserveBody): boolean {
  const a = body.allocation;
  if (a) {
    if (a.strategy !== 'most_available' && !a.locations) return false;
    if (a.strategy === 'single_location' && a.split) return false;
    if (a.locations && new Set(a.locations).size !== a.locations.length) return false;
    const allocatedItems = body.lines.filter((l) => l.location === undefined).map((l) => l.itemId);
    if (allocatedItems.some((item) => body.lines.filter((l) => l.itemId === item).length > 1)) return false;
  }
  const pairs = new Set(body.lines.map((l) => `${l.itemId}\u0000${l.location ?? DEFAULT_LOCATION}`));
  return pairs.size === body.lines.length;
}

/** The candidate locations of an allocated line, in the strategy's order, stocked ones only. */
function candidates(allocation: Allocation, stockedByName: string[]): string[] {
  if (!allocation.locations) return stockedByName; // most_available without locations: every stocked one, by name
  return allocation.locations.filter((l) => stockedByName.includes(l));
}

/** ordered and most_available, with and without split. `candidateLocations` is non-empty. */
function allocate(l: RequestLine, allocation: Allocation, candidateLocations: string[], avail: (location: string) => number): Placement {
  const ranked =
    allocation.strategy === 'most_available'
      ? [...candidateLocations].sort((a, b) => avail(b) - avail(a) || candidateLocations.indexOf(a) - candidateLocations.indexOf(b))
      : candidateLocations;
  const short = (available: number): Placement => ({ short: { itemId: l.itemId, location: null, requested: l.quantity, available } });
  if (!allocation.split) {
    const location = ranked.find((c) => avail(c) >= l.quantity);
    if (location === undefined) return short(Math.max(...ranked.map(avail)));
    return { held: [{ itemId: l.itemId, location, quantity: l.quantity }] };
  }
  const total = ranked.reduce((sum, c) => sum + avail(c), 0);
  if (total < l.quantity) return short(total);
  const held: ModelLine[] = [];
  let left = l.quantity;
  for (const c of ranked) {
    const take = Math.min(left, avail(c));
    if (take > 0) held.push({ itemId: l.itemId, location: c, quantity: take });
    left -= take;
    if (left === 0) break;
  }
  return { held };
}
