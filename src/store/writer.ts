import type pg from 'pg';
import type { Line, ReservationRecord } from '../domain/reservation.js';
import type { Metrics } from '../metrics.js';
import { checkOut } from './database.js';
import { FENCE_LOCK_ID } from './fence.js';

export type Transition = 'confirmed' | 'released' | 'expired';

/** What one request asks PostgreSQL to record. `generation` is the Redis state generation it was decided under. */
export type RecordOp =
  | {
      kind: 'reserve';
      generation: string;
      reservation: ReservationRecord;
      idempotency: { scope: string; key: string; requestHash: string; statusCode: number; response: unknown };
    }
  | { kind: 'transition'; generation: string; reservationId: string; to: Transition; at: Date; lines: readonly Line[] }
  | {
      kind: 'stock';
      generation: string;
      itemId: string;
      location: string;
      onHandDelta: number;
      movement: 'set' | 'adjust';
      reason: string | null;
    };

/**
 * - recorded: committed.
 * - conflict: not applied because PostgreSQL already had the final word (the idempotency key was taken, or the
 *   reservation was no longer pending).
 * - stale: not applied because Redis was rebuilt after the decision (the fence).
 */
export type RecordResult = 'recorded' | 'conflict' | 'stale';

/** The batch did not commit (`committed: false`), or its commit's fate could not be learned (`'unknown'`). */
export class RecordError extends Error {
  constructor(
    readonly committed: false | 'unknown',
    cause: unknown,
  ) {
    super(`PostgreSQL record failed (${committed === false ? 'not committed' : 'outcome unknown'})`, { cause });
    this.name = 'RecordError';
  }
}

interface Pending {
  op: RecordOp;
  resolve: (r: RecordResult) => void;
  reject: (e: unknown) => void;
}

const RETRYABLE = new Set(['40001', '40P01']); // serialization failure, deadlock
const MAX_ATTEMPTS = 3;

interface Movement {
  /** Which operation's success lets this row into the ledger. */
  gate: 'reserve' | 'transition' | 'stock';
  itemId: string;
  location: string;
  kind: string;
  onHand: number;
  reserved: number;
  reservationId: string | null;
  reason: string | null;
}

/**
 * Group commit: operations submitted while earlier transactions are in flight are gathered into one transaction
 * of multi-row statements, with stock changes summed per (item, location), so a hot SKU costs one row update per
 * batch. At low load an operation is flushed on the next tick, alone. Each caller waits for its own commit; a
 * failed batch fails exactly its callers.
 */
