import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { Keys } from '../../src/redis/keys.js';
import { HoldState } from '../../src/redis/status.js';
import type { ClientLog, Line, Sku } from './load.js';
import type { Sample } from './monitor.js';

/**
 * The invariants of architecture.md, checked after a drill against PostgreSQL, Redis and the clients' own log
 * of what they were told. Each check lists its violations precisely (ids, figures), never just "false".
 */

export type InvariantId = 'I1' | 'I2' | 'I3' | 'I4' | 'I5' | 'I6' | 'API';

export interface InvariantResult {
  id: InvariantId;
  name: string;
  ok: boolean;
  violations: string[];
}

export const INVARIANT_NAMES: Record<InvariantId, string> = {
  I1: 'no oversell',
  I2: 'one key, one reservation',
  I3: 'held or correctly expired',
  I4: 'no acknowledged change lost',
  I5: 'conservation',
  I6: '503 changed nothing',
  API: 'answers per api.md',
};

/** Holds this close to their expiry at snapshot time are left out of the Redis/PostgreSQL hold comparison. */
const EXPIRY_MARGIN_MS = 1_000;

class Violations {
  readonly list: string[] = [];
  add(message: string): void {
    this.list.push(message);
  }
  result(id: InvariantId): InvariantResult {
    return { id, name: INVARIANT_NAMES[id], ok: this.list.length === 0, violations: this.list };
  }
}

type Status = 'pending' | 'confirmed' | 'released' | 'expired';

interface PgReservation {
  id: string;
  status: Status;
  expiresAtMs: number;
  updatedAtMs: number;
  lines: Line[];
}

interface Movement {
  itemId: string;
  location: string;
  kind: string;
  onHand: number;
  reserved: number;
  reservationId: string | null;
  reason: string | null;
}

interface RedisHold {
  itemId: string;
  reservationId: string;
  location: string;
  state: string;
  quantity: number;
  expiresAtMs: number;
}

/** One consistent read of PostgreSQL (a repeatable-read transaction) and of Redis, taken with the load stopped. */
export interface Snapshot {
  pgNowMs: number;
  redisNowMs: number;
  reservations: Map<string, PgReservation>;
  stock: Map<string, { onHand: number; reserved: number }>;
  movements: Movement[];
  /** idempotency key → rows (one per scope). */
  idempotency: Map<string, { reservationId: string; statusCode: number; responseId: string | null }[]>;
  redisMarker: string | null;
  redisStock: Map<string, { onHand: number | null; reserved: number | null }>;
  redisHolds: RedisHold[];
}

const pairKey = (itemId: string, location: string) => `${itemId}@${location}`;

/**
 * Waits until PostgreSQL records no pending reservation past its TTL (the sweepers of the API nodes record
 * them). Returns the ones still overdue after `timeoutMs`: I3 says the stored row reads `expired` within seconds.
 */
