import type { FastifyInstance } from 'fastify';
import type { RedisClient } from '../../src/redis/client.js';
import pg from 'pg';
import type { Keys } from '../../src/redis/keys.js';
import { emptyLocation, parseHold, parseHoldField, parseStockField, type HoldStateCode } from '../../src/redis/layout.js';
import { HoldState } from '../../src/redis/status.js';

/**
 * The invariants of architecture.md, checked against the stores themselves: one reader and one checker for the
 * integration tests (`checkInvariants` below), the fault drills (test/drills/checks.ts adds what the clients were
 * told) and the bench audit (bench/audit.ts). PostgreSQL is read with this module's own SQL, never through
 * src/store (which is what is being checked); Redis through src/redis/layout.ts, the format Lua and TypeScript
 * share.
 *
 * Redis expires holds lazily (a script touching the item releases the holds whose TTL passed), so its raw `r:`
 * counter may still include holds past their TTL, and PostgreSQL keeps a reservation `pending` until a sweeper
 * records its expiry. Live holds are therefore judged at one instant T (Redis' clock, read once): Redis' pending
 * holds with expiry > T against PostgreSQL's pending lines with expires_at > T.
 */

export const pairKey = (itemId: string, location: string): string => `${itemId}@${location}`;

// ---- what is read -------------------------------------------------------------------------------------------

export type ReservationStatus = 'pending' | 'confirmed' | 'released' | 'expired';

export interface Line {
  itemId: string;
  location: string;
  quantity: number;
  /** Set by a partial confirm only: the units of the line sold (the rest were released). */
  confirmedQuantity?: number;
}

/** The units a line of a reservation in `status` sold: all of it once confirmed, unless a partial confirm said fewer. */
export const soldOf = (status: ReservationStatus, l: Line): number => (status === 'confirmed' ? (l.confirmedQuantity ?? l.quantity) : 0);

export interface PgReservation {
  id: string;
  status: ReservationStatus;
  expiresAtMs: number;
  updatedAtMs: number;
  /** api.md "Versions": 1 when created, +1 on every recorded change. */
  version: number;
  /** In line order. */
  lines: Line[];
}

export interface Movement {
  itemId: string;
  location: string;
  kind: string;
  onHand: number;
  reserved: number;
  /** The safety stock change (safety_delta). */
  safety: number;
  reservationId: string | null;
  reason: string | null;
}

export interface IdempotencyRow {
  scope: string;
  key: string;
  reservationId: string;
  statusCode: number;
  /** The id the stored first answer names. */
  responseId: string | null;
}

/** One consistent read of PostgreSQL (a repeatable-read transaction). */
export interface PostgresState {
  /** PostgreSQL's clock at the snapshot, ms. */
  nowMs: number;
  reservations: Map<string, PgReservation>;
  /** pairKey → the stock row. */
  stock: Map<string, { itemId: string; location: string; onHand: number; reserved: number; safetyStock: number }>;
  movements: Movement[];
  idempotency: IdempotencyRow[];
}

export interface RedisHold {
  itemId: string;
  reservationId: string;
  location: string;
  state: HoldStateCode;
  quantity: number;
  expiresAtMs: number;
  /** Its reservation's version, as the hold carries it. */
  version: number;
}

export interface RedisState {
  /** Redis' clock when it was read (T), ms. */
  nowMs: number;
  marker: string | null;
  /** The items read: Redis is only judged on these. */
  items: ReadonlySet<string>;
  /** pairKey → the stock hash's figures of that location (null: no such field). */
  stock: Map<
    string,
    {
      itemId: string;
      location: string;
      onHand: number | null;
      reserved: number | null;
      pending: number | null;
      safety: number | null;
      safetyPending: number | null;
    }
  >;
  holds: RedisHold[];
  /** Fields or values not of src/redis/layout.ts's format. */
  malformed: string[];
}

/** What a check looks at; a store a design does not have (the bench's baselines) is null. */
export interface StoreState {
  postgres: PostgresState | null;
  redis: RedisState | null;
}

type Queryable = pg.Pool | pg.ClientBase;

/**
 * Reads PostgreSQL in one repeatable-read transaction: everything, or only what concerns `items` (their stock
 * rows and ledger, the reservations with a line on them, those lines, and those reservations' idempotency rows).
 */
