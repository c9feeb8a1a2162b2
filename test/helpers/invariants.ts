import type { FastifyInstance } from 'fastify';
import { parseHold as parseHoldValue, parseHoldField, parseStockField } from '../../src/redis/layout.js';
import { HoldState } from '../../src/redis/status.js';

/**
 * checkInvariants: I1 (no oversell) and I5 (conservation, Redis = PostgreSQL) for every (item, location) of the
 * given items, read straight from Redis (stock and holds hashes) and PostgreSQL (stock, reservations,
 * reservation_lines, stock_movements). Call it once the test's own traffic has settled.
 *
 * Redis expires holds lazily (a script touching the item releases the holds whose TTL passed), so its raw `r:`
 * counter may still include holds past their TTL. The checker therefore reads Redis' clock once (T) and compares
 * like with like: Redis' pending holds with expiry > T against PostgreSQL's pending lines with expires_at > T.
 * Pending rows whose TTL passed but that the sweeper has not recorded yet are expected; a sweeper pass runs first
 * (the sweeper's timer is paused while the snapshot is read, so nothing moves underneath).
 */

export interface InvariantOptions {
  /** Run a sweeper pass first (default true). */
  sweep?: boolean;
  /**
   * Also require pending + confirmed units ≤ stock supplied. Only valid when no operator reduced on-hand below
   * what is held (the one way holds may exceed on-hand, architecture.md I1).
   */
  holdsWithinSupply?: boolean;
}

export interface LocationFigures {
  itemId: string;
  location: string;
  /** Redis `h:` / raw `r:` / units of pending holds whose TTL has not passed at T. */
  redis: { onHand: number | null; reservedRaw: number | null; reservedLive: number; heldRaw: number };
  pg: { onHand: number | null; reserved: number | null };
  ledger: { onHand: number; reserved: number; supplied: number; confirmedOut: number };
  lines: { pending: number; pendingLive: number; confirmed: number };
}

export interface InvariantReport {
  /** Redis' clock (ms) the snapshot was judged at. */
  atMs: number;
  figures: LocationFigures[];
}

interface LineRow {
  id: string;
  status: string;
  expires_ms: number;
  item_id: string;
  location: string;
  quantity: number;
}

interface MovementRow {
  reservation_id: string | null;
  item_id: string;
  location: string;
  kind: string;
  on_hand_delta: number;
  reserved_delta: number;
}

interface Hold {
  reservationId: string;
  itemId: string;
  location: string;
  state: string;
  quantity: number;
  expiresMs: number;
}

const key = (itemId: string, location: string): string => `${itemId}@${location}`;

function parseHold(itemId: string, field: string, value: string): Hold | null {
  const at = parseHoldField(field);
  const hold = parseHoldValue(value);
  if (!at || !hold) return null;
  return { ...at, itemId, state: hold.state, quantity: hold.quantity, expiresMs: hold.expiresAtMs };
}

/** Asserts the invariants; throws an Error whose message lists each violation and a table of the figures. */
export async function checkInvariants(
  app: FastifyInstance,
  items: readonly string[],
  options: InvariantOptions = {},
): Promise<InvariantReport> {
  const { writer, sweeper } = app.runtime;
  await writer.drain();
  // Pause the timer so the snapshot is not read while a pass moves things; always start it again.
  await sweeper.stop();
  try {
    if (options.sweep ?? true) {
      await sweeper.runOnce();
      await writer.drain();
    }
    return await snapshotAndCheck(app, [...new Set(items)], options);
  } finally {
    sweeper.start();
  }
}