export async function waitForExpiriesRecorded(db: pg.Pool, timeoutMs: number): Promise<{ waitedMs: number; overdue: string[] }> {
  const started = Date.now();
  for (;;) {
    let overdue: string[] = [];
    try {
      const { rows } = await db.query<{ id: string; late_ms: number }>(
        `SELECT id, (extract(epoch FROM now() - expires_at) * 1000)::float8 AS late_ms
         FROM reservations WHERE status = 'pending' AND expires_at <= now() ORDER BY expires_at LIMIT 20`,
      );
      overdue = rows.map((r) => `${r.id} (${Math.round(r.late_ms)} ms past its TTL)`);
    } catch (err) {
      overdue = [`cannot read PostgreSQL: ${(err as Error).message}`];
    }
    if (overdue.length === 0) return { waitedMs: Date.now() - started, overdue };
    if (Date.now() - started > timeoutMs) return { waitedMs: Date.now() - started, overdue };
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function takeSnapshot(db: pg.Pool, redis: Redis, keys: Keys, skus: readonly Sku[]): Promise<Snapshot> {
  const client = await db.connect();
  const reservations = new Map<string, PgReservation>();
  const stock = new Map<string, { onHand: number; reserved: number }>();
  const idempotency = new Map<string, { reservationId: string; statusCode: number; responseId: string | null }[]>();
  let movements: Movement[];
  let pgNowMs: number;
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    pgNowMs = (await client.query<{ now: Date }>('SELECT now() AS now')).rows[0]!.now.getTime();
    const rs = await client.query<{ id: string; status: Status; expires_at: Date; updated_at: Date }>(
      'SELECT id, status, expires_at, updated_at FROM reservations',
    );
    for (const r of rs.rows) {
      reservations.set(r.id, { id: r.id, status: r.status, expiresAtMs: r.expires_at.getTime(), updatedAtMs: r.updated_at.getTime(), lines: [] });
    }
    const ls = await client.query<{ reservation_id: string; item_id: string; location: string; quantity: number }>(
      'SELECT reservation_id, item_id, location, quantity FROM reservation_lines ORDER BY reservation_id, line_no',
    );
    for (const l of ls.rows) {
      const r = reservations.get(l.reservation_id);
      if (r) r.lines.push({ itemId: l.item_id, location: l.location, quantity: l.quantity });
    }
    const st = await client.query<{ item_id: string; location: string; on_hand: number; reserved: number }>(
      'SELECT item_id, location, on_hand::float8 AS on_hand, reserved::float8 AS reserved FROM stock',
    );
    for (const s of st.rows) stock.set(pairKey(s.item_id, s.location), { onHand: s.on_hand, reserved: s.reserved });
    const mv = await client.query<{
      item_id: string;
      location: string;
      kind: string;
      on_hand_delta: number;
      reserved_delta: number;
      reservation_id: string | null;
      reason: string | null;
    }>(
      `SELECT item_id, location, kind, on_hand_delta::float8 AS on_hand_delta, reserved_delta::float8 AS reserved_delta,
              reservation_id, reason
       FROM stock_movements ORDER BY id`,
    );
    movements = mv.rows.map((m) => ({
      itemId: m.item_id,
      location: m.location,
      kind: m.kind,
      onHand: m.on_hand_delta,
      reserved: m.reserved_delta,
      reservationId: m.reservation_id,
      reason: m.reason,
    }));
    const ik = await client.query<{ key: string; reservation_id: string; status_code: number; response_id: string | null }>(
      `SELECT key, reservation_id, status_code, response::jsonb->>'id' AS response_id FROM idempotency_keys`,
    );
    for (const k of ik.rows) {
      const rows = idempotency.get(k.key) ?? [];
      rows.push({ reservationId: k.reservation_id, statusCode: k.status_code, responseId: k.response_id });
      idempotency.set(k.key, rows);
    }
    await client.query('COMMIT');
  } finally {
    client.release();
  }

  const [seconds, micros] = (await redis.time()) as [number | string, number | string];
  const redisNowMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  const redisMarker = await redis.get(keys.marker);
  const redisStock = new Map<string, { onHand: number | null; reserved: number | null }>();
  const redisHolds: RedisHold[] = [];
  for (const itemId of new Set(skus.map((s) => s.itemId))) {
    const k = keys.item(itemId);
    const [hash, holds] = await Promise.all([redis.hgetall(k.stock), redis.hgetall(k.holds)]);
    for (const [field, value] of Object.entries(hash)) {
      const location = field.slice(2);
      const entry = redisStock.get(pairKey(itemId, location)) ?? { onHand: null, reserved: null };
      if (field.startsWith('h:')) entry.onHand = Number(value);
      else if (field.startsWith('r:')) entry.reserved = Number(value);
      redisStock.set(pairKey(itemId, location), entry);
    }
    for (const [field, value] of Object.entries(holds)) {
      const colon = field.indexOf(':');
      const [state = '', quantity = '0', expiresAt = '0'] = value.split(':');
      redisHolds.push({
        itemId,
        reservationId: field.slice(0, colon),
        location: field.slice(colon + 1),
        state,
        quantity: Number(quantity),
        expiresAtMs: Number(expiresAt),
      });
    }
  }
  return { pgNowMs, redisNowMs, reservations, stock, movements, idempotency, redisMarker, redisStock, redisHolds };
}

const linesLabel = (lines: readonly Line[]) => lines.map((l) => `${l.quantity}×${l.itemId}@${l.location}`).join(' + ');
const sameLines = (a: readonly Line[], b: readonly Line[]) =>
  a.length === b.length && a.every((l, i) => l.itemId === b[i]!.itemId && l.location === b[i]!.location && l.quantity === b[i]!.quantity);

/** Definitive answers (not 5xx, not network, not "in flight"): what the client was told for good. */
const definitive = (status: number | 'network', code?: string) =>
  status !== 'network' && status < 500 && !(status === 409 && code === 'idempotency_key_in_use');

export interface CheckInput {
  snapshot: Snapshot;
  log: ClientLog;
  skus: readonly Sku[];
  /** Still-pending reservations past their TTL after waiting for the sweepers. */
  overdue: string[];
  /** Instant-by-instant samples taken during the load that broke I1. */
  monitorViolations: Sample[];
  /** PostgreSQL sessions left idle in a transaction by the fault (see DrillEnv.strandedSessions). */
  strandedSessions: string[];
}

export function checkInvariants(input: CheckInput): InvariantResult[] {
  const { snapshot: s, log, overdue } = input;
  const i1 = new Violations();
  const i2 = new Violations();
  const i3 = new Violations();
  const i4 = new Violations();
  const i5 = new Violations();
  const i6 = new Violations();
  const api = new Violations();

  // Per (item, location) figures from PostgreSQL.
  const pairs = new Set<string>([...s.stock.keys(), ...input.skus.map((k) => pairKey(k.itemId, k.location))]);
  const supplied = new Map<string, number>();
  const ledgerOnHand = new Map<string, number>();
  const ledgerReserved = new Map<string, number>();
  for (const m of s.movements) {
    const key = pairKey(m.itemId, m.location);
    pairs.add(key);
    ledgerOnHand.set(key, (ledgerOnHand.get(key) ?? 0) + m.onHand);
    ledgerReserved.set(key, (ledgerReserved.get(key) ?? 0) + m.reserved);
    if (m.kind === 'set' || m.kind === 'adjust') {
      supplied.set(key, (supplied.get(key) ?? 0) + m.onHand);
      if (m.onHand < 0) i1.add(`${key}: ledger has a stock reduction of ${m.onHand} (${m.kind}, reason ${String(m.reason)}) that no client asked for`);
    }
  }
  const sold = new Map<string, number>();
  const heldLive = new Map<string, number>();
  const heldPending = new Map<string, number>();
  const add = (map: Map<string, number>, key: string, n: number) => map.set(key, (map.get(key) ?? 0) + n);
  for (const r of s.reservations.values()) {
    for (const l of r.lines) {
      const key = pairKey(l.itemId, l.location);
      if (r.status === 'confirmed') add(sold, key, l.quantity);
      if (r.status === 'pending') add(heldPending, key, l.quantity);
      if (r.status === 'pending' && r.expiresAtMs > s.pgNowMs) add(heldLive, key, l.quantity);
    }
  }

  // Stock increases the clients were not told were applied (503, no answer) and the ledger does not have: if
  // Redis applied one anyway (a decision whose record never came), it offers units PostgreSQL never supplied.
  const byReason = new Map<string, Movement[]>();
  for (const m of s.movements) if (m.reason !== null) byReason.set(m.reason, [...(byReason.get(m.reason) ?? []), m]);
  const unrecordedSupply = new Map<string, number>();
  for (const a of log.stock) {
    const failed = a.status === 'network' || a.status >= 500;
    if (a.mode === 'adjust' && failed && a.amount > 0 && a.reason !== null && !byReason.has(a.reason)) {
      add(unrecordedSupply, pairKey(a.itemId, a.location), a.amount);
    }
  }
  /** Names an oversell that unrecorded stock increases account for: the phantom-stock signature. */
  const phantom = (key: string, excess: number) => {
    const units = unrecordedSupply.get(key) ?? 0;
    return units >= excess
      ? ` [phantom stock: within the ${units} units of stock increases answered 503/no answer that PostgreSQL never recorded]`
      : '';
  };

  // ---- I1 no oversell
  for (const key of pairs) {
    const sup = supplied.get(key) ?? 0;
    const sd = sold.get(key) ?? 0;
    const held = heldLive.get(key) ?? 0;
    const excess = sd + held - sup;
    if (excess > 0) i1.add(`${key}: ${sd} confirmed + ${held} held by pending reservations > ${sup} supplied (oversold by ${excess})${phantom(key, excess)}`);
    const onHand = s.stock.get(key)?.onHand;
    if (onHand !== undefined && onHand < 0) i1.add(`${key}: PostgreSQL on-hand is ${onHand}${phantom(key, -onHand)}`);
  }
  for (const v of input.monitorViolations) {
    const key = pairKey(v.itemId, v.location);
    // PostgreSQL's reserved still counts expired holds the sweeper has not recorded: only negatives matter there.
    const excess = v.source === 'Redis' ? Math.max(-v.onHand, v.reserved - v.onHand, -v.reserved) : Math.max(-v.onHand, -v.reserved);
    i1.add(`during the load at ${new Date(v.at).toISOString()}: ${v.source} ${key} on-hand ${v.onHand}, reserved ${v.reserved}${phantom(key, excess)}`);
  }

  // ---- I2 one key, one reservation; I4 acknowledged reservations are stored as answered
  const idById = new Map<string, string>(); // reservation id → key
  for (const [key, rows] of s.idempotency) {
    if (rows.length > 1) i2.add(`key ${key}: ${rows.length} idempotency rows (${rows.map((r) => r.reservationId).join(', ')})`);
    for (const row of rows) {
      if (idById.has(row.reservationId)) i2.add(`reservation ${row.reservationId} is the answer of two keys: ${idById.get(row.reservationId)} and ${key}`);
      idById.set(row.reservationId, key);
      if (row.responseId !== row.reservationId) i2.add(`key ${key}: stored answer names ${String(row.responseId)} but the row names ${row.reservationId}`);
      if (!s.reservations.has(row.reservationId)) i2.add(`key ${key}: names reservation ${row.reservationId}, which PostgreSQL does not have`);
    }
  }
  for (const r of s.reservations.values()) {
    if (!idById.has(r.id)) i2.add(`reservation ${r.id} (${linesLabel(r.lines)}) has no idempotency key row`);
  }
  for (const k of log.keys.values()) {
    for (const a of k.attempts) {
      if (definitive(a.status, a.code) && a.status !== 201 && !(a.status === 409 && a.code === 'insufficient_stock')) {
        api.add(`reserve ${k.key} (${linesLabel(k.lines)}): answered ${String(a.status)} ${a.code ?? ''}; the load only sends valid requests for stocked items`);
      }
    }
    const created = k.attempts.filter((a) => a.status === 201);
    const ids = [...new Set(created.map((a) => a.id))];
    const stored = s.idempotency.get(k.key)?.[0];
    if (ids.length > 1) i2.add(`key ${k.key}: 201 answers name ${ids.length} reservations: ${ids.join(', ')}`);
    const id = ids[0];
    if (id === undefined) {
      const last = [...k.attempts].reverse().find((a) => definitive(a.status, a.code));
      if (last && stored) {
        i2.add(
          `key ${k.key}: answered ${String(last.status)} ${last.code ?? ''} (nothing reserved), yet PostgreSQL created reservation ${stored.reservationId} for it` +
            ` (answers: ${history(k.attempts)})`,
        );
      }
      continue;
    }
    // After a 201, the same key and body must answer that 201 again (api.md), whatever happened to Redis.
    const firstCreated = Math.min(...created.map((a) => a.at));
    for (const a of k.attempts) {
      if (a.sentAt > firstCreated && definitive(a.status, a.code) && a.status !== 201) {
        i2.add(
          `key ${k.key}: acknowledged as ${id}, but a re-send at ${new Date(a.sentAt).toISOString()} was answered ${String(a.status)} ${a.code ?? ''} instead of replaying the 201`,
        );
      }
    }
    if (!stored) i4.add(`key ${k.key}: acknowledged 201 ${id}, but PostgreSQL has no idempotency record for the key`);
    else if (stored.reservationId !== id) i2.add(`key ${k.key}: acknowledged ${id}, but PostgreSQL binds the key to ${stored.reservationId}`);
    const r = s.reservations.get(id);
    if (!r) {
      i4.add(`key ${k.key}: acknowledged reservation ${id} (${linesLabel(k.lines)}) is missing from PostgreSQL`);
      continue;
    }
    if (!sameLines(r.lines, k.lines)) i4.add(`reservation ${id}: acknowledged ${linesLabel(k.lines)}, PostgreSQL has ${linesLabel(r.lines)}`);
    const doc = created[0]!;
    if (doc.expiresAt && Date.parse(doc.expiresAt) !== r.expiresAtMs) {
      i4.add(`reservation ${id}: acknowledged expiresAt ${doc.expiresAt}, PostgreSQL has ${new Date(r.expiresAtMs).toISOString()}`);
    }
  }

  // ---- I4 acknowledged confirms/releases, and every definitive answer agrees with the final state
  const expected: Record<string, Status> = {
    '200 confirm confirmed': 'confirmed',
    '200 release released': 'released',
    '200 release expired': 'expired',
    '409 confirm reservation_expired': 'expired',
    '409 confirm reservation_released': 'released',
    '409 release reservation_confirmed': 'confirmed',
  };
  for (const st of log.settles) {
    const r = s.reservations.get(st.reservationId);
    for (const a of st.attempts) {
      if (!definitive(a.status, a.code)) continue;
      const label = a.status === 200 ? `200 ${st.action} ${String(a.docStatus)}` : `${String(a.status)} ${st.action} ${a.code ?? ''}`;
      const want = expected[label];
      if (!r) {
        i4.add(`${st.action} ${st.reservationId}: answered ${label}, but PostgreSQL has no such reservation`);
      } else if (want === undefined) {
        api.add(`${st.action} ${st.reservationId} (${linesLabel(r.lines)}): answered ${label}, which api.md does not allow here; PostgreSQL says ${r.status}`);
      } else if (want === 'expired' && r.status === 'pending' && r.expiresAtMs <= s.pgNowMs) {
        // Expired by its TTL, not yet recorded: I3 reports the unrecorded expiry.
      } else if (r.status !== want) {
        i4.add(`${st.action} ${st.reservationId}: answered ${label}, but PostgreSQL says ${r.status}`);
      }
    }
  }

  // ---- I4 acknowledged stock changes are in the ledger; I6 a 503 applied nothing
  const setRows = new Map<string, number>();
  for (const m of s.movements) if (m.kind === 'set') add(setRows, pairKey(m.itemId, m.location), 1);
  const ackedSets = new Map<string, number>();
  for (const a of log.stock) {
    const key = pairKey(a.itemId, a.location);
    if (a.mode === 'set') {
      if (a.status === 200) add(ackedSets, key, 1);
      continue;
    }
    const rows = a.reason === null ? [] : (byReason.get(a.reason) ?? []);
    if (a.status === 200) {
      if (rows.length !== 1 || rows[0]!.onHand !== a.amount || rows[0]!.itemId !== a.itemId || rows[0]!.location !== a.location) {
        i4.add(`stock adjustment ${a.reason} (${a.amount > 0 ? '+' : ''}${a.amount} ${key}): acknowledged, ledger has ${rows.length} matching rows`);
      }
    } else if (a.status === 503 && rows.length > 0) {
      i6.add(`stock adjustment ${a.reason} (+${a.amount} ${key}): answered 503 "nothing was applied", yet the ledger recorded it`);
    } else if (a.status === 'network' && rows.length > 1) {
      i4.add(`stock adjustment ${a.reason}: recorded ${rows.length} times`);
    }
  }
  for (const [key, n] of ackedSets) {
    if ((setRows.get(key) ?? 0) < n) i4.add(`${key}: ${n} acknowledged stock sets, ledger has ${setRows.get(key) ?? 0}`);
  }

  // ---- I3 expiry: overdue rows recorded; pending reservations held in Redis exactly while unexpired
  const stranded =
    input.strandedSessions.length > 0
      ? ` [stranded transaction: ${input.strandedSessions.length} PostgreSQL session(s) left idle in transaction holding locks]`
      : '';
  for (const o of overdue) i3.add(`still pending in PostgreSQL after the sweepers had time: ${o}${stranded}`);
  for (const r of s.reservations.values()) {
    if (r.status === 'confirmed' && r.updatedAtMs >= r.expiresAtMs) {
      i3.add(`reservation ${r.id} was confirmed at ${new Date(r.updatedAtMs).toISOString()}, after its TTL (${new Date(r.expiresAtMs).toISOString()})`);
    }
  }
  const now = s.redisNowMs;
  const holdByField = new Map<string, RedisHold>();
  for (const h of s.redisHolds) holdByField.set(`${h.itemId}/${h.reservationId}:${h.location}`, h);
  if (s.redisMarker === null) i3.add('Redis has no generation marker after the drill (state not rebuilt)');
  for (const r of s.reservations.values()) {
    if (r.status !== 'pending' || Math.abs(r.expiresAtMs - now) < EXPIRY_MARGIN_MS || r.expiresAtMs < now) continue;
    for (const l of r.lines) {
      const h = holdByField.get(`${l.itemId}/${r.id}:${l.location}`);
      if (!h || h.state !== HoldState.pending) {
        i3.add(`pending reservation ${r.id} (${l.quantity}×${l.itemId}@${l.location}, expires in ${r.expiresAtMs - now} ms) is not held in Redis (${h ? `hold state ${h.state}` : 'no hold'})`);
      } else if (h.quantity !== l.quantity || h.expiresAtMs !== r.expiresAtMs) {
        i3.add(`pending reservation ${r.id}: Redis holds ${h.quantity} until ${h.expiresAtMs}, PostgreSQL ${l.quantity} until ${r.expiresAtMs}`);
      }
    }
  }
  for (const h of s.redisHolds) {
    if (h.state !== HoldState.pending || h.expiresAtMs <= now + EXPIRY_MARGIN_MS) continue;
    const r = s.reservations.get(h.reservationId);
    if (!r || r.status !== 'pending') {
      i3.add(`Redis holds ${h.quantity}×${h.itemId}@${h.location} for ${h.reservationId}, which PostgreSQL calls ${r ? r.status : 'unknown'} (an orphaned hold)`);
    }
  }

  // ---- I5 conservation, in PostgreSQL and within Redis
  for (const key of pairs) {
    const st = s.stock.get(key) ?? { onHand: 0, reserved: 0 };
    const lo = ledgerOnHand.get(key) ?? 0;
    const lr = ledgerReserved.get(key) ?? 0;
    const pend = heldPending.get(key) ?? 0;
    const expectOnHand = (supplied.get(key) ?? 0) - (sold.get(key) ?? 0);
    if (st.onHand !== lo) i5.add(`${key}: stock.on_hand ${st.onHand} ≠ Σ ledger on_hand_delta ${lo}`);
    if (st.onHand !== expectOnHand) i5.add(`${key}: on-hand ${st.onHand} ≠ supplied ${supplied.get(key) ?? 0} − confirmed ${sold.get(key) ?? 0}`);
    if (st.reserved !== lr) i5.add(`${key}: stock.reserved ${st.reserved} ≠ Σ ledger reserved_delta ${lr}`);
    if (st.reserved !== pend) i5.add(`${key}: stock.reserved ${st.reserved} ≠ Σ pending lines ${pend}`);
    const rs = s.redisStock.get(key);
    if (rs) {
      const rawPending = s.redisHolds
        .filter((h) => h.state === HoldState.pending && pairKey(h.itemId, h.location) === key)
        .reduce((n, h) => n + h.quantity, 0);
      if ((rs.reserved ?? 0) !== rawPending) i5.add(`${key}: Redis reserved ${String(rs.reserved)} ≠ Σ its pending holds ${rawPending}`);
    }
  }
  const terminalKind: Record<Status, string | null> = { pending: null, confirmed: 'confirm', released: 'release', expired: 'expire' };
  const byReservation = new Map<string, Movement[]>();
  for (const m of s.movements) {
    if (m.reservationId === null) continue;
    byReservation.set(m.reservationId, [...(byReservation.get(m.reservationId) ?? []), m]);
    if (!s.reservations.has(m.reservationId)) i5.add(`ledger ${m.kind} row for unknown reservation ${m.reservationId}`);
  }
  for (const r of s.reservations.values()) {
    const ms = byReservation.get(r.id) ?? [];
    const describe = () => ms.map((m) => `${m.kind} ${m.itemId}@${m.location} ${m.onHand}/${m.reserved}`).join(', ');
    const reserveRows = ms.filter((m) => m.kind === 'reserve');
    const okReserve =
      reserveRows.length === r.lines.length &&
      r.lines.every((l) => reserveRows.some((m) => m.itemId === l.itemId && m.location === l.location && m.reserved === l.quantity && m.onHand === 0));
    const terminal = terminalKind[r.status];
    const endRows = ms.filter((m) => m.kind !== 'reserve');
    const okEnd =
      terminal === null
        ? endRows.length === 0
        : endRows.length === r.lines.length &&
          endRows.every((m) => m.kind === terminal) &&
          r.lines.every((l) =>
            endRows.some(
              (m) =>
                m.itemId === l.itemId &&
                m.location === l.location &&
                m.reserved === -l.quantity &&
                m.onHand === (terminal === 'confirm' ? -l.quantity : 0),
            ),
          );
    if (!okReserve || !okEnd) i5.add(`reservation ${r.id} (${r.status}, ${linesLabel(r.lines)}): ledger rows [${describe()}] do not record it exactly once`);
  }

  // Client-side bound: what clients were told they bought never exceeds what was supplied.
  const boughtByClients = new Map<string, number>();
  const linesById = new Map<string, Line[]>();
  for (const k of log.keys.values()) for (const a of k.attempts) if (a.status === 201 && a.id) linesById.set(a.id, k.lines);
  const confirmedIds = new Set(log.settles.filter((st) => st.action === 'confirm' && st.attempts.some((a) => a.status === 200)).map((st) => st.reservationId));
  for (const id of confirmedIds) for (const l of linesById.get(id) ?? []) add(boughtByClients, pairKey(l.itemId, l.location), l.quantity);
  for (const [key, n] of boughtByClients) {
    const sup = supplied.get(key) ?? 0;
    if (n > sup) i1.add(`${key}: clients were told they bought ${n} units, only ${sup} were supplied${phantom(key, n - sup)}`);
  }

  const internal = log.statusCounts.get('500') ?? 0;
  if (internal > 0) api.add(`${internal} answers were 500 internal (a dependency failure must answer 503)`);

  return [i1.result('I1'), i2.result('I2'), i3.result('I3'), i4.result('I4'), i5.result('I5'), i6.result('I6'), api.result('API')];
}

/** api.md: a failed request binds nothing, and clients retry with the same key; issue 10 bounds how soon it works. */
export const RETRY_RESOLVED_WITHIN_MS = 5_000;

/** How soon the creates the clients were not answered for good got their definitive answer. */
export interface RetryResolution {
  /** Keys whose create got a 5xx, no answer, or 409 idempotency_key_in_use at least once. */
  unacknowledged: number;
  /** The longest such key took, from recovery (or its first such answer, if later) to its first definitive answer. */
  worstMs: number | null;
  /** Keys that took longer than RETRY_RESOLVED_WITHIN_MS, or never got a definitive answer. */
  late: string[];
}

/**
 * Every create the clients retried (they retry until a definitive answer: test/drills/load.ts) must be answered
 * for good within RETRY_RESOLVED_WITHIN_MS of `recoveredAt` (every node ready), or of its first non-definitive
 * answer when that came later (a "409 in use" while a twin request was in flight, a claim of a node that died).
 */
export function retryResolution(log: ClientLog, recoveredAt: number): RetryResolution {
  const out: RetryResolution = { unacknowledged: 0, worstMs: null, late: [] };
  for (const k of log.keys.values()) {
    const creates = k.attempts.filter((a) => !a.replay);
    const faulty = creates.filter((a) => !definitive(a.status, a.code));
    if (faulty.length === 0) continue;
    out.unacknowledged++;
    const firstFault = Math.min(...faulty.map((a) => a.at));
    const answered = creates.filter((a) => definitive(a.status, a.code) && a.at >= firstFault).map((a) => a.at);
    const what = `create ${k.key} (${linesLabel(k.lines)}), first answered ${describeAnswer(faulty.find((a) => a.at === firstFault)!)} at ${new Date(firstFault).toISOString()}`;
    if (answered.length === 0) {
      const last = creates.reduce((x, y) => (y.at > x.at ? y : x));
      out.late.push(`${what}: never answered for good (last answer ${describeAnswer(last)} at ${new Date(last.at).toISOString()})`);
      continue;
    }
    const ms = Math.max(0, Math.min(...answered) - Math.max(recoveredAt, firstFault));
    out.worstMs = Math.max(out.worstMs ?? 0, ms);
    if (ms > RETRY_RESOLVED_WITHIN_MS) out.late.push(`${what}: answered for good ${ms} ms after recovery, over ${RETRY_RESOLVED_WITHIN_MS} ms`);
  }
  return out;
}

const describeAnswer = (a: { status: number | 'network'; code?: string }) => `${String(a.status)}${a.code ? ` ${a.code}` : ''}`;

/** A key's answers in order, each with when it was sent and answered (ISO times of day), for a violation's message. */
const history = (attempts: readonly { status: number | 'network'; code?: string; sentAt: number; at: number }[]) =>
  attempts
    .map((a) => `${describeAnswer(a)} [${new Date(a.sentAt).toISOString().slice(11, 23)}→${new Date(a.at).toISOString().slice(11, 23)}]`)
    .join(', ');

/** Keys the clients gave up on without a definitive answer (their outcome is unknown to them). */
export function unresolvedKeys(log: ClientLog): number {
  let n = 0;
  for (const k of log.keys.values()) if (!k.attempts.some((a) => definitive(a.status, a.code))) n++;
  return n;
}