export class BatchWriter {
  private queue: Pending[] = [];
  private inflight = 0;
  private scheduled = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly metrics: Metrics,
    private readonly options: { maxBatch: number; concurrency: number },
  ) {}

  submit(op: RecordOp): Promise<RecordResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ op, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.pump();
        });
      }
    });
  }

  /** Resolves once every submitted operation has settled (graceful shutdown). */
  async drain(): Promise<void> {
    while (this.queue.length > 0 || this.inflight > 0) await new Promise((r) => setTimeout(r, 5));
  }

  private pump(): void {
    while (this.inflight < this.options.concurrency && this.queue.length > 0) {
      const batch = this.takeBatch();
      this.inflight++;
      void this.flush(batch).finally(() => {
        this.inflight--;
        this.pump();
      });
    }
  }

  /** Up to maxBatch operations, at most one transition per reservation (a later one waits for the next batch). */
  private takeBatch(): Pending[] {
    const batch: Pending[] = [];
    const rest: Pending[] = [];
    const seen = new Set<string>();
    for (const p of this.queue) {
      const id = p.op.kind === 'transition' ? p.op.reservationId : null;
      if (batch.length >= this.options.maxBatch || (id && seen.has(id))) rest.push(p);
      else {
        if (id) seen.add(id);
        batch.push(p);
      }
    }
    this.queue = rest;
    return batch;
  }

  private async flush(batch: Pending[]): Promise<void> {
    const end = this.metrics.pgBatchDuration.startTimer();
    this.metrics.pgBatchSize.observe(batch.length);
    for (let attempt = 1; ; attempt++) {
      try {
        const results = await this.commit(batch.map((p) => p.op));
        batch.forEach((p, i) => p.resolve(results[i]!));
        break;
      } catch (err) {
        const code = err instanceof RecordError ? (err.cause as { code?: string } | undefined)?.code : undefined;
        if (err instanceof RecordError && err.committed === false && code && RETRYABLE.has(code) && attempt < MAX_ATTEMPTS) continue;
        this.metrics.pgBatchFailures.inc();
        batch.forEach((p) => p.reject(err));
        break;
      }
    }
    end();
  }

  private async commit(ops: RecordOp[]): Promise<RecordResult[]> {
    let client: pg.PoolClient;
    try {
      client = await checkOut(this.pool);
    } catch (err) {
      throw new RecordError(false, err);
    }
    let committing = false;
    let xid: string | undefined;
    let results: RecordResult[] = [];
    let broken: Error | undefined;
    try {
      const [, , head] = (await client.query(
        `BEGIN; SELECT pg_advisory_xact_lock_shared(${FENCE_LOCK_ID});
         SELECT generation::text AS generation, pg_current_xact_id()::text AS xid FROM state_generation`,
      )) as unknown as [unknown, unknown, pg.QueryResult<{ generation: string; xid: string }>];
      const { generation } = head.rows[0]!;
      xid = head.rows[0]!.xid;
      results = ops.map<RecordResult>((op) => (op.generation === generation ? 'recorded' : 'stale'));
      await this.apply(client, ops, results);
      committing = true;
      await client.query('COMMIT');
      return results;
    } catch (err) {
      broken = err as Error;
      if (!committing) {
        await client.query('ROLLBACK').catch(() => {});
        throw new RecordError(false, err);
      }
      const fate = await this.commitFate(xid);
      if (fate === 'committed') return results; // the answer was lost, not the commit
      throw new RecordError(fate, err);
    } finally {
      // After any error the connection may be dead or mid-transaction: destroy it rather than reuse it.
      client.release(broken);
    }
  }

  /** After an error on COMMIT itself: ask PostgreSQL (on another connection) whether the transaction committed. */
  private async commitFate(xid: string | undefined): Promise<'committed' | false | 'unknown'> {
    if (!xid) return 'unknown';
    try {
      const { rows } = await this.pool.query<{ status: string | null }>('SELECT pg_xact_status($1::xid8) AS status', [xid]);
      const status = rows[0]?.status;
      return status === 'committed' ? 'committed' : status === 'aborted' ? false : 'unknown';
    } catch {
      return 'unknown';
    }
  }

  /**
   * Records the batch in one statement: data-modifying CTEs insert the idempotency keys (the unique key decides
   * which reservations are created), the reservations and their lines, move pending reservations to their final
   * states, and apply the ledger rows of exactly the operations that took effect, summed into one stock-row
   * update per (item, location). Operations PostgreSQL refused are marked conflicts: they changed nothing.
   */
  private async apply(client: pg.PoolClient, ops: RecordOp[], results: RecordResult[]): Promise<void> {
    const live = ops.filter((_, i) => results[i] === 'recorded');
    if (live.length === 0) return;
    const reserves = live.filter((op) => op.kind === 'reserve');
    const transitions = live
      .filter((op) => op.kind === 'transition')
      .sort((a, b) => (a.reservationId < b.reservationId ? -1 : a.reservationId > b.reservationId ? 1 : 0));
    const lines = reserves.flatMap((r) => r.reservation.lines.map((l, n) => ({ id: r.reservation.id, n, ...l })));
    const movements = live.flatMap(movementsOf);

    // A named statement: each connection parses and plans this large statement once, not per batch.
    const { rows } = await client.query<{ created: string[] | null; moved: string[] | null }>({
      name: 'record_batch',
      text: RECORD_BATCH,
      values: [
        reserves.map((r) => r.idempotency.scope),
        reserves.map((r) => r.idempotency.key),
        reserves.map((r) => r.idempotency.requestHash),
        reserves.map((r) => r.reservation.id),
        reserves.map((r) => r.idempotency.statusCode),
        reserves.map((r) => JSON.stringify(r.idempotency.response)),
        reserves.map((r) => r.reservation.reference),
        reserves.map((r) => JSON.stringify(r.reservation.metadata)),
        reserves.map((r) => r.reservation.expiresAt),
        reserves.map((r) => r.reservation.createdAt),
        lines.map((l) => l.id),
        lines.map((l) => l.n),
        lines.map((l) => l.itemId),
        lines.map((l) => l.location),
        lines.map((l) => l.quantity),
        transitions.map((t) => t.reservationId),
        transitions.map((t) => t.to),
        transitions.map((t) => t.at),
        movements.map((m) => m.itemId),
        movements.map((m) => m.location),
        movements.map((m) => m.kind),
        movements.map((m) => m.onHand),
        movements.map((m) => m.reserved),
        movements.map((m) => m.reservationId),
        movements.map((m) => m.reason),
        movements.map((m) => m.gate),
      ],
    });
    const created = new Set(rows[0]?.created ?? []);
    const moved = new Set(rows[0]?.moved ?? []);
    ops.forEach((op, i) => {
      if (results[i] !== 'recorded') return;
      if (op.kind === 'reserve' && !created.has(op.reservation.id)) results[i] = 'conflict';
      if (op.kind === 'transition' && !moved.has(op.reservationId)) results[i] = 'conflict';
    });
  }
}