export async function readPostgres(db: Queryable, items?: readonly string[]): Promise<PostgresState> {
  const client = db instanceof pg.Pool ? await db.connect() : db;
  const only = (column: string, n = 1) => (items ? ` WHERE ${column} = ANY($${n})` : '');
  const params = items ? [items] : [];
  const reservationIds = items ? ' WHERE id IN (SELECT reservation_id FROM reservation_lines WHERE item_id = ANY($1))' : '';
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const now = await client.query<{ now_ms: number }>('SELECT floor(extract(epoch FROM now()) * 1000)::float8 AS now_ms');
    const rs = await client.query<{ id: string; status: ReservationStatus; expires_ms: number; updated_ms: number; version: number }>(
      `SELECT id, status, version, floor(extract(epoch FROM expires_at) * 1000)::float8 AS expires_ms,
              floor(extract(epoch FROM updated_at) * 1000)::float8 AS updated_ms
       FROM reservations${reservationIds}`,
      params,
    );
    const ls = await client.query<{ reservation_id: string; item_id: string; location: string; quantity: number; confirmed_quantity: number | null }>(
      `SELECT reservation_id, item_id, location, quantity, confirmed_quantity FROM reservation_lines${only('item_id')}
       ORDER BY reservation_id, line_no`,
      params,
    );
    const st = await client.query<{ item_id: string; location: string; on_hand: number; reserved: number; safety_stock: number }>(
      `SELECT item_id, location, on_hand::float8 AS on_hand, reserved::float8 AS reserved, safety_stock::float8 AS safety_stock
       FROM stock${only('item_id')}`,
      params,
    );
    const mv = await client.query<{
      item_id: string;
      location: string;
      kind: string;
      on_hand_delta: number;
      reserved_delta: number;
      safety_delta: number;
      reservation_id: string | null;
      reason: string | null;
    }>(
      `SELECT item_id, location, kind, on_hand_delta::float8 AS on_hand_delta, reserved_delta::float8 AS reserved_delta,
              safety_delta::float8 AS safety_delta, reservation_id, reason
       FROM stock_movements${only('item_id')} ORDER BY id`,
      params,
    );
    const ik = await client.query<{ scope: string; key: string; reservation_id: string; status_code: number; response_id: string | null }>(
      `SELECT scope, key, reservation_id, status_code, response::jsonb->>'id' AS response_id
       FROM idempotency_keys${items ? ' WHERE reservation_id IN (SELECT reservation_id FROM reservation_lines WHERE item_id = ANY($1))' : ''}`,
      params,
    );
    await client.query('COMMIT');

    const reservations = new Map<string, PgReservation>();
    for (const r of rs.rows) {
      reservations.set(r.id, { id: r.id, status: r.status, expiresAtMs: r.expires_ms, updatedAtMs: r.updated_ms, version: r.version, lines: [] });
    }
    for (const l of ls.rows) {
      const line: Line = { itemId: l.item_id, location: l.location, quantity: l.quantity };
      if (l.confirmed_quantity !== null) line.confirmedQuantity = l.confirmed_quantity;
      reservations.get(l.reservation_id)?.lines.push(line);
    }
    return {
      nowMs: now.rows[0]!.now_ms,
      reservations,
      stock: new Map(
        st.rows.map((s) => [
          pairKey(s.item_id, s.location),
          { itemId: s.item_id, location: s.location, onHand: s.on_hand, reserved: s.reserved, safetyStock: s.safety_stock },
        ]),
      ),
      movements: mv.rows.map((m) => ({
        itemId: m.item_id,
        location: m.location,
        kind: m.kind,
        onHand: m.on_hand_delta,
        reserved: m.reserved_delta,
        safety: m.safety_delta,
        reservationId: m.reservation_id,
        reason: m.reason,
      })),
      idempotency: ik.rows.map((k) => ({
        scope: k.scope,
        key: k.key,
        reservationId: k.reservation_id,
        statusCode: k.status_code,
        responseId: k.response_id,
      })),
    };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    if (client !== db) (client as pg.PoolClient).release();
  }
}

/** Items read from Redis per pipeline: few round trips, no single reply too large. */
const REDIS_CHUNK = 500;

/**
 * The generation marker: a single Redis' one, or on a cluster those of the items' slots (null if one is missing;
 * the generation without the master's id it is bound to).
 */
async function readMarker(redis: RedisClient, keys: Keys, items: readonly string[]): Promise<string | null> {
  if (!keys.cluster) return redis.get(keys.marker);
  const groups = [...new Set(items.map((itemId) => keys.groupOf(keys.item(itemId).stock)))];
  const markers = await Promise.all((groups.length > 0 ? groups : [0]).map((group) => redis.get(keys.markerOf(group))));
  if (markers.some((marker) => marker === null)) return null;
  return markers[0]!.split('@')[0]!;
}

