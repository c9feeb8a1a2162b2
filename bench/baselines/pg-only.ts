import type pg from 'pg';
import { ProblemError, unavailable } from '../../src/domain/errors.js';
import { newId } from '../../src/domain/ids.js';
import { effectiveStatus, pendingReservation, toAvailability, toDocument, type Line, type ReservationRecord } from '../../src/domain/reservation.js';
import type { AvailabilityDocument, ConfirmRequest, ReleasedByReference, ReservationDocument, ReservationPage, ReservationRequest } from '../../src/domain/schemas.js';
import { canAccess, type Caller } from '../../src/domain/tenancy.js';
import type { ReservationApi, ReserveAnswer, StockApi } from '../../src/service/api.js';
import { requestHash } from '../../src/service/idempotency.js';
import { normaliseLines } from '../../src/service/reservations.js';
import { findIdempotency, findReservation, SELECT_RESERVATION, toRecord, type ReservationRow } from '../../src/store/reservations.js';

/**
 * The design peers use: PostgreSQL alone, one transaction per request, on the service's own schema
 * (migrations/001_initial.sql), with the conditional update `UPDATE stock SET reserved = reserved + q WHERE …
 * AND on_hand - reserved >= q` deciding. Tuned to be a fair opponent, not a straw man:
 * - a one-line reservation is ONE statement (data-modifying CTEs: the conditional update, then the reservation,
 *   its lines, the idempotency row and the ledger rows, inserted only if every line was held), committed on its
 *   own: one round trip, the hot row locked only for the rest of that statement and its commit;
 * - a cart locks its stock rows with `SELECT … ORDER BY … FOR UPDATE` first (key order: carts never deadlock),
 *   then runs the same statement, in BEGIN … COMMIT;
 * - confirm/release lock the reservation row (`SELECT … FOR UPDATE`), lock a cart's stock rows likewise, then
 *   update reservation, stock and ledger in one statement;
 * - expiry is a sweeper recording due reservations as expired every second (availability may under-report for
 *   up to that second: the usual trade-off of this design).
 */

const RETRYABLE = new Set(['40001', '40P01']);
const MAX_ATTEMPTS = 3;
const SWEEP_INTERVAL_MS = 1000;
const SWEEP_BATCH = 500;

interface LockedRow {
  item_id: string;
  location: string;
  on_hand: number;
  reserved: number;
}

const byKey = (a: Line, b: Line) =>
  a.itemId < b.itemId ? -1 : a.itemId > b.itemId ? 1 : a.location < b.location ? -1 : a.location > b.location ? 1 : 0;

export class PgOnlyDesign {
  readonly reservations: ReservationApi;
  readonly stock: StockApi;
  private readonly timer: NodeJS.Timeout;
  private sweeping: Promise<void> | null = null;

  constructor(private readonly db: pg.Pool) {
    this.reservations = new PgOnlyReservations(db);
    this.stock = new PgOnlyStock(db);
    this.timer = setInterval(() => {
      this.sweeping ??= expireDue(db)
        .catch(() => {}) // a failed pass (deadlock with a request, PostgreSQL away) is retried by the next one
        .finally(() => (this.sweeping = null));
    }, SWEEP_INTERVAL_MS);
    this.timer.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.sweeping;
  }
}

/** Thrown inside a transaction to roll it back and replay the key's first answer instead. */
class KeyTaken extends Error {}

const pgCode = (err: unknown): string | undefined => (err as { code?: string } | null)?.code;

/**
 * Runs `work` on one pooled connection, in BEGIN … COMMIT when `transaction` (else `work` is one statement that
 * commits itself); retries serialization failures and deadlocks; PostgreSQL errors answer 503.
 */