/**
 * One round trip for a whole batch. Stock rows are updated in key order, so concurrent batches (on this node or
 * others) never deadlock on them; the ledger keeps every movement while the stock row takes their sum.
 */
const RECORD_BATCH = `
WITH idem AS (
  INSERT INTO idempotency_keys (scope, key, request_hash, reservation_id, status_code, response)
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::smallint[], $6::text[])
  ON CONFLICT DO NOTHING
  RETURNING reservation_id
), created AS (
  INSERT INTO reservations (id, status, reference, metadata, expires_at, created_at, updated_at)
  SELECT t.id, 'pending', t.reference, t.metadata, t.expires_at, t.created_at, t.created_at
  FROM unnest($4::uuid[], $7::text[], $8::jsonb[], $9::timestamptz[], $10::timestamptz[])
    AS t(id, reference, metadata, expires_at, created_at)
  WHERE t.id IN (SELECT reservation_id FROM idem)
  RETURNING id
), lines AS (
  INSERT INTO reservation_lines (reservation_id, line_no, item_id, location, quantity)
  SELECT l.id, l.n, l.item_id, l.location, l.quantity
  FROM unnest($11::uuid[], $12::smallint[], $13::text[], $14::text[], $15::int[]) AS l(id, n, item_id, location, quantity)
  WHERE l.id IN (SELECT id FROM created)
), moved AS (
  UPDATE reservations r SET status = t.status, updated_at = t.at
  FROM unnest($16::uuid[], $17::text[], $18::timestamptz[]) AS t(id, status, at)
  WHERE r.id = t.id AND r.status = 'pending'
  RETURNING r.id
), movements AS (
  SELECT m.item_id, m.location, m.kind, m.on_hand_delta, m.reserved_delta, m.reservation_id, m.reason
  FROM unnest($19::text[], $20::text[], $21::text[], $22::bigint[], $23::bigint[], $24::uuid[], $25::text[], $26::text[])
    AS m(item_id, location, kind, on_hand_delta, reserved_delta, reservation_id, reason, gate)
  WHERE m.gate = 'stock'
     OR (m.gate = 'reserve' AND m.reservation_id IN (SELECT reservation_id FROM idem))
     OR (m.gate = 'transition' AND m.reservation_id IN (SELECT id FROM moved))
), ledger AS (
  INSERT INTO stock_movements (item_id, location, kind, on_hand_delta, reserved_delta, reservation_id, reason)
  SELECT * FROM movements
), stocked AS (
  INSERT INTO stock AS s (item_id, location, on_hand, reserved)
  SELECT item_id, location, sum(on_hand_delta), sum(reserved_delta) FROM movements
  GROUP BY item_id, location ORDER BY item_id, location
  ON CONFLICT (item_id, location) DO UPDATE
    SET on_hand = s.on_hand + excluded.on_hand, reserved = s.reserved + excluded.reserved, updated_at = now()
)
SELECT (SELECT array_agg(reservation_id)::text[] FROM idem) AS created,
       (SELECT array_agg(id)::text[] FROM moved) AS moved`;

/** The ledger rows an operation adds: what PostgreSQL's on-hand and reserved change by. */
function movementsOf(op: RecordOp): Movement[] {
  switch (op.kind) {
    case 'stock':
      return [
        {
          gate: 'stock',
          itemId: op.itemId,
          location: op.location,
          kind: op.movement,
          onHand: op.onHandDelta,
          reserved: 0,
          reservationId: null,
          reason: op.reason,
        },
      ];
    case 'reserve':
      return op.reservation.lines.map((l) => ({
        gate: 'reserve' as const,
        itemId: l.itemId,
        location: l.location,
        kind: 'reserve',
        onHand: 0,
        reserved: l.quantity,
        reservationId: op.reservation.id,
        reason: null,
      }));
    case 'transition': {
      const kind = { confirmed: 'confirm', released: 'release', expired: 'expire' }[op.to];
      return op.lines.map((l) => ({
        gate: 'transition' as const,
        itemId: l.itemId,
        location: l.location,
        kind,
        onHand: op.to === 'confirmed' ? -l.quantity : 0,
        reserved: -l.quantity,
        reservationId: op.reservationId,
        reason: null,
      }));
    }
  }
}