/** Reads Redis' clock, its generation marker, and each item's stock and holds hashes. */
export async function readRedis(redis: RedisClient, keys: Keys, items: readonly string[]): Promise<RedisState> {
  const [seconds, micros] = (await redis.time()) as [number | string, number | string];
  const state: RedisState = {
    nowMs: Number(seconds) * 1000 + Math.floor(Number(micros) / 1000),
    marker: await readMarker(redis, keys, items),
    items: new Set(items),
    stock: new Map(),
    holds: [],
    malformed: [],
  };
  const unique = [...state.items];
  for (let i = 0; i < unique.length; i += REDIS_CHUNK) {
    const chunk = unique.slice(i, i + REDIS_CHUNK);
    // Commands sent together (a pipeline would have to keep to one slot on a cluster).
    const replies = (await Promise.all(chunk.flatMap((itemId) => [redis.hgetall(keys.item(itemId).stock), redis.hgetall(keys.item(itemId).holds)]))).map(
      (reply) => [null, reply] as const,
    );
    chunk.forEach((itemId, n) => {
      const k = keys.item(itemId);
      for (const [field, value] of Object.entries(replies[2 * n]![1] as Record<string, string>)) {
        const parsed = parseStockField(field);
        if (!parsed) {
          state.malformed.push(`Redis ${k.stock} has an unexpected field ${field}`);
          continue;
        }
        const key = pairKey(itemId, parsed.location);
        const entry = state.stock.get(key) ?? { itemId, location: parsed.location, ...emptyLocation() };
        entry[parsed.figure] = Number(value);
        state.stock.set(key, entry);
      }
      for (const [field, value] of Object.entries(replies[2 * n + 1]![1] as Record<string, string>)) {
        const at = parseHoldField(field);
        const hold = parseHold(value);
        if (!at || !hold) {
          state.malformed.push(`Redis ${k.holds} has a malformed hold ${field} = ${value}`);
          continue;
        }
        state.holds.push({ itemId, ...at, state: hold.state, quantity: hold.quantity, expiresAtMs: hold.expiresAtMs, version: hold.version });
      }
    });
  }
  return state;
}

// ---- the checks ---------------------------------------------------------------------------------------------

/** The invariants a look at the stores can judge (the rest need what the clients were told). */
export type StoreInvariant = 'I1' | 'I2' | 'I3' | 'I5';

export interface CheckOptions {
  /**
   * Traffic has settled and nothing is left to heal: Redis must equal PostgreSQL figure for figure (on-hand, live
   * reserved, safety stock, which holds were sold, no pending supply nor pending safety stock decrease). The drills leave this to their reconciliation step.
   */
  redisMatchesPostgres?: boolean;
  /**
   * No operator reduced on-hand below what is held (the one way holds may exceed on-hand, architecture.md I1):
   * confirmed + live held units ≤ units supplied, and Redis' reserved ≤ its on-hand.
   */
  holdsWithinSupply?: boolean;
  /**
   * Holds this close to their expiry at T are left out of the hold-by-hold comparison (a snapshot of two stores
   * is not one instant). 0 (exact) unless given.
   */
  expiryMarginMs?: number;
  /**
   * pairKey → units: stock came only from this supply and no reservation reached its TTL (the bench: it seeds, and
   * its TTLs outlast the run). Judged on PostgreSQL, or on Redis for a design without PostgreSQL.
   */
  closedSupply?: ReadonlyMap<string, number>;
  /** Appended to an oversell's message: what may explain `excess` units at this pair (the drills' phantom stock). */
  explainOversell?: (pair: string, excess: number) => string;
}

/** Everything known about one (item, location). */
export interface LocationFigures {
  itemId: string;
  location: string;
  /**
   * The stock hash (`h:` / raw `r:` / `p:` / `s:` / `q:`; null where absent), and the units of its holds: pending
   * whose TTL has not passed at T, pending (raw), confirmed (sold, while their tombstones last).
   */
  redis: {
    onHand: number | null;
    reservedRaw: number | null;
    pending: number | null;
    safety: number | null;
    safetyPending: number | null;
    reservedLive: number;
    heldRaw: number;
    sold: number;
  };
  pg: { onHand: number | null; reserved: number | null; safetyStock: number | null };
  /**
   * Sums of the ledger; `supplied` is what set/adjust added, `confirmedOut` what confirms took out, `safety` the
   * safety stock changes.
   */
  ledger: { rows: number; onHand: number; reserved: number; supplied: number; confirmedOut: number; safety: number };
  /** Units of reservation lines: pending (any), pending and unexpired at T, confirmed. */
  lines: { pending: number; pendingLive: number; confirmed: number };
}

export interface StoreCheck {
  /** The instant T live holds were judged at (Redis' clock if Redis was read, else PostgreSQL's). */
  atMs: number;
  violations: Record<StoreInvariant, string[]>;
  /** The violations that say Redis differs from PostgreSQL (also listed under I5). */
  differences: string[];
  /** Sorted by item, then location. */
  figures: LocationFigures[];
}

/**
 * The ledger rows (besides its reserve) a line of a reservation in `status` must have: none while pending; a
 * confirm of the units sold and a release of the rest once confirmed (a partial confirm sells fewer than held: a
 * row of 0 units is not written); a release or an expiry of all of it otherwise.
 */
