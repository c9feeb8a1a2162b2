import type pg from 'pg';
import type { Line, ReservationRecord } from '../domain/reservation.js';
import type { Metrics } from '../metrics.js';
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
      client = await this.pool.connect();
    } catch (err) {
      throw new RecordError(false, err);
    }
    let committing = false;
    let xid: string | undefined;
    let broken: Error | undefined;
    try {
      const [, , head] = (await client.query(
        `BEGIN; SELECT pg_advisory_xact_lock_shared(${FENCE_LOCK_ID});
         SELECT generation::text AS generation, pg_current_xact_id()::text AS xid FROM state_generation`,
      )) as unknown as [unknown, unknown, pg.QueryResult<{ generation: string; xid: string }>];
      const { generation } = head.rows[0]!;
      xid = head.rows[0]!.xid;
      const results = ops.map<RecordResult>((op) => (op.generation === generation ? 'recorded' : 'stale'));
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
      throw new RecordError(await this.commitFate(xid), err);
    } finally {
      // After any error the connection may be dead or mid-transaction: destroy it rather than reuse it.
      client.release(broken);
    }
  }

  /** After an error on COMMIT itself: ask PostgreSQL (on another connection) whether the transaction committed. */
  private async commitFate(xid: string | undefined): Promise<false | 'unknown'> {
    if (!xid) return 'unknown';
    try {
      const { rows } = await this.pool.query<{ status: string | null }>('SELECT pg_xact_status($1::xid8) AS status', [xid]);
      if (rows[0]?.status === 'committed') throw new CommittedAfterAll();
      return rows[0]?.status === 'aborted' ? false : 'unknown';
    } catch (err) {
      if (err instanceof CommittedAfterAll) throw err;
      return 'unknown';
    }
  }

  /** Runs the batch's statements; marks operations PostgreSQL refuses as conflicts (they change nothing). */
  private async apply(client: pg.PoolClient, ops: RecordOp[], results: RecordResult[]): Promise<void> {
    const live = (kind: RecordOp['kind']) =>
      ops.flatMap((op, i) => (op.kind === kind && results[i] === 'recorded' ? [i] : []));

    const reserves = live('reserve');
    if (reserves.length > 0) {
      const rs = reserves.map((i) => ops[i] as Extract<RecordOp, { kind: 'reserve' }>);
      const won = await client.query<{ reservation_id: string }>(
        `INSERT INTO idempotency_keys (scope, key, request_hash, reservation_id, status_code, response)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::smallint[], $6::text[])
         ON CONFLICT DO NOTHING RETURNING reservation_id`,
        [
          rs.map((r) => r.idempotency.scope),
          rs.map((r) => r.idempotency.key),
          rs.map((r) => r.idempotency.requestHash),
          rs.map((r) => r.reservation.id),
          rs.map((r) => r.idempotency.statusCode),
          rs.map((r) => JSON.stringify(r.idempotency.response)),
        ],
      );
      const winners = new Set(won.rows.map((r) => r.reservation_id));
      reserves.forEach((i, n) => {
        if (!winners.has(rs[n]!.reservation.id)) results[i] = 'conflict';
      });
      const created = rs.filter((r) => winners.has(r.reservation.id)).map((r) => r.reservation);
      if (created.length > 0) {
        await client.query(
          `INSERT INTO reservations (id, status, reference, metadata, expires_at, created_at, updated_at)
           SELECT id, 'pending', reference, metadata, expires_at, created_at, created_at
           FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::timestamptz[], $5::timestamptz[])
             AS t(id, reference, metadata, expires_at, created_at)`,
          [
            created.map((r) => r.id),
            created.map((r) => r.reference),
            created.map((r) => JSON.stringify(r.metadata)),
            created.map((r) => r.expiresAt),
            created.map((r) => r.createdAt),
          ],
        );
        const lines = created.flatMap((r) => r.lines.map((l, n) => ({ id: r.id, n, ...l })));
        await client.query(
          `INSERT INTO reservation_lines (reservation_id, line_no, item_id, location, quantity)
           SELECT * FROM unnest($1::uuid[], $2::smallint[], $3::text[], $4::text[], $5::int[])`,
          [lines.map((l) => l.id), lines.map((l) => l.n), lines.map((l) => l.itemId), lines.map((l) => l.location), lines.map((l) => l.quantity)],
        );
      }
    }

    const transitions = live('transition').sort((a, b) => {
      const x = (ops[a] as Extract<RecordOp, { kind: 'transition' }>).reservationId;
      const y = (ops[b] as Extract<RecordOp, { kind: 'transition' }>).reservationId;
      return x < y ? -1 : x > y ? 1 : 0; // one lock order for every batch: no deadlocks between batches
    });
    if (transitions.length > 0) {
      const ts = transitions.map((i) => ops[i] as Extract<RecordOp, { kind: 'transition' }>);
      const updated = await client.query<{ id: string }>(
        `UPDATE reservations r SET status = t.status, updated_at = t.at
         FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS t(id, status, at)
         WHERE r.id = t.id AND r.status = 'pending'
         RETURNING r.id`,
        [ts.map((t) => t.reservationId), ts.map((t) => t.to), ts.map((t) => t.at)],
      );
      const moved = new Set(updated.rows.map((r) => r.id));
      transitions.forEach((i, n) => {
        if (!moved.has(ts[n]!.reservationId)) results[i] = 'conflict';
      });
    }

    const movements = ops.flatMap((op, i) => (results[i] === 'recorded' ? movementsOf(op) : []));
    if (movements.length === 0) return;
    await upsertStock(client, movements);
    await client.query(
      `INSERT INTO stock_movements (item_id, location, kind, on_hand_delta, reserved_delta, reservation_id, reason)
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::uuid[], $7::text[])`,
      [
        movements.map((m) => m.itemId),
        movements.map((m) => m.location),
        movements.map((m) => m.kind),
        movements.map((m) => m.onHand),
        movements.map((m) => m.reserved),
        movements.map((m) => m.reservationId),
        movements.map((m) => m.reason),
      ],
    );
  }
}

