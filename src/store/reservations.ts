import type pg from 'pg';
import type { Position } from '../domain/cursor.js';
import type { Line, ReservationRecord } from '../domain/reservation.js';
import type { Allocation, Priority, ReservationStatus } from '../domain/schemas.js';

/** Reads of reservations and idempotency records. Writes go through the BatchWriter. */

export interface ReservationRow {
  id: string;
  status: ReservationStatus;
  reference: string | null;
  metadata: Record<string, string>;
  priority: Priority;
  lines: Line[];
  expires_at: Date;
  created_at: Date;
  updated_at: Date;
  tenant: string;
  allocation: Allocation | null;
  version: number;
}

/** A reservation's columns, with its lines as JSON (`confirmedQuantity` only where a partial confirm set it). */
const RESERVATION_COLUMNS = `
  r.id, r.status, r.reference, r.metadata, r.priority, r.expires_at, r.created_at, r.updated_at, r.tenant, r.allocation,
  r.version,
  (SELECT json_agg(json_strip_nulls(json_build_object('itemId', l.item_id, 'location', l.location, 'quantity', l.quantity,
                                                      'confirmedQuantity', l.confirmed_quantity))
                   ORDER BY l.line_no)
     FROM reservation_lines l WHERE l.reservation_id = r.id) AS lines`;

/** A reservation with its lines as JSON; callers add the WHERE clause (and any locking). */
export const SELECT_RESERVATION = `SELECT ${RESERVATION_COLUMNS} FROM reservations r`;