function terminalRows(status: ReservationStatus, l: Line): { kind: string; onHand: number; reserved: number }[] {
  switch (status) {
    case 'pending':
      return [];
    case 'confirmed': {
      const sold = soldOf(status, l);
      return [
        ...(sold > 0 ? [{ kind: 'confirm', onHand: -sold, reserved: -sold }] : []),
        ...(sold < l.quantity ? [{ kind: 'release', onHand: 0, reserved: sold - l.quantity }] : []),
      ];
    }
    case 'released':
      return [{ kind: 'release', onHand: 0, reserved: -l.quantity }];
    case 'expired':
      return [{ kind: 'expire', onHand: 0, reserved: -l.quantity }];
  }
}

const isLive = (r: PgReservation, atMs: number) => r.status === 'pending' && r.expiresAtMs > atMs;
const holdText = (h: RedisHold | undefined) => (h ? `${h.state}:${h.quantity}:${h.expiresAtMs}:${h.version}` : 'no hold');
const lineLabel = (r: { id: string; status: string }, l: Line) => `reservation ${r.id} (${r.status}) line ${l.quantity}×${pairKey(l.itemId, l.location)}`;

/** Judges the stores against the invariants; never throws on a violation, lists each one with its figures. */
export function checkStores(state: StoreState, options: CheckOptions = {}): StoreCheck {
  const { postgres: pgs, redis: rs } = state;
  const margin = options.expiryMarginMs ?? 0;
  const explain = options.explainOversell ?? (() => '');
  const atMs = rs?.nowMs ?? pgs?.nowMs ?? Date.now();
  // PostgreSQL's own invariants are judged at the snapshot's earliest instant: more holds count as live there.
  const supplyAtMs = Math.min(pgs?.nowMs ?? Infinity, rs?.nowMs ?? Infinity);
  const violations: Record<StoreInvariant, string[]> = { I1: [], I2: [], I3: [], I5: [] };
  const differences: string[] = [];
  const differ = (message: string) => {
    differences.push(message);
    violations.I5.push(message);
  };
  const inRedis = (itemId: string) => rs !== null && rs.items.has(itemId);
  const compareStores = pgs !== null && rs !== null && (options.redisMatchesPostgres ?? false);

  // --- figures per (item, location) --------------------------------------------------------------------------
  const figures = new Map<string, LocationFigures>();
  const figure = (itemId: string, location: string): LocationFigures => {
    const key = pairKey(itemId, location);
    let f = figures.get(key);
    if (!f) {
      f = {
        itemId,
        location,
        redis: { onHand: null, reservedRaw: null, pending: null, safety: null, safetyPending: null, reservedLive: 0, heldRaw: 0, sold: 0 },
        pg: { onHand: null, reserved: null, safetyStock: null },
        ledger: { rows: 0, onHand: 0, reserved: 0, supplied: 0, confirmedOut: 0, safety: 0 },
        lines: { pending: 0, pendingLive: 0, confirmed: 0 },
      };
      figures.set(key, f);
    }
    return f;
  };
  const heldAtSupply = new Map<string, number>();
  if (rs) {
    for (const s of rs.stock.values()) {
      const f = figure(s.itemId, s.location);
      f.redis.onHand = s.onHand;
      f.redis.reservedRaw = s.reserved;
      f.redis.pending = s.pending;
      f.redis.safety = s.safety;
      f.redis.safetyPending = s.safetyPending;
    }
    for (const h of rs.holds) {
      const f = figure(h.itemId, h.location);
      if (h.state === HoldState.pending) {
        f.redis.heldRaw += h.quantity;
        if (h.expiresAtMs > atMs) f.redis.reservedLive += h.quantity;
      } else if (h.state === HoldState.confirmed) f.redis.sold += h.quantity;
    }
  }
  if (pgs) {
    for (const s of pgs.stock.values()) {
      const f = figure(s.itemId, s.location);
      f.pg.onHand = s.onHand;
      f.pg.reserved = s.reserved;
      f.pg.safetyStock = s.safetyStock;
    }
    for (const m of pgs.movements) {
      // A void names a stock decision reconciliation took back for good: no units, and no stock row of its own.
      if (m.kind === 'void') {
        if (m.onHand !== 0 || m.reserved !== 0 || m.safety !== 0) {
          violations.I5.push(`${pairKey(m.itemId, m.location)}: a void ledger row moves ${m.onHand}/${m.reserved}/${m.safety} units`);
        }
        continue;
      }
      const f = figure(m.itemId, m.location);
      f.ledger.rows++;
      f.ledger.onHand += m.onHand;
      f.ledger.reserved += m.reserved;
      f.ledger.safety += m.safety;
      if (m.safety !== 0 && m.kind !== 'set' && m.kind !== 'safety') {
        violations.I5.push(`${pairKey(m.itemId, m.location)}: a ${m.kind} ledger row changes the safety stock by ${m.safety}`);
      }
      if (m.kind === 'set' || m.kind === 'adjust') f.ledger.supplied += m.onHand;
      if (m.kind === 'confirm') f.ledger.confirmedOut -= m.onHand;
    }
    for (const r of pgs.reservations.values()) {
      for (const l of r.lines) {
        const f = figure(l.itemId, l.location);
        if (r.status === 'pending') {
          f.lines.pending += l.quantity;
          if (r.expiresAtMs > atMs) f.lines.pendingLive += l.quantity;
          if (r.expiresAtMs > supplyAtMs) heldAtSupply.set(pairKey(l.itemId, l.location), (heldAtSupply.get(pairKey(l.itemId, l.location)) ?? 0) + l.quantity);
        }
        f.lines.confirmed += soldOf(r.status, l);
      }
    }
  }

  // --- counters, per (item, location) ------------------------------------------------------------------------
  if (rs && rs.marker === null) violations.I3.push('Redis has no generation marker (state not rebuilt)');
  for (const m of rs?.malformed ?? []) violations.I5.push(m);
  for (const f of figures.values()) {
    const at = pairKey(f.itemId, f.location);
    if (pgs) {
      const pgOnHand = f.pg.onHand ?? 0;
      const pgReserved = f.pg.reserved ?? 0;
      if (f.pg.onHand === null && f.ledger.rows > 0) violations.I5.push(`${at}: the ledger has ${f.ledger.rows} rows, PostgreSQL no stock row`);
      // I1: no oversell.
      if (pgOnHand < 0) violations.I1.push(`${at}: PostgreSQL on-hand is ${pgOnHand}${explain(at, -pgOnHand)}`);
      if (pgReserved < 0) violations.I1.push(`${at}: PostgreSQL reserved is ${pgReserved}`);
      if (f.lines.confirmed > f.ledger.supplied) {
        const excess = f.lines.confirmed - f.ledger.supplied;
        violations.I1.push(`${at}: ${f.lines.confirmed} units confirmed but only ${f.ledger.supplied} supplied (set/adjust ledger)${explain(at, excess)}`);
      }
      const held = heldAtSupply.get(at) ?? 0;
      if (options.holdsWithinSupply && f.lines.confirmed + held > f.ledger.supplied) {
        const excess = f.lines.confirmed + held - f.ledger.supplied;
        violations.I1.push(
          `${at}: ${f.lines.confirmed} confirmed + ${held} held by pending reservations > ${f.ledger.supplied} supplied (oversold by ${excess})${explain(at, excess)}`,
        );
      }
      // I5: conservation inside PostgreSQL.
      if (pgOnHand !== f.ledger.onHand) violations.I5.push(`${at}: stock.on_hand ${pgOnHand} ≠ Σ ledger on_hand_delta ${f.ledger.onHand}`);
      if (f.ledger.onHand !== f.ledger.supplied - f.ledger.confirmedOut) {
        violations.I5.push(`${at}: ledger on-hand ${f.ledger.onHand} ≠ supplied ${f.ledger.supplied} − confirmed ${f.ledger.confirmedOut}`);
      }
      if (pgOnHand !== f.ledger.supplied - f.lines.confirmed) {
        violations.I5.push(`${at}: on-hand ${pgOnHand} ≠ supplied ${f.ledger.supplied} − confirmed lines ${f.lines.confirmed}`);
      }
      if (f.ledger.confirmedOut !== f.lines.confirmed) {
        violations.I5.push(`${at}: ledger confirm movements take out ${f.ledger.confirmedOut} units, confirmed lines hold ${f.lines.confirmed}`);
      }
      if (pgReserved !== f.ledger.reserved) violations.I5.push(`${at}: stock.reserved ${pgReserved} ≠ Σ ledger reserved_delta ${f.ledger.reserved}`);
      if (pgReserved !== f.lines.pending) violations.I5.push(`${at}: stock.reserved ${pgReserved} ≠ Σ pending lines ${f.lines.pending}`);
      const pgSafety = f.pg.safetyStock ?? 0;
      if (pgSafety < 0) violations.I5.push(`${at}: PostgreSQL safety stock is ${pgSafety}`);
      if (pgSafety !== f.ledger.safety) violations.I5.push(`${at}: stock.safety_stock ${pgSafety} ≠ Σ ledger safety_delta ${f.ledger.safety}`);
    }
    if (inRedis(f.itemId)) {
      if (f.redis.onHand !== null && f.redis.onHand < 0) violations.I1.push(`${at}: Redis on-hand is ${f.redis.onHand}`);
      if (f.redis.reservedRaw !== null && f.redis.reservedRaw < 0) violations.I1.push(`${at}: Redis reserved is ${f.redis.reservedRaw}`);
      if ((f.redis.safety ?? 0) < 0) violations.I1.push(`${at}: Redis safety stock is ${f.redis.safety}`);
      if ((f.redis.safetyPending ?? 0) > (f.redis.safety ?? 0)) {
        violations.I5.push(`${at}: Redis pending safety stock decrease (q:) ${f.redis.safetyPending} > its safety stock (s:) ${f.redis.safety ?? 0}`);
      }
      if (options.holdsWithinSupply && f.redis.onHand !== null && (f.redis.reservedRaw ?? 0) > f.redis.onHand) {
        violations.I1.push(`${at}: Redis reserved ${f.redis.reservedRaw} > on-hand ${f.redis.onHand}`);
      }
      // I5: conservation within Redis.
      if ((f.redis.reservedRaw ?? 0) !== f.redis.heldRaw) {
        violations.I5.push(`${at}: Redis reserved (r:) ${f.redis.reservedRaw ?? 0} ≠ Σ its pending holds ${f.redis.heldRaw}`);
      }
    }
    if (compareStores && inRedis(f.itemId)) {
      // Some store knows this location (that is how it has figures): both must stock it.
      if (f.pg.onHand === null) differ(`${at}: PostgreSQL has no stock row (Redis or the ledger knows this location)`);
      if (f.redis.onHand === null) differ(`${at}: Redis has no on-hand field (PostgreSQL knows this location)`);
      if (f.redis.pending !== null) differ(`${at}: Redis has pending supply (p:) of ${f.redis.pending} that was neither applied nor abandoned`);
      if (f.redis.onHand !== f.pg.onHand) differ(`${at}: Redis on-hand ${f.redis.onHand} ≠ PostgreSQL on_hand ${f.pg.onHand}`);
      if (f.redis.safetyPending !== null) {
        differ(`${at}: Redis has a pending safety stock decrease (q:) of ${f.redis.safetyPending} that was neither applied nor dropped`);
      }
      if ((f.redis.safety ?? 0) !== (f.pg.safetyStock ?? 0)) {
        differ(`${at}: Redis safety stock ${f.redis.safety ?? 0} ≠ PostgreSQL safety_stock ${f.pg.safetyStock ?? 0}`);
      }
      if (f.redis.reservedLive !== f.lines.pendingLive) {
        differ(`${at}: Redis reserved (unexpired holds) ${f.redis.reservedLive} ≠ Σ pending unexpired lines ${f.lines.pendingLive}`);
      }
    }
  }

  // --- a closed supply (the bench) ---------------------------------------------------------------------------
  for (const [at, units] of options.closedSupply ?? []) {
    const f = figures.get(at);
    const store = pgs ? 'PostgreSQL' : 'Redis';
    const onHand = pgs ? f?.pg.onHand : f?.redis.onHand;
    if (!f || onHand === null || onHand === undefined) {
      violations.I5.push(`${at}: missing from ${store}`);
      continue;
    }
    const sold = pgs ? f.lines.confirmed : f.redis.sold;
    const held = pgs ? f.lines.pending : f.redis.heldRaw;
    const reserved = (pgs ? f.pg.reserved : f.redis.reservedRaw) ?? 0;
    if (sold + held > units) violations.I1.push(`${at}: ${store} oversold: sold ${sold} + held ${held} > supplied ${units}${explain(at, sold + held - units)}`);
    if (reserved > onHand) violations.I1.push(`${at}: ${store} reserved ${reserved} > on-hand ${onHand}`);
    if (onHand !== units - sold) violations.I5.push(`${at}: ${store} on-hand ${onHand} ≠ supplied ${units} − sold ${sold}`);
    if (reserved !== held) violations.I5.push(`${at}: ${store} reserved ${reserved} ≠ pending holds ${held}`);
    // Nothing expires in a closed supply, so the raw counters agree too.
    if (compareStores && (f.redis.reservedRaw ?? 0) !== (f.pg.reserved ?? 0)) {
      differ(`${at}: Redis reserved (r:) ${f.redis.reservedRaw ?? 0} ≠ PostgreSQL reserved ${f.pg.reserved ?? 0}`);
    }
  }

  if (pgs) {
    // --- I2: PostgreSQL's idempotency records ------------------------------------------------------------------
    const byKey = new Map<string, IdempotencyRow[]>();
    for (const row of pgs.idempotency) {
      const k = `${row.scope}/${row.key}`;
      byKey.set(k, [...(byKey.get(k) ?? []), row]);
    }
    const keyOf = new Map<string, string>();
    for (const [k, rows] of byKey) {
      if (rows.length > 1) violations.I2.push(`key ${k}: ${rows.length} idempotency rows (${rows.map((r) => r.reservationId).join(', ')})`);
      for (const row of rows) {
        const other = keyOf.get(row.reservationId);
        if (other !== undefined) violations.I2.push(`reservation ${row.reservationId} is the answer of two keys: ${other} and ${k}`);
        keyOf.set(row.reservationId, k);
        if (row.responseId !== row.reservationId) violations.I2.push(`key ${k}: stored answer names ${String(row.responseId)} but the row names ${row.reservationId}`);
        if (!pgs.reservations.has(row.reservationId)) violations.I2.push(`key ${k}: names reservation ${row.reservationId}, which PostgreSQL does not have`);
      }
    }

    // --- each reservation line: its ledger rows (I5), its hold (I3) ---------------------------------------------
    const lineKey = (reservationId: string, itemId: string, location: string) => `${reservationId}/${pairKey(itemId, location)}`;
    const movementsByLine = new Map<string, Movement[]>();
    for (const m of pgs.movements) {
      if (m.reservationId === null) continue;
      if (!pgs.reservations.has(m.reservationId)) violations.I5.push(`ledger ${m.kind} row for unknown reservation ${m.reservationId}`);
      const k = lineKey(m.reservationId, m.itemId, m.location);
      movementsByLine.set(k, [...(movementsByLine.get(k) ?? []), m]);
    }
    const holdByLine = new Map<string, RedisHold>();
    for (const h of rs?.holds ?? []) holdByLine.set(lineKey(h.reservationId, h.itemId, h.location), h);
    const seenMovements = new Set<string>();
    const seenHolds = new Set<string>();
    for (const r of pgs.reservations.values()) {
      if (!keyOf.has(r.id)) violations.I2.push(`reservation ${r.id} (${r.lines.map((l) => `${l.quantity}×${pairKey(l.itemId, l.location)}`).join(' + ')}) has no idempotency key row`);
      if (r.status === 'confirmed' && r.updatedAtMs >= r.expiresAtMs) {
        violations.I3.push(`reservation ${r.id} was confirmed at ${new Date(r.updatedAtMs).toISOString()}, after its TTL (${new Date(r.expiresAtMs).toISOString()})`);
      }
      for (const l of r.lines) {
        const k = lineKey(r.id, l.itemId, l.location);
        const label = lineLabel(r, l);
        seenMovements.add(k);
        const ms = movementsByLine.get(k) ?? [];
        const reserves = ms.filter((m) => m.kind === 'reserve');
        const rest = ms.filter((m) => m.kind !== 'reserve');
        const terminal = terminalRows(r.status, l);
        const ledgerOk =
          reserves.length === 1 &&
          reserves[0]!.reserved === l.quantity &&
          reserves[0]!.onHand === 0 &&
          rest.length === terminal.length &&
          terminal.every((row) => rest.some((m) => m.kind === row.kind && m.onHand === row.onHand && m.reserved === row.reserved));
        if (l.confirmedQuantity !== undefined && (r.status !== 'confirmed' || l.confirmedQuantity > l.quantity || l.confirmedQuantity < 0)) {
          violations.I5.push(`${label}: confirmed_quantity ${l.confirmedQuantity} on a ${r.status} line of ${l.quantity}`);
        }
        if (!ledgerOk) {
          const rows = ms.map((m) => `${m.kind}(${m.onHand},${m.reserved})`).join(' ') || 'none';
          violations.I5.push(`${label}: ledger rows ${rows} do not record it exactly once`);
        }

        if (!inRedis(l.itemId)) continue;
        const hold = holdByLine.get(k);
        if (hold) seenHolds.add(k);
        // In the same state, Redis and PostgreSQL name the same version (an expiry the sweeper has not recorded yet
        // is a state apart: Redis is one version ahead until it is).
        if (compareStores && hold && hold.state === HoldState[r.status] && hold.version !== r.version) {
          differ(`${label}: Redis hold ${holdText(hold)} is at version ${hold.version}, PostgreSQL at ${r.version}`);
        }
        // A confirmed hold keeps the units it sold (what a revert or a reconciliation gives back to on-hand).
        if (compareStores && hold && hold.state === HoldState.confirmed && r.status === 'confirmed' && hold.quantity !== soldOf(r.status, l)) {
          differ(`${label}: Redis hold ${holdText(hold)} sold ${hold.quantity}, PostgreSQL ${soldOf(r.status, l)}`);
        }
        const live = isLive(r, atMs);
        if (live && r.expiresAtMs - atMs >= margin) {
          if (!hold || hold.state !== HoldState.pending) {
            violations.I3.push(`${label}: pending until ${r.expiresAtMs} (${r.expiresAtMs - atMs} ms after T) but not held in Redis (${holdText(hold)})`);
          } else if (hold.quantity !== l.quantity || hold.expiresAtMs !== r.expiresAtMs) {
            violations.I3.push(`${label}: pending until ${r.expiresAtMs}, but Redis holds ${holdText(hold)}`);
          }
        }
        if (hold && !live) {
          if (hold.state === HoldState.pending && hold.expiresAtMs > atMs + margin) {
            violations.I3.push(`${label}: not a live hold in PostgreSQL, but Redis still holds it (${holdText(hold)})`);
          }
          if (compareStores && (hold.state === HoldState.confirmed) !== (r.status === 'confirmed')) {
            differ(`${label}: Redis hold ${holdText(hold)} disagrees with PostgreSQL on whether the units were sold`);
          }
        }
      }
    }
    for (const [k, ms] of movementsByLine) {
      if (!seenMovements.has(k) && pgs.reservations.has(ms[0]!.reservationId!)) {
        violations.I5.push(`reservation ${ms[0]!.reservationId} has no line at ${pairKey(ms[0]!.itemId, ms[0]!.location)}, yet ledger rows ${ms.map((m) => m.kind).join(', ')}`);
      }
    }
    for (const h of rs?.holds ?? []) {
      const k = lineKey(h.reservationId, h.itemId, h.location);
      if (seenHolds.has(k)) continue;
      const r = pgs.reservations.get(h.reservationId);
      const what = `Redis hold ${holdText(h)} of ${h.quantity}×${pairKey(h.itemId, h.location)} for ${h.reservationId}`;
      if (h.state === HoldState.pending && h.expiresAtMs > atMs + margin) {
        violations.I3.push(`${what}, which PostgreSQL calls ${r ? `${r.status} (no such line)` : 'unknown'} (an orphaned hold)`);
      }
      if (compareStores && h.state === HoldState.confirmed) differ(`${what}: sold in Redis, no such reservation line in PostgreSQL`);
    }
  }

  const sorted = [...figures.values()].sort((a, b) => (pairKey(a.itemId, a.location) < pairKey(b.itemId, b.location) ? -1 : 1));
  return { atMs, violations, differences, figures: sorted };
}