async function snapshotAndCheck(app: FastifyInstance, items: string[], options: InvariantOptions): Promise<InvariantReport> {
  const { redis, keys, db } = app.runtime;
  const violations: string[] = [];

  // --- Redis -------------------------------------------------------------------------------------------------
  const marker = await redis.get(keys.marker);
  if (marker === null) throw new Error('checkInvariants: Redis has no generation marker (state not rebuilt)');
  const [seconds, micros] = await redis.time();
  const atMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);

  const redisStock = new Map<string, { itemId: string; location: string; onHand: number | null; reserved: number | null }>();
  const holds = new Map<string, Hold>(); // `${reservationId}:${itemId}@${location}`
  for (const itemId of items) {
    const k = keys.item(itemId);
    const [stock, holdFields] = await Promise.all([redis.hgetall(k.stock), redis.hgetall(k.holds)]);
    for (const [field, value] of Object.entries(stock)) {
      const parsed = parseStockField(field);
      // Pending supply (p:) is only ever there while a stock increase is in flight: settled traffic has none.
      if (!parsed || parsed.figure === 'pending') violations.push(`Redis ${k.stock} has an unexpected field ${field}`);
      if (!parsed) continue;
      const { location } = parsed;
      const entry = redisStock.get(key(itemId, location)) ?? { itemId, location, onHand: null, reserved: null };
      if (parsed.figure === 'onHand') entry.onHand = Number(value);
      else if (parsed.figure === 'reserved') entry.reserved = Number(value);
      redisStock.set(key(itemId, location), entry);
    }
    for (const [field, value] of Object.entries(holdFields)) {
      const hold = parseHold(itemId, field, value);
      if (!hold) {
        violations.push(`Redis ${k.holds} has a malformed hold ${field} = ${value}`);
        continue;
      }
      holds.set(`${hold.reservationId}:${key(itemId, hold.location)}`, hold);
    }
  }

  // --- PostgreSQL (one consistent snapshot) --------------------------------------------------------------------
  const client = await db.connect();
  let stockRows: { item_id: string; location: string; on_hand: number; reserved: number }[];
  let lineRows: LineRow[];
  let movementRows: MovementRow[];
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    stockRows = (
      await client.query<{ item_id: string; location: string; on_hand: number; reserved: number }>(
        'SELECT item_id, location, on_hand::bigint AS on_hand, reserved::bigint AS reserved FROM stock WHERE item_id = ANY($1)',
        [items],
      )
    ).rows;
    lineRows = (
      await client.query<LineRow>(
        `SELECT r.id, r.status, floor(extract(epoch FROM r.expires_at) * 1000)::bigint AS expires_ms,
                l.item_id, l.location, l.quantity
         FROM reservation_lines l JOIN reservations r ON r.id = l.reservation_id
         WHERE l.item_id = ANY($1)`,
        [items],
      )
    ).rows;
    movementRows = (
      await client.query<MovementRow>(
        `SELECT reservation_id, item_id, location, kind, on_hand_delta::bigint AS on_hand_delta,
                reserved_delta::bigint AS reserved_delta
         FROM stock_movements WHERE item_id = ANY($1)`,
        [items],
      )
    ).rows;
    await client.query('COMMIT');
  } finally {
    client.release();
  }

  // --- Figures per (item, location) ---------------------------------------------------------------------------
  const figures = new Map<string, LocationFigures>();
  const figure = (itemId: string, location: string): LocationFigures => {
    const k = key(itemId, location);
    let f = figures.get(k);
    if (!f) {
      f = {
        itemId,
        location,
        redis: { onHand: null, reservedRaw: null, reservedLive: 0, heldRaw: 0 },
        pg: { onHand: null, reserved: null },
        ledger: { onHand: 0, reserved: 0, supplied: 0, confirmedOut: 0 },
        lines: { pending: 0, pendingLive: 0, confirmed: 0 },
      };
      figures.set(k, f);
    }
    return f;
  };
  for (const s of redisStock.values()) {
    const f = figure(s.itemId, s.location);
    f.redis.onHand = s.onHand;
    f.redis.reservedRaw = s.reserved;
  }
  for (const h of holds.values()) {
    const f = figure(h.itemId, h.location);
    if (h.state === HoldState.pending) {
      f.redis.heldRaw += h.quantity;
      if (h.expiresMs > atMs) f.redis.reservedLive += h.quantity;
    }
  }
  for (const row of stockRows) {
    const f = figure(row.item_id, row.location);
    f.pg.onHand = Number(row.on_hand);
    f.pg.reserved = Number(row.reserved);
  }
  for (const m of movementRows) {
    const f = figure(m.item_id, m.location);
    f.ledger.onHand += Number(m.on_hand_delta);
    f.ledger.reserved += Number(m.reserved_delta);
    if (m.kind === 'set' || m.kind === 'adjust') f.ledger.supplied += Number(m.on_hand_delta);
    if (m.kind === 'confirm') f.ledger.confirmedOut -= Number(m.on_hand_delta);
  }
  for (const l of lineRows) {
    const f = figure(l.item_id, l.location);
    if (l.status === 'pending') {
      f.lines.pending += l.quantity;
      if (Number(l.expires_ms) > atMs) f.lines.pendingLive += l.quantity;
    }
    if (l.status === 'confirmed') f.lines.confirmed += l.quantity;
  }

  // --- Counters -----------------------------------------------------------------------------------------------
  for (const f of figures.values()) {
    const at = key(f.itemId, f.location);
    const fail = (message: string) => violations.push(`${at}: ${message}`);
    if (f.pg.onHand === null) fail('PostgreSQL has no stock row (Redis or the ledger knows this location)');
    if (f.redis.onHand === null) fail('Redis has no on-hand field h:<location> (PostgreSQL knows this location)');
    // I1: no oversell.
    if (f.pg.onHand !== null && f.pg.onHand < 0) fail(`PostgreSQL on_hand ${f.pg.onHand} < 0`);
    if (f.pg.reserved !== null && f.pg.reserved < 0) fail(`PostgreSQL reserved ${f.pg.reserved} < 0`);
    if (f.redis.onHand !== null && f.redis.onHand < 0) fail(`Redis on-hand ${f.redis.onHand} < 0`);
    if (f.redis.reservedRaw !== null && f.redis.reservedRaw < 0) fail(`Redis reserved ${f.redis.reservedRaw} < 0`);
    if (f.lines.confirmed > f.ledger.supplied) {
      fail(`oversold: ${f.lines.confirmed} units confirmed but only ${f.ledger.supplied} supplied (set/adjust ledger)`);
    }
    if (options.holdsWithinSupply && f.lines.pendingLive + f.lines.confirmed > f.ledger.supplied) {
      fail(`holds ${f.lines.pendingLive} + confirmed ${f.lines.confirmed} exceed the ${f.ledger.supplied} units supplied`);
    }
    // I5: conservation inside PostgreSQL.
    if (f.pg.onHand !== null && f.pg.onHand !== f.ledger.onHand) {
      fail(`PostgreSQL on_hand ${f.pg.onHand} ≠ Σ ledger on_hand_delta ${f.ledger.onHand}`);
    }
    if (f.ledger.onHand !== f.ledger.supplied - f.ledger.confirmedOut) {
      fail(`ledger on-hand ${f.ledger.onHand} ≠ supplied ${f.ledger.supplied} − confirmed ${f.ledger.confirmedOut}`);
    }
    if (f.ledger.confirmedOut !== f.lines.confirmed) {
      fail(`ledger confirm movements take out ${f.ledger.confirmedOut} units, confirmed lines hold ${f.lines.confirmed}`);
    }
    if (f.pg.reserved !== null && f.pg.reserved !== f.ledger.reserved) {
      fail(`PostgreSQL reserved ${f.pg.reserved} ≠ Σ ledger reserved_delta ${f.ledger.reserved}`);
    }
    if ((f.pg.reserved ?? 0) !== f.lines.pending) {
      fail(`PostgreSQL reserved ${f.pg.reserved ?? 0} ≠ Σ pending lines ${f.lines.pending}`);
    }
    // I5: Redis agrees with PostgreSQL.
    if (f.redis.onHand !== f.pg.onHand) fail(`Redis on-hand ${f.redis.onHand} ≠ PostgreSQL on_hand ${f.pg.onHand}`);
    if ((f.redis.reservedRaw ?? 0) !== f.redis.heldRaw) {
      fail(`Redis r: ${f.redis.reservedRaw ?? 0} ≠ Σ Redis pending holds ${f.redis.heldRaw}`);
    }
    if (f.redis.reservedLive !== f.lines.pendingLive) {
      fail(`Redis reserved (unexpired holds) ${f.redis.reservedLive} ≠ Σ pending unexpired lines ${f.lines.pendingLive}`);
    }
  }

  // --- Each reservation line: its ledger rows and its hold ----------------------------------------------------
  const movementsByLine = new Map<string, MovementRow[]>();
  for (const m of movementRows) {
    if (m.reservation_id === null) continue;
    const k = `${m.reservation_id}:${key(m.item_id, m.location)}`;
    movementsByLine.set(k, [...(movementsByLine.get(k) ?? []), m]);
  }
  const expected: Record<string, { kind: string; onHand: number; reserved: number } | null> = {
    pending: null,
    confirmed: { kind: 'confirm', onHand: -1, reserved: -1 },
    released: { kind: 'release', onHand: 0, reserved: -1 },
    expired: { kind: 'expire', onHand: 0, reserved: -1 },
  };
  const seenHolds = new Set<string>();
  for (const l of lineRows) {
    const lineKey = `${l.id}:${key(l.item_id, l.location)}`;
    const at = `reservation ${l.id} (${l.status}) line ${key(l.item_id, l.location)} ×${l.quantity}`;
    const ms = movementsByLine.get(lineKey) ?? [];
    const describe = ms.map((m) => `${m.kind}(${m.on_hand_delta},${m.reserved_delta})`).join(' ') || 'none';
    const reserves = ms.filter((m) => m.kind === 'reserve');
    const terminal = expected[l.status] ?? null;
    const rest = ms.filter((m) => m.kind !== 'reserve');
    const ledgerOk =
      reserves.length === 1 &&
      Number(reserves[0]!.reserved_delta) === l.quantity &&
      Number(reserves[0]!.on_hand_delta) === 0 &&
      (terminal === null
        ? rest.length === 0
        : rest.length === 1 &&
          rest[0]!.kind === terminal.kind &&
          Number(rest[0]!.on_hand_delta) === terminal.onHand * l.quantity &&
          Number(rest[0]!.reserved_delta) === terminal.reserved * l.quantity);
    if (!ledgerOk) violations.push(`${at}: ledger rows ${describe} do not match its status`);

    const hold = holds.get(lineKey);
    seenHolds.add(lineKey);
    const live = l.status === 'pending' && Number(l.expires_ms) > atMs;
    const holdText = hold ? `${hold.state}:${hold.quantity}:${hold.expiresMs}` : 'no hold';
    if (live) {
      if (!hold || hold.state !== HoldState.pending || hold.quantity !== l.quantity || hold.expiresMs !== Number(l.expires_ms)) {
        violations.push(`${at}: pending until ${Number(l.expires_ms)} but Redis has ${holdText}`);
      }
    } else if (hold) {
      const heldInRedis = hold.state === HoldState.pending && hold.expiresMs > atMs;
      if (heldInRedis) violations.push(`${at}: not a live hold in PostgreSQL, but Redis still holds it (${holdText})`);
      if ((hold.state === HoldState.confirmed) !== (l.status === 'confirmed')) {
        violations.push(`${at}: Redis hold ${holdText} disagrees with PostgreSQL on whether the units were sold`);
      }
    }
  }
  for (const [holdKey, hold] of holds) {
    if (seenHolds.has(holdKey)) continue;
    if ((hold.state === HoldState.pending && hold.expiresMs > atMs) || hold.state === HoldState.confirmed) {
      violations.push(`Redis hold ${holdKey} = ${hold.state}:${hold.quantity}:${hold.expiresMs} has no reservation line in PostgreSQL`);
    }
  }

  const report = { atMs, figures: [...figures.values()].sort((a, b) => (key(a.itemId, a.location) < key(b.itemId, b.location) ? -1 : 1)) };
  if (violations.length > 0) {
    throw new Error(`invariants violated (Redis clock ${atMs}):\n  - ${violations.join('\n  - ')}\n\n${table(report.figures)}`);
  }
  return report;
}

/** The figures side by side, one row per (item, location). */
export function table(figures: readonly LocationFigures[]): string {
  const n = (v: number | null) => (v === null ? '∅' : String(v));
  const header = ['item@location', 'redis h', 'redis r', 'redis live', 'pg on_hand', 'pg reserved', 'ledger on_hand', 'ledger reserved', 'supplied', 'confirmed', 'pending', 'pending live'];
  const rows = figures.map((f) => [
    key(f.itemId, f.location),
    n(f.redis.onHand),
    n(f.redis.reservedRaw),
    String(f.redis.reservedLive),
    n(f.pg.onHand),
    n(f.pg.reserved),
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
  if (!f) throw new Error(`no figures for ${key(itemId, location)}`);
  return f;
}
