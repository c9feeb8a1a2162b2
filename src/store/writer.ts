import type pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import type { Line, ReservationRecord } from '../domain/reservation.js';
import type { Metrics } from '../metrics.js';
import { checkOut } from './database.js';

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

/**
 * The batch did not commit (`committed: false`), or its fate could not be learned yet (`'unknown'`: PostgreSQL was
 * unreachable). Then `fate` keeps asking and settles to whether it committed, or 'unknown' after FATE_DEADLINE_MS.
 */
export class RecordError extends Error {
  readonly fate: Promise<boolean | 'unknown'>;

  constructor(
    readonly committed: false | 'unknown',
    cause: unknown,
    fate?: Promise<boolean | 'unknown'>,
  ) {
    super(`PostgreSQL record failed (${committed === false ? 'not committed' : 'outcome unknown'})`, { cause });
    this.name = 'RecordError';
    this.fate = fate ?? Promise.resolve(committed);
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
 * Group commit: operations submitted while earlier batches are in flight are gathered into one statement of
 * multi-row inserts and updates, committed on its own, with stock changes summed per (item, location), so a hot
 * SKU costs one row update per batch. At low load an operation is flushed on the next tick, alone. Each caller
 * waits for its own commit; a failed batch fails exactly its callers. A batch whose answer is lost is looked up
 * (`settleLost`) before its callers hear anything, off the flush slot so later batches go on.
 */
export class BatchWriter {
  private queue: Pending[] = [];
  private inflight = 0;
  private scheduled = false;
  private closed = false;
  /** Lost batches whose fate is being looked up (off the flush slots, so later batches are not held up). */
  private settling = 0;

  constructor(
    private readonly pool: pg.Pool,
    private readonly metrics: Metrics,
    private readonly options: { maxBatch: number; concurrency: number; fateWaitMs: number },
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

  /** Resolves once every submitted operation has settled. */
  async drain(): Promise<void> {
    while (this.queue.length > 0 || this.inflight > 0 || this.settling > 0) await new Promise((r) => setTimeout(r, 5));
  }

  /** Graceful shutdown: drains, and stops asking after lost batches (reconciliation settles what is left). */
  async close(): Promise<void> {
    await this.drain();
    this.closed = true;
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
        if (err instanceof LostAnswer) {
          void this.settleLost(batch, err);
          break;
        }
        const code = err instanceof RecordError ? (err.cause as { code?: string } | undefined)?.code : undefined;
        if (err instanceof RecordError && err.committed === false && code && RETRYABLE.has(code) && attempt < MAX_ATTEMPTS) continue;
        this.metrics.pgBatchFailures.inc();
        batch.forEach((p) => p.reject(err));
        break;
      }
    }
    end();
  }

  /**
   * Answers the callers of a batch whose answer was lost once its fate is known: waiting a while for PostgreSQL (a
   * request should not get 503 for a change that committed), then 'unknown', settled later by `fate`.
   */
  private async settleLost(batch: Pending[], lost: LostAnswer): Promise<void> {
    this.settling++;
    try {
      const outcome = await this.lookUpUntil(lost.processId, lost.batchId, Date.now() + this.options.fateWaitMs);
      if (outcome !== false && outcome !== 'unknown') {
        const results = resultsOf(lost.ops, lost.generation, outcome); // the answer was lost, not the commit
        batch.forEach((p, i) => p.resolve(results[i]!));
        return;
      }
      this.metrics.pgBatchFailures.inc();
      const fate =
        outcome === false
          ? undefined
          : this.lookUpUntil(lost.processId, lost.batchId, Date.now() + FATE_DEADLINE_MS).then((o) => (o === 'unknown' ? o : o !== false));
      const error = new RecordError(outcome, lost.cause, fate);
      batch.forEach((p) => p.reject(error));
    } finally {
      this.settling--;
    }
  }

  /**
   * One autocommit statement per batch, one round trip: the rebuild fence, the records, and a `write_batches` row
   * with the outcome, so that a batch whose answer is lost can be looked up.
   */
  private async commit(ops: RecordOp[]): Promise<RecordResult[]> {
    // Generations only grow: an operation decided under an older one than the batch's newest is stale already.
    const generation = ops.reduce((max, op) => (BigInt(op.generation) > BigInt(max) ? op.generation : max), ops[0]!.generation);
    const batchId = uuidv7();
    let client: pg.PoolClient;
    try {
      client = await checkOut(this.pool);
    } catch (err) {
      throw new RecordError(false, err);
    }
    let broken: Error | undefined;
    try {
      const { rows } = await client.query<Outcome>({
        // A named statement: each connection parses and plans this large statement once, not per batch.
        name: 'record_batch',
        text: RECORD_BATCH,
        values: [generation, batchId, ...batchValues(ops.filter((op) => op.generation === generation))],
      });
      return resultsOf(ops, generation, rows[0]!);
    } catch (err) {
      broken = err as Error;
      // An ERROR aborts the statement's transaction: nothing committed. Anything else (the connection died, a
      // timeout, a FATAL) may have struck before or after the commit: look the batch up.
      if ((err as { severity?: string }).severity === 'ERROR') throw new RecordError(false, err);
      throw new LostAnswer(err, processIdOf(client), batchId, ops, generation);
    } finally {
      // After any error the connection may be dead or mid-statement: destroy it rather than reuse it.
      client.release(broken);
    }
  }

  /**
   * The fate of a batch whose answer was lost, asked on another connection: first make sure its backend is gone
   * (its statement could still commit), then look for the batch's row.
   */
  private async lookUp(processId: number | null, batchId: string): Promise<Outcome | false | 'unknown'> {
    if (processId === null) return 'unknown';
    try {
      // Linux hands out process ids in sequence, so within minutes this id still names the batch's backend.
      const { rows: gone } = await this.pool.query<{ gone: boolean }>(
        'SELECT coalesce((SELECT pg_terminate_backend(pid, $2) FROM pg_stat_activity WHERE pid = $1), true) AS gone',
        [processId, TERMINATE_WAIT_MS],
      );
      if (!gone[0]?.gone) return 'unknown';
      const { rows } = await this.pool.query<Outcome>('SELECT fenced_in, created::text[], moved::text[] FROM write_batches WHERE id = $1', [
        batchId,
      ]);
      return rows[0] ?? false;
    } catch {
      return 'unknown';
    }
  }

  /** Looks up until PostgreSQL answers or the deadline passes, backing off between tries. */
  private async lookUpUntil(processId: number | null, batchId: string, deadline: number): Promise<Outcome | false | 'unknown'> {
    for (let wait = 100; ; wait = Math.min(2 * wait, 2_000)) {
      const outcome = await this.lookUp(processId, batchId);
      if (outcome !== 'unknown' || this.closed || Date.now() + wait > deadline) return outcome;
      await new Promise((resolve) => setTimeout(resolve, wait).unref());
    }
  }
}

/** The batch statement's answer did not arrive: it may or may not have committed. */
class LostAnswer {
  constructor(
    readonly cause: unknown,
    readonly processId: number | null,
    readonly batchId: string,
    readonly ops: RecordOp[],
    readonly generation: string,
  ) {}
}

/** What the batch statement returns, and what `write_batches` keeps of it. */
interface Outcome {
  /** The fence held: the batch's generation was PostgreSQL's, so its operations were applied (or refused). */
  fenced_in: boolean;
  created: string[] | null;
  moved: string[] | null;
}

/** How long a lookup waits for the lost batch's backend to exit. */
const TERMINATE_WAIT_MS = 5_000;
/** How long the writer keeps asking an unreachable PostgreSQL for a batch's fate (then reconciliation repairs). */
const FATE_DEADLINE_MS = 10 * 60_000;

/** pg keeps the backend's process id (from BackendKeyData) on the client; its typings do not declare it. */
const processIdOf = (client: pg.PoolClient) => (client as unknown as { processID: number | null }).processID;

/**
 * Per operation: stale if decided under another generation than PostgreSQL's, conflict if PostgreSQL refused it
 * (the idempotency key was taken, or the reservation was no longer pending), else recorded.
 */
function resultsOf(ops: RecordOp[], generation: string, outcome: Outcome): RecordResult[] {
  const created = new Set(outcome.created ?? []);
  const moved = new Set(outcome.moved ?? []);
  return ops.map((op) => {
    if (op.generation !== generation || !outcome.fenced_in) return 'stale';
    if (op.kind === 'reserve' && !created.has(op.reservation.id)) return 'conflict';
    if (op.kind === 'transition' && !moved.has(op.reservationId)) return 'conflict';
    return 'recorded';
  });
}

/**
 * A whole batch in one autocommit statement ($1 the generation it was decided under, $2 the batch id).
 *
 * The rebuild fence: `fence` share-locks the generation row only while it still holds the batch's generation, and
 * every write below is gated on it. A rebuild updates that row first (src/jobs/recovery.ts), so it waits for the
 * batches holding the lock; batches arriving meanwhile wait for the rebuild, then re-check the row, find the new
 * generation and write nothing (READ COMMITTED re-evaluates a locked row's condition against its newest version).
 *
 * A transition names the status it leaves (`from_status`, always 'pending') as a column, not a literal: with the
 * literal, the planner may answer "pending rows with these ids" from the sweeper's partial index of every pending
 * reservation (it did, with statistics older than a flash sale: 33,000 index entries read per batch); with a
 * column it looks each reservation up by primary key. That choice is made per batch, on the tables' current
 * size (plan_cache_mode, src/store/database.ts): a plan cached while they were small would scan them whole.
 *
 * Stock rows are updated in key order, so concurrent batches (on this node or others) never deadlock on them;
 * the ledger keeps every movement while the stock row takes their sum.
 */
const RECORD_BATCH = `
WITH fence AS (
  SELECT generation FROM state_generation WHERE generation = $1::bigint FOR SHARE
), idem AS (
  INSERT INTO idempotency_keys (scope, key, request_hash, reservation_id, status_code, response)
  SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::uuid[], $7::smallint[], $8::text[])
  WHERE EXISTS (SELECT FROM fence)
  ON CONFLICT DO NOTHING
  RETURNING reservation_id
), created AS (
  INSERT INTO reservations (id, status, reference, metadata, expires_at, created_at, updated_at)
  SELECT t.id, 'pending', t.reference, t.metadata, t.expires_at, t.created_at, t.created_at
  FROM unnest($6::uuid[], $9::text[], $10::jsonb[], $11::timestamptz[], $12::timestamptz[])
    AS t(id, reference, metadata, expires_at, created_at)
  WHERE t.id IN (SELECT reservation_id FROM idem)
  RETURNING id
), lines AS (
  INSERT INTO reservation_lines (reservation_id, line_no, item_id, location, quantity)
  SELECT l.id, l.n, l.item_id, l.location, l.quantity
  FROM unnest($13::uuid[], $14::smallint[], $15::text[], $16::text[], $17::int[]) AS l(id, n, item_id, location, quantity)
  WHERE l.id IN (SELECT id FROM created)
), moved AS (
  UPDATE reservations r SET status = t.status, updated_at = t.at
  FROM unnest($18::uuid[], $19::text[], $20::timestamptz[], $21::text[]) AS t(id, status, at, from_status)
  WHERE r.id = t.id AND r.status = t.from_status AND EXISTS (SELECT FROM fence)
  RETURNING r.id
), movements AS (
  SELECT m.item_id, m.location, m.kind, m.on_hand_delta, m.reserved_delta, m.reservation_id, m.reason
  FROM unnest($22::text[], $23::text[], $24::text[], $25::bigint[], $26::bigint[], $27::uuid[], $28::text[], $29::text[])
    AS m(item_id, location, kind, on_hand_delta, reserved_delta, reservation_id, reason, gate)
  WHERE (m.gate = 'stock' AND EXISTS (SELECT FROM fence))
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
INSERT INTO write_batches (id, fenced_in, created, moved)
SELECT $2::uuid, EXISTS (SELECT FROM fence), (SELECT array_agg(reservation_id) FROM idem), (SELECT array_agg(id) FROM moved)
RETURNING fenced_in, created::text[], moved::text[]`;

/** RECORD_BATCH's parameters from $3 on: the operations as column arrays. */
function batchValues(ops: RecordOp[]): unknown[] {
  const reserves = ops.filter((op) => op.kind === 'reserve');
  const transitions = ops
    .filter((op) => op.kind === 'transition')
    .sort((a, b) => (a.reservationId < b.reservationId ? -1 : a.reservationId > b.reservationId ? 1 : 0));
  const lines = reserves.flatMap((r) => r.reservation.lines.map((l, n) => ({ id: r.reservation.id, n, ...l })));
  const movements = ops.flatMap(movementsOf);
  return [
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
    transitions.map(() => 'pending'),
    movements.map((m) => m.itemId),
    movements.map((m) => m.location),
    movements.map((m) => m.kind),
    movements.map((m) => m.onHand),
    movements.map((m) => m.reserved),
    movements.map((m) => m.reservationId),
    movements.map((m) => m.reason),
    movements.map((m) => m.gate),
  ];
}

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