// ---- the integration tests' entry point ---------------------------------------------------------------------

export interface InvariantOptions {
  /** Run a sweeper pass first (default true). */
  sweep?: boolean;
  /** See CheckOptions.holdsWithinSupply: only valid when no operator reduced on-hand below what is held. */
  holdsWithinSupply?: boolean;
}

export interface InvariantReport {
  /** Redis' clock (ms) the snapshot was judged at. */
  atMs: number;
  figures: LocationFigures[];
}

/**
 * Asserts every invariant on the given items, Redis = PostgreSQL included; call it once the test's own traffic has
 * settled. Throws an Error whose message lists each violation and a table of the figures. A sweeper pass runs
 * first (its timer paused while the snapshot is read, so nothing moves underneath): pending rows whose TTL passed
 * but that the sweeper has not recorded yet are expected.
 */
export async function checkInvariants(
  app: FastifyInstance,
  items: readonly string[],
  options: InvariantOptions = {},
): Promise<InvariantReport> {
  const { writer, sweeper, db, redis, keys } = app.runtime;
  await writer.drain();
  // Pause the timer so the snapshot is not read while a pass moves things; always start it again.
  await sweeper.stop();
  try {
    if (options.sweep ?? true) {
      await sweeper.runOnce();
      await writer.drain();
    }
    const unique = [...new Set(items)];
    const state = { postgres: await readPostgres(db, unique), redis: await readRedis(redis, keys, unique) };
    const check = checkStores(state, { redisMatchesPostgres: true, holdsWithinSupply: options.holdsWithinSupply ?? false });
    const violations = Object.values(check.violations).flat();
    if (violations.length > 0) {
      throw new Error(`invariants violated (Redis clock ${check.atMs}):\n  - ${violations.join('\n  - ')}\n\n${table(check.figures)}`);
    }
    return { atMs: check.atMs, figures: check.figures };
  } finally {
    sweeper.start();
  }
}