class CommittedAfterAll extends Error {}

/** The ledger rows an operation adds: what PostgreSQL's on-hand and reserved change by. */
function movementsOf(op: RecordOp): Movement[] {
  switch (op.kind) {
    case 'stock':
      return [
        { itemId: op.itemId, location: op.location, kind: op.movement, onHand: op.onHandDelta, reserved: 0, reservationId: null, reason: op.reason },
      ];
    case 'reserve':
      return op.reservation.lines.map((l) => ({
        ...l,
        kind: 'reserve',
        onHand: 0,
        reserved: l.quantity,
        reservationId: op.reservation.id,
        reason: null,
      }));
    case 'transition': {
      const kind = { confirmed: 'confirm', released: 'release', expired: 'expire' }[op.to];
      return op.lines.map((l) => ({
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

/** One row update per (item, location) per batch, in key order so concurrent batches never deadlock. */
async function upsertStock(client: pg.PoolClient, movements: Movement[]): Promise<void> {
  const sums = new Map<string, { itemId: string; location: string; onHand: number; reserved: number }>();
  for (const m of movements) {
    const key = `${m.itemId}\u0000${m.location}`;
    const s = sums.get(key) ?? { itemId: m.itemId, location: m.location, onHand: 0, reserved: 0 };
    s.onHand += m.onHand;
    s.reserved += m.reserved;
    sums.set(key, s);
  }
  const rows = [...sums.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, s]) => s);
  await client.query(
    `INSERT INTO stock AS s (item_id, location, on_hand, reserved)
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
     ON CONFLICT (item_id, location) DO UPDATE
       SET on_hand = s.on_hand + excluded.on_hand, reserved = s.reserved + excluded.reserved, updated_at = now()`,
    [rows.map((r) => r.itemId), rows.map((r) => r.location), rows.map((r) => r.onHand), rows.map((r) => r.reserved)],
  );
}
