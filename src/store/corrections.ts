import type pg from 'pg';
import type { ReservationStatus } from '../domain/schemas.js';
import { checkOut } from './database.js';

/**
 * What reconciliation asks PostgreSQL, and writes there, to heal Redis (src/jobs/reconcile.ts): the fate of stock
 * decisions by op id, the void that takes one back for good, and the fenced correction's transaction.
 */

type Db = pg.Pool | pg.PoolClient;

/** How a stock op id stands in the ledger: recorded (its change is in the stock row) or void (taken back for good). */
export type OpOutcome = 'recorded' | 'void';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The ledger's word on each of these op ids; an id it has no row for is left out (not recorded, yet). */
export async function findOpOutcomes(db: Db, opIds: readonly string[]): Promise<Map<string, OpOutcome>> {
  const ids = opIds.filter((id) => UUID.test(id));
  if (ids.length === 0) return new Map();
  const { rows } = await db.query<{ op_id: string; kind: string }>(
    'SELECT op_id::text, kind FROM stock_movements WHERE op_id = ANY($1::uuid[])',
    [ids],
  );
  return new Map(rows.map((r) => [r.op_id, r.kind === 'void' ? 'void' : 'recorded']));
}

/**
 * Takes a stock decision back for good: a 'void' ledger row under its op id, so that its own row can never be
 * inserted after (the batch statement skips an op id the ledger has, and answers it as not recorded). Resolves to
 * 'voided', or to the ledger's word if the op id was there first (a batch recording it that was still running is
 * waited for: a unique index check sees rows not yet committed).
 */
export async function voidStockOp(
  db: pg.Pool,
  op: { opId: string; itemId: string; location: string; reason: string },
): Promise<'voided' | OpOutcome> {
  const inserted = await db.query(
    `INSERT INTO stock_movements (item_id, location, kind, on_hand_delta, reserved_delta, reason, op_id)
     VALUES ($1, $2, 'void', 0, 0, $3, $4)
     ON CONFLICT (op_id) WHERE op_id IS NOT NULL DO NOTHING RETURNING id`,
    [op.itemId, op.location, op.reason, op.opId],
  );
  if (inserted.rowCount === 1) return 'voided';
  const outcome = (await findOpOutcomes(db, [op.opId])).get(op.opId);
  if (!outcome) throw new Error(`op ${op.opId}: the ledger refused a void for it, yet has no row`);
  return outcome;
}

/** Bounds of the correction's transaction: it holds a stock row that live batches may be waiting for. */
export interface HoldLimits {
  /** Waiting for the stock row (a batch, or the rebuild, holds it): give up rather than queue behind them. */
  lockTimeoutMs: number;
  statementTimeoutMs: number;
  /** A process that died holding the row frees it after this. */
  idleTimeoutMs: number;
}

/** Redis' figures of one location, as a correction reads and writes them. */
interface Figures {
  onHand: number;
  reserved: number;
  pending: number;
  safety: number;
  safetyPending: number;
}

export interface CorrectionRow {
  generation: string;
  before: Figures;
  after: Figures;
  details: Record<string, unknown>;
  reason: string;
}

/**
 * PostgreSQL's stock row of one (item, location), held FOR SHARE for as long as the transaction lasts: every batch
 * that changes on-hand, reserved or safety stock there updates this row, so none can commit until the transaction ends, and what
 * is read through this object stays PostgreSQL's word meanwhile. The generation row is held FOR SHARE too, as a
 * batch holds it: a rebuild waits for the transaction, and the transaction for a rebuild.
 */
export class HeldStockRow {
  constructor(
    private readonly client: pg.PoolClient,
    readonly itemId: string,
    readonly location: string,
    readonly generation: string,
    readonly onHand: number,
    readonly reserved: number,
    readonly safetyStock: number,
  ) {}

  opOutcomes(opIds: readonly string[]): Promise<Map<string, OpOutcome>> {
    return findOpOutcomes(this.client, opIds);
  }

  /** PostgreSQL's status and version of each of these reservations it has. */
  async statuses(reservationIds: readonly string[]): Promise<Map<string, { status: ReservationStatus; version: number }>> {
    const ids = reservationIds.filter((id) => UUID.test(id));
    if (ids.length === 0) return new Map();
    const { rows } = await this.client.query<{ id: string; status: ReservationStatus; version: number }>(
      'SELECT id::text, status, version FROM reservations WHERE id = ANY($1::uuid[])',
      [ids],
    );
    return new Map(rows.map((r) => [r.id, { status: r.status, version: r.version }]));
  }