async function withClient<T>(db: pg.Pool, transaction: boolean, work: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    let client: pg.PoolClient;
    try {
      client = await db.connect();
    } catch (err) {
      throw unavailable('PostgreSQL is unreachable', err);
    }
    let broken: Error | undefined;
    try {
      if (transaction) await client.query('BEGIN');
      const result = await work(client);
      if (transaction) await client.query('COMMIT');
      return result;
    } catch (err) {
      if (transaction) await client.query('ROLLBACK').catch(() => {});
      if (err instanceof ProblemError || err instanceof KeyTaken) throw err;
      const code = pgCode(err);
      if (code && RETRYABLE.has(code) && attempt < MAX_ATTEMPTS) continue;
      if (!code) broken = err as Error; // the connection itself failed: do not reuse it
      throw unavailable('PostgreSQL did not record the change; nothing was applied, retry', err);
    } finally {
      client.release(broken);
    }
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Holds every line and records the reservation, or inserts nothing; answers the count of lines held. */
const RESERVE = `
  WITH st AS (
    UPDATE stock s SET reserved = s.reserved + t.quantity, updated_at = now()
    FROM unnest($10::text[], $11::text[], $12::int[]) AS t(item_id, location, quantity)
    WHERE s.item_id = t.item_id AND s.location = t.location AND s.on_hand - s.reserved >= t.quantity
    RETURNING s.item_id),
  ok AS (SELECT count(*) AS held FROM st),
  res AS (
    INSERT INTO reservations (id, status, reference, metadata, expires_at, created_at, updated_at, tenant)
    SELECT $1, 'pending', $2, $3, $4, $5, $5, $14 FROM ok WHERE held = $13),
  idem AS (
    INSERT INTO idempotency_keys (scope, key, request_hash, reservation_id, status_code, response)
    SELECT $6, $7, $8, $1, 201, $9 FROM ok WHERE held = $13),
  lines AS (
    INSERT INTO reservation_lines (reservation_id, line_no, item_id, location, quantity)
    SELECT $1, t.n - 1, t.item_id, t.location, t.quantity
    FROM unnest($10::text[], $11::text[], $12::int[]) WITH ORDINALITY AS t(item_id, location, quantity, n), ok
    WHERE held = $13),
  mv AS (
    INSERT INTO stock_movements (item_id, location, kind, on_hand_delta, reserved_delta, reservation_id)
    SELECT t.item_id, t.location, 'reserve', 0, t.quantity, $1
    FROM unnest($10::text[], $11::text[], $12::int[]) AS t(item_id, location, quantity), ok
    WHERE held = $13)
  SELECT held::int AS held FROM ok`;

/** Moves a locked pending reservation to its final state: reservation row, stock rows, ledger; counts stock rows. */
const SETTLE = `
  WITH r AS (UPDATE reservations SET status = $2::text, updated_at = $3::timestamptz, version = version + 1 WHERE id = $1::uuid),
  mv AS (
    INSERT INTO stock_movements (item_id, location, kind, on_hand_delta, reserved_delta, reservation_id)
    SELECT t.item_id, t.location, $4::text, -$5::int * t.quantity, -t.quantity, $1
    FROM unnest($6::text[], $7::text[], $8::int[]) AS t(item_id, location, quantity)),
  st AS (
    UPDATE stock s SET on_hand = s.on_hand - $5 * t.quantity, reserved = s.reserved - t.quantity, updated_at = now()
    FROM unnest($6::text[], $7::text[], $8::int[]) AS t(item_id, location, quantity)
    WHERE s.item_id = t.item_id AND s.location = t.location AND ($5 = 0 OR s.on_hand >= t.quantity)
    RETURNING 1)
  SELECT count(*)::int AS stocked FROM st`;

class PgOnlyReservations implements ReservationApi {
  constructor(private readonly db: pg.Pool) {}

  async reserve(caller: Caller, key: string, request: ReservationRequest): Promise<ReserveAnswer> {
    const lines = normaliseLines(request);
    const hash = requestHash(request);
    const id = newId();
    const scope = caller.name;
    const now = new Date();
    const reservation = pendingReservation(id, request, lines, now, caller.tenant);
    const body = toDocument(reservation, now);
    const params = [
      id,
      reservation.reference,
      JSON.stringify(reservation.metadata),
      reservation.expiresAt,
      now,
      scope,
      key,
      hash,
      JSON.stringify(body),
      ...lineArrays(lines),
      lines.length,
      caller.tenant,
    ];
    const single = lines.length === 1;
    try {
      await withClient(this.db, !single, async (c) => {
        if (!single) {
          const rows = await lockStock(c, [...lines].sort(byKey));
          const problem = shortage(lines, rows);
          if (problem) throw problem;
        }
        const { rows } = await c.query<{ held: number }>(RESERVE, params).catch((err: unknown) => {
          throw pgCode(err) === '23505' ? new KeyTaken() : err;
        });
        if (rows[0]!.held === lines.length) return;
        // Only a one-line reservation gets here (a cart's rows are locked and checked): nothing was written.
        const current = await c.query<LockedRow>('SELECT item_id, location, on_hand, reserved FROM stock WHERE item_id = $1 AND location = $2', [
          lines[0]!.itemId,
          lines[0]!.location,
        ]);
        throw shortage(lines, current.rows) ?? new ProblemError('insufficient_stock', 'not enough available');
      });
    } catch (err) {
      if (err instanceof KeyTaken) return this.replay(scope, key, hash);
      throw err;
    }
    return { statusCode: 201, body };
  }

  private async replay(scope: string, key: string, hash: string): Promise<ReserveAnswer> {
    const first = await read(() => findIdempotency(this.db, scope, key));
    if (!first) throw new ProblemError('idempotency_key_in_use', 'a request with this Idempotency-Key is still being processed');
    if (first.requestHash !== hash) throw new ProblemError('idempotency_key_reused', 'this Idempotency-Key was used with a different request body');
    // The response column holds the first answer (as JSON or as its text, depending on the schema's version).
    const response: unknown = first.response;
    const body = (typeof response === 'string' ? JSON.parse(response) : response) as ReservationDocument;
    return { statusCode: first.statusCode, body, replayed: true };
  }

  async get(caller: Caller, id: string): Promise<ReservationDocument> {
    const r = await read(() => findReservation(this.db, id));
    // Tenancy as the service has it (src/domain/tenancy.ts): another tenant's reservation is not found.
    if (!r || !canAccess(caller, r.tenant)) throw notFound(id);
    return toDocument(r);
  }

  confirm(caller: Caller, id: string, _ifMatch?: number | null, request?: ConfirmRequest): Promise<ReservationDocument> {
    if (request?.lines) return Promise.reject(new ProblemError('not_found', 'the pg-only baseline does not confirm partly'));
    return this.settle(caller, id, 'confirmed');
  }

  release(caller: Caller, id: string): Promise<ReservationDocument> {
    return this.settle(caller, id, 'released');
  }

  // The saga operations (extend, partial confirm, by reference) are the service's own: this baseline measures reserve, confirm and release.
  extend(): Promise<ReservationDocument> {
    return Promise.reject(new ProblemError('not_found', 'the pg-only baseline does not extend'));
  }

  listByReference(): Promise<ReservationPage> {
    return Promise.reject(new ProblemError('not_found', 'the pg-only baseline does not list by reference'));
  }

  releaseByReference(): Promise<ReleasedByReference> {
    return Promise.reject(new ProblemError('not_found', 'the pg-only baseline does not release by reference'));
  }

  private settle(caller: Caller, id: string, to: 'confirmed' | 'released'): Promise<ReservationDocument> {
    if (!UUID.test(id)) return Promise.reject(notFound(id));
    return withClient(this.db, true, async (c) => {
      const r = await lockReservation(c, id);
      if (!canAccess(caller, r.tenant)) throw notFound(id); // rolls back: nothing changed
      const now = new Date();
      const status = effectiveStatus(r, now);
      if (status === to) return toDocument(r, now);
      if (status === 'expired' && to === 'released') return toDocument(r, now);
      if (status !== 'pending') throw ended(status);

      const sorted = [...r.lines].sort(byKey);
      if (sorted.length > 1) await lockStock(c, sorted);
      const { rows } = await c.query<{ stocked: number }>(SETTLE, [
        id,
        to,
        now,
        to === 'confirmed' ? 'confirm' : 'release',
        to === 'confirmed' ? 1 : 0,
        ...lineArrays(sorted),
      ]);
      if (rows[0]!.stocked < sorted.length) throw new ProblemError('insufficient_stock', 'on hand no longer covers this reservation');
      return toDocument({ ...r, status: to, updatedAt: now, version: r.version + 1 }, now);
    });
  }
}

/** Locks the stock rows of `sorted` (key order, so concurrent carts never deadlock) and returns them. */
async function lockStock(c: pg.PoolClient, sorted: Line[]): Promise<LockedRow[]> {
  const { rows } = await c.query<LockedRow>(
    `SELECT s.item_id, s.location, s.on_hand, s.reserved
     FROM stock s JOIN unnest($1::text[], $2::text[]) AS t(item_id, location)
       ON s.item_id = t.item_id AND s.location = t.location
     ORDER BY s.item_id, s.location FOR UPDATE OF s`,
    [sorted.map((l) => l.itemId), sorted.map((l) => l.location)],
  );
  return rows;
}

/** The 404/409 answer for lines that cannot be held, or null when every line can. */
function shortage(lines: Line[], rows: LockedRow[]): ProblemError | null {
  const byPair = new Map(rows.map((r) => [`${r.item_id}\u0000${r.location}`, r]));
  const missing = lines.filter((l) => !byPair.has(`${l.itemId}\u0000${l.location}`));
  if (missing.length > 0) return new ProblemError('item_not_found', `not stocked: ${missing.map((l) => l.itemId).join(', ')}`);
  const short = lines.flatMap((l) => {
    const r = byPair.get(`${l.itemId}\u0000${l.location}`)!;
    const available = Math.max(0, r.on_hand - r.reserved);
    return available < l.quantity ? [{ itemId: l.itemId, location: l.location, requested: l.quantity, available }] : [];
  });
  if (short.length === 0) return null;
  return new ProblemError('insufficient_stock', short.map((s) => `${s.itemId}: requested ${s.requested}, available ${s.available}`).join('; '), {
    lines: short,
  });
}

/** The reservation with its lines, its row locked until the transaction ends. */
async function lockReservation(c: pg.PoolClient, id: string): Promise<ReservationRecord> {
  const { rows } = await c.query<ReservationRow>(`${SELECT_RESERVATION} WHERE r.id = $1 FOR UPDATE OF r`, [id]);
  const row = rows[0];
  if (!row) throw notFound(id);
  return toRecord(row);
}

class PgOnlyStock implements StockApi {
  constructor(private readonly db: pg.Pool) {}

  async availability(itemId: string): Promise<AvailabilityDocument> {
    const { rows } = await read(() =>
      this.db.query<{ location: string; on_hand: number; reserved: number }>(
        'SELECT location, on_hand, reserved FROM stock WHERE item_id = $1 ORDER BY location',
        [itemId],
      ),
    );
    if (rows.length === 0) throw new ProblemError('item_not_found', `${itemId} is not stocked`);
    return toAvailabilityDocument(itemId, rows);
  }

  async set(itemId: string, location: string, quantity: number): Promise<AvailabilityDocument> {
    await withClient(this.db, true, async (c) => {
      const { rows } = await c.query<{ on_hand: number }>('SELECT on_hand FROM stock WHERE item_id = $1 AND location = $2 FOR UPDATE', [
        itemId,
        location,
      ]);
      const delta = quantity - (rows[0]?.on_hand ?? 0);
      await c.query(
        `WITH up AS (
           INSERT INTO stock (item_id, location, on_hand) VALUES ($1, $2, $3)
           ON CONFLICT (item_id, location) DO UPDATE SET on_hand = excluded.on_hand, updated_at = now())
         INSERT INTO stock_movements (item_id, location, kind, on_hand_delta, reserved_delta) VALUES ($1, $2, 'set', $4, 0)`,
        [itemId, location, quantity, delta],
      );
    });
    return this.availability(itemId);
  }

  async adjust(itemId: string, location: string, delta: number, reason: string | null): Promise<AvailabilityDocument> {
    await withClient(this.db, true, async (c) => {
      const { rows } = await c.query<{ on_hand: number | null; changed: boolean }>(
        `WITH up AS (
           UPDATE stock SET on_hand = on_hand + $3, updated_at = now()
           WHERE item_id = $1 AND location = $2 AND on_hand + $3 >= 0 RETURNING on_hand),
         mv AS (
           INSERT INTO stock_movements (item_id, location, kind, on_hand_delta, reserved_delta, reason)
           SELECT $1, $2, 'adjust', $3, 0, $4 FROM up)
         SELECT EXISTS (SELECT 1 FROM up) AS changed,
                (SELECT on_hand FROM stock WHERE item_id = $1 AND location = $2) AS on_hand`,
        [itemId, location, delta, reason],
      );
      const row = rows[0]!;
      if (row.changed) return;
      if (row.on_hand === null) throw new ProblemError('item_not_found', `${itemId} is not stocked at ${location}`);
      throw new ProblemError('insufficient_stock', `${itemId}@${location}: on hand ${row.on_hand}, delta ${delta}`, {
        lines: [{ itemId, location, requested: -delta, available: row.on_hand }],
      });
    });
    return this.availability(itemId);
  }
}

/** Records due reservations as expired and gives their units back (one batch a pass). */
async function expireDue(db: pg.Pool): Promise<void> {
  await db.query(
    `WITH due AS (
       UPDATE reservations r SET status = 'expired', updated_at = r.expires_at, version = r.version + 1
       WHERE r.id IN (SELECT id FROM reservations WHERE status = 'pending' AND expires_at <= now()
                      ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
       RETURNING r.id),
     l AS (SELECT item_id, location, quantity, reservation_id FROM reservation_lines WHERE reservation_id IN (SELECT id FROM due)),
     mv AS (
       INSERT INTO stock_movements (item_id, location, kind, on_hand_delta, reserved_delta, reservation_id)
       SELECT item_id, location, 'expire', 0, -quantity, reservation_id FROM l)
     UPDATE stock s SET reserved = s.reserved - g.q, updated_at = now()
     FROM (SELECT item_id, location, sum(quantity) AS q FROM l GROUP BY item_id, location) g
     WHERE s.item_id = g.item_id AND s.location = g.location`,
    [SWEEP_BATCH],
  );
}

/** This baseline keeps no safety stock: every figure is as for a location without one. */
function toAvailabilityDocument(itemId: string, rows: { location: string; on_hand: number; reserved: number }[]): AvailabilityDocument {
  const stock = new Map(rows.map((r) => [r.location, { onHand: r.on_hand, reserved: r.reserved }]));
  return toAvailability(itemId, stock)!;
}

const lineArrays = (lines: readonly Line[]): [string[], string[], number[]] => [
  lines.map((l) => l.itemId),
  lines.map((l) => l.location),
  lines.map((l) => l.quantity),
];

async function read<T>(query: () => Promise<T>): Promise<T> {
  try {
    return await query();
  } catch (err) {
    throw unavailable('PostgreSQL is unreachable', err);
  }
}

const notFound = (id: string) => new ProblemError('reservation_not_found', `no reservation ${id}`);

const ended = (status: 'released' | 'expired' | 'confirmed' | 'pending') =>
  new ProblemError(
    status === 'released' ? 'reservation_released' : status === 'expired' ? 'reservation_expired' : 'reservation_confirmed',
    `the reservation is ${status}`,
  );