export const toRecord = (row: ReservationRow): ReservationRecord => ({
  id: row.id,
  status: row.status,
  reference: row.reference,
  metadata: row.metadata,
  priority: row.priority,
  lines: row.lines,
  expiresAt: row.expires_at,
  createdAt: row.created_at,
  updatedAt: row.updated_at,
  tenant: row.tenant,
  allocation: row.allocation,
  version: row.version,
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export async function findReservation(db: pg.Pool, id: string): Promise<ReservationRecord | null> {
  if (!UUID.test(id)) return null; // any other shape names no reservation
  const { rows } = await db.query<ReservationRow>(`${SELECT_RESERVATION} WHERE r.id = $1`, [id]);
  return rows[0] ? toRecord(rows[0]) : null;
}

export interface ReferenceQuery {
  reference: string;
  /** Only this tenant's reservations; null: every tenant's (an operator). */
  tenant: string | null;
  /** Only reservations whose status, read at `now`, is this (a pending one past its TTL reads expired); null: all. */
  status: ReservationStatus | null;
  now: Date;
  /** Only rows after this position (newest first); null: from the newest. */
  after: Position | null;
  limit: number;
}

/**
 * Reservations of one reference, newest first (created_at, then id, both descending), through the index
 * `reservations_reference` (migrations/008): the reference and the position are its conditions. Each row comes with
 * its position, for the next page's cursor; created_at travels as whole microseconds, so a cursor names a row
 * exactly whatever the column's precision.
 */
export async function findByReference(db: pg.Pool, q: ReferenceQuery): Promise<{ record: ReservationRecord; position: Position }[]> {
  const { rows } = await db.query<ReservationRow & { created_us: string }>(referenceQuery(q));
  return rows.map((row) => ({ record: toRecord(row), position: { createdUs: row.created_us, id: row.id } }));
}

/** The statement `findByReference` sends (bench/reference-plan.ts shows its plan on a million reservations). */
export function referenceQuery(q: ReferenceQuery): { text: string; values: unknown[] } {
  const values: unknown[] = [q.reference];
  const where = ['r.reference = $1'];
  if (q.tenant !== null) {
    values.push(q.tenant);
    where.push(`r.tenant = $${values.length}`);
  }
  if (q.status !== null) {
    values.push(q.status, q.now);
    where.push(`(CASE WHEN r.status = 'pending' AND r.expires_at <= $${values.length} THEN 'expired' ELSE r.status END) = $${values.length - 1}`);
  }
  if (q.after !== null) {
    values.push(q.after.createdUs, q.after.id);
    where.push(
      `(r.created_at, r.id) < (timestamptz 'epoch' + $${values.length - 1}::bigint * interval '1 microsecond', $${values.length}::uuid)`,
    );
  }
  values.push(q.limit);
  const text = `SELECT ${RESERVATION_COLUMNS}, (extract(epoch FROM r.created_at) * 1000000)::bigint::text AS created_us
     FROM reservations r
     WHERE ${where.join(' AND ')}
     ORDER BY r.created_at DESC, r.id DESC
     LIMIT $${values.length}`;
  return { text, values };
}

export interface IdempotencyRecord {
  requestHash: string;
  reservationId: string;
  statusCode: number;
  /** The first answer's body exactly as sent. */
  response: string;
}

export async function findIdempotency(db: pg.Pool, scope: string, key: string): Promise<IdempotencyRecord | null> {
  const { rows } = await db.query<{ request_hash: string; reservation_id: string; status_code: number; response: string }>(
    'SELECT request_hash, reservation_id, status_code, response FROM idempotency_keys WHERE scope = $1 AND key = $2',
    [scope, key],
  );
  const row = rows[0];
  return row
    ? { requestHash: row.request_hash, reservationId: row.reservation_id, statusCode: row.status_code, response: row.response }
    : null;
}

/** Reservations PostgreSQL still calls pending although their TTL passed (oldest first). */
export async function findOverdue(db: pg.Pool, limit: number): Promise<ReservationRecord[]> {
  const { rows } = await db.query<ReservationRow>(
    `${SELECT_RESERVATION} WHERE r.status = 'pending' AND r.expires_at <= now() ORDER BY r.expires_at LIMIT $1`,
    [limit],
  );
  return rows.map(toRecord);
}

type Db = pg.Pool | pg.PoolClient;

/** A line of a reservation PostgreSQL has as pending and unexpired: a hold Redis should have. */
export interface LiveHold {
  reservationId: string;
  itemId: string;
  location: string;
  quantity: number;
  expiresAtMs: number;
  /** Its reservation's version. */
  version: number;
}

/** Every live hold (pending, expires_at after PostgreSQL's now). */
export async function findLiveHolds(db: Db): Promise<LiveHold[]> {
  const { rows } = await db.query<{ id: string; item_id: string; location: string; quantity: number; expires_ms: number; version: number }>(
    `SELECT l.reservation_id AS id, l.item_id, l.location, l.quantity,
            (extract(epoch FROM r.expires_at) * 1000)::bigint AS expires_ms, r.version
     FROM reservations r JOIN reservation_lines l ON l.reservation_id = r.id
     WHERE r.status = 'pending' AND r.expires_at > now()`,
  );
  return rows.map((h) => ({
    reservationId: h.id,
    itemId: h.item_id,
    location: h.location,
    quantity: h.quantity,
    expiresAtMs: h.expires_ms,
    version: h.version,
  }));
}

/** Per (item, location) of the given items: the units and the number of live holds. */
export async function sumLiveHolds(
  db: Db,
  items: readonly string[],
): Promise<{ itemId: string; location: string; reserved: number; holds: number }[]> {
  const { rows } = await db.query<{ item_id: string; location: string; reserved: number; holds: number }>(
    `SELECT l.item_id, l.location, sum(l.quantity)::bigint AS reserved, count(*)::int AS holds
     FROM reservations r JOIN reservation_lines l ON l.reservation_id = r.id
     WHERE r.status = 'pending' AND r.expires_at > now() AND l.item_id = ANY($1)
     GROUP BY l.item_id, l.location`,
    [items],
  );
  return rows.map((r) => ({ itemId: r.item_id, location: r.location, reserved: r.reserved, holds: r.holds }));
}

/** Which of these reservations PostgreSQL has, as pending. */
export async function findPendingIds(db: Db, ids: readonly string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const { rows } = await db.query<{ id: string }>(`SELECT id FROM reservations WHERE id = ANY($1::uuid[]) AND status = 'pending'`, [ids]);
  return new Set(rows.map((r) => r.id));
}

/** An idempotency row within the retention, with when it was claimed and how long it has left (ms). */
export interface RetainedIdempotency {
  scope: string;
  key: string;
  requestHash: string;
  reservationId: string;
  claimedAtMs: number;
  ttlMs: number;
}

/** Every idempotency row within the retention (the rebuild restores them to Redis). */
export async function findRetainedIdempotency(db: Db, retentionHours: number): Promise<RetainedIdempotency[]> {
  const { rows } = await db.query<{ scope: string; key: string; request_hash: string; id: string; claimed_ms: number; ttl_ms: number }>(
    `SELECT scope, key, request_hash, reservation_id AS id,
            (extract(epoch FROM created_at) * 1000)::bigint AS claimed_ms,
            (extract(epoch FROM created_at + make_interval(hours => $1) - now()) * 1000)::bigint AS ttl_ms
     FROM idempotency_keys WHERE created_at > now() - make_interval(hours => $1)`,
    [retentionHours],
  );
  return rows.map((r) => ({
    scope: r.scope,
    key: r.key,
    requestHash: r.request_hash,
    reservationId: r.id,
    claimedAtMs: r.claimed_ms,
    ttlMs: r.ttl_ms,
  }));
}

/** Forgets idempotency keys older than the retention; their keys may be used again. */
export async function deleteOldIdempotencyKeys(db: pg.Pool, retentionHours: number, limit: number): Promise<number> {
  const { rowCount } = await db.query(
    `DELETE FROM idempotency_keys WHERE ctid = ANY (ARRAY(
       SELECT ctid FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1) LIMIT $2))`,
    [retentionHours, limit],
  );
  return rowCount ?? 0;
}

/**
 * Batch rows serve only the lookup after a lost answer (src/store/writer.ts), which trusts a missing row only
 * within the batch's fate deadline: `olderThanMs` is the writer's `batchRetentionMs`, longer than that deadline.
 */
export async function deleteOldWriteBatches(db: pg.Pool, olderThanMs: number): Promise<number> {
  const { rowCount } = await db.query('DELETE FROM write_batches WHERE committed_at < now() - make_interval(secs => $1::float8 / 1000)', [
    olderThanMs,
  ]);
  return rowCount ?? 0;
}