  /** PostgreSQL's pending unexpired holds here. */
  async liveHolds(): Promise<{ reservationId: string; quantity: number; expiresAtMs: number; version: number }[]> {
    const { rows } = await this.client.query<{ id: string; quantity: number; expires_ms: number; version: number }>(
      `SELECT l.reservation_id::text AS id, l.quantity, (extract(epoch FROM r.expires_at) * 1000)::bigint AS expires_ms, r.version
       FROM reservation_lines l JOIN reservations r ON r.id = l.reservation_id
       WHERE l.item_id = $1 AND l.location = $2 AND r.status = 'pending' AND r.expires_at > now()`,
      [this.itemId, this.location],
    );
    return rows.map((r) => ({ reservationId: r.id, quantity: r.quantity, expiresAtMs: r.expires_ms, version: r.version }));
  }

  /** The audit row of a correction, in the same transaction. */
  async record(c: CorrectionRow): Promise<void> {
    await this.client.query(
      `INSERT INTO stock_corrections (item_id, location, generation, redis_on_hand_before, redis_reserved_before,
         redis_pending_before, redis_on_hand_after, redis_reserved_after, redis_pending_after, pg_on_hand, pg_reserved,
         details, reason, redis_safety_before, redis_safety_pending_before, redis_safety_after, redis_safety_pending_after,
         pg_safety_stock)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`,
      [
        this.itemId,
        this.location,
        c.generation,
        c.before.onHand,
        c.before.reserved,
        c.before.pending,
        c.after.onHand,
        c.after.reserved,
        c.after.pending,
        this.onHand,
        this.reserved,
        JSON.stringify(c.details),
        c.reason,
        c.before.safety,
        c.before.safetyPending,
        c.after.safety,
        c.after.safetyPending,
        this.safetyStock,
      ],
    );
  }
}

/**
 * Runs `work` with the stock row of (item, location) held (see HeldStockRow), in one transaction that is kept if
 * `work` resolves `keep: true` and rolled back otherwise or if it throws. A row PostgreSQL does not have yet is
 * created at zero first (there is nothing to hold otherwise; a batch creating it waits for the transaction), and
 * kept only with the transaction.
 */
export async function withStockRowHeld<T>(
  pool: pg.Pool,
  itemId: string,
  location: string,
  limits: HoldLimits,
  work: (row: HeldStockRow) => Promise<{ keep: boolean; result: T }>,
): Promise<T> {
  const client = await checkOut(pool);
  let broken: Error | undefined;
  try {
    await client.query(
      `BEGIN; SET LOCAL lock_timeout = ${ms(limits.lockTimeoutMs)}; SET LOCAL statement_timeout = ${ms(limits.statementTimeoutMs)};
       SET LOCAL idle_in_transaction_session_timeout = ${ms(limits.idleTimeoutMs)}`,
    );
    const gen = await client.query<{ generation: string }>('SELECT generation::text FROM state_generation FOR SHARE');
    const lock = () =>
      client.query<{ on_hand: number; reserved: number; safety_stock: number }>(
        'SELECT on_hand, reserved, safety_stock FROM stock WHERE item_id = $1 AND location = $2 FOR SHARE',
        [itemId, location],
      );
    let stock = await lock();
    if (stock.rowCount === 0) {
      await client.query(
        'INSERT INTO stock (item_id, location, on_hand, reserved) VALUES ($1, $2, 0, 0) ON CONFLICT (item_id, location) DO NOTHING',
        [itemId, location],
      );
      stock = await lock();
    }
    const row = stock.rows[0]!;
    const { keep, result } = await work(new HeldStockRow(client, itemId, location, gen.rows[0]!.generation, row.on_hand, row.reserved, row.safety_stock));
    await client.query(keep ? 'COMMIT' : 'ROLLBACK');
    return result;
  } catch (err) {
    broken = err as Error;
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    // A connection whose transaction failed may be mid-statement or dead: destroy it rather than reuse it.
    client.release(broken);
  }
}

/** A millisecond setting as PostgreSQL reads it (an integer: never interpolate anything else into SQL). */
const ms = (value: number): string => `'${Math.max(1, Math.floor(value))}ms'`;