/** The figures side by side, one row per (item, location). */
export function table(figures: readonly LocationFigures[]): string {
  const n = (v: number | null) => (v === null ? '∅' : String(v));
  const header = [
    'item@location', 'redis h', 'redis r', 'redis p', 'redis s', 'redis q', 'redis live', 'pg on_hand', 'pg reserved', 'pg safety',
    'ledger on_hand', 'ledger reserved', 'supplied', 'confirmed', 'pending', 'pending live',
  ];
  const rows = figures.map((f) => [
    pairKey(f.itemId, f.location),
    n(f.redis.onHand),
    n(f.redis.reservedRaw),
    n(f.redis.pending),
    n(f.redis.safety),
    n(f.redis.safetyPending),
    String(f.redis.reservedLive),
    n(f.pg.onHand),
    n(f.pg.reserved),
    n(f.pg.safetyStock),
    String(f.ledger.onHand),
    String(f.ledger.reserved),
    String(f.ledger.supplied),
    String(f.lines.confirmed),
    String(f.lines.pending),
    String(f.lines.pendingLive),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('-+-'), ...rows.map(line)].join('\n');
}

/** The figures of one (item, location) from a report (throws if absent). */
export function figuresOf(report: InvariantReport, itemId: string, location = 'default'): LocationFigures {
  const f = report.figures.find((x) => x.itemId === itemId && x.location === location);
  if (!f) throw new Error(`no figures for ${pairKey(itemId, location)}`);
  return f;
}
