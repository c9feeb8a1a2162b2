import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReservationRecord } from '../../src/domain/reservation.js';
import { createMetrics } from '../../src/metrics.js';
import { createPool, migrate } from '../../src/store/database.js';
import { BatchWriter, RecordError, type RecordOp } from '../../src/store/writer.js';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres.js';

let database: TestDatabase;
let pool: pg.Pool;
const GEN = '0'; // a fresh database's generation

beforeAll(async () => {
  database = await createTestDatabase();
  await migrate(database.url, pino({ level: 'silent' }));
  pool = createPool(database.url, { max: 4, queryTimeoutMs: 5000 });
});
afterAll(async () => {
  await pool.end();
  await database.drop();
});

const stockOp = (itemId: string, onHandDelta: number, generation = GEN): RecordOp => ({
  kind: 'stock',
  generation,
  itemId,
  location: 'default',
  onHandDelta,
  movement: 'adjust',
  reason: null,
});

function reserveOp(itemId: string, key: string, quantity = 1): RecordOp & { kind: 'reserve' } {
  const now = new Date();
  const reservation: ReservationRecord = {
    id: randomUUID(),
    status: 'pending',
    reference: null,
    metadata: {},
    lines: [{ itemId, location: 'default', quantity }],
    expiresAt: new Date(now.getTime() + 60_000),
    createdAt: now,
    updatedAt: now,
    tenant: 'default',
  };
  return { kind: 'reserve', generation: GEN, reservation, idempotency: { scope: '_', key, requestHash: 'h', statusCode: 201, response: {} } };
}

async function stockRow(itemId: string) {
  const { rows } = await pool.query<{ on_hand: number; reserved: number }>(
    'SELECT on_hand, reserved FROM stock WHERE item_id = $1',
    [itemId],
  );
  return rows[0];
}

describe('BatchWriter (group commit)', () => {
  it('gathers concurrent operations into few transactions and sums a hot row once per batch', async () => {
    const metrics = createMetrics();
    const writer = new BatchWriter(pool, metrics, { maxBatch: 500, concurrency: 2, fateWaitMs: 0 });
    const item = `hot-${randomUUID()}`;
    const results = await Promise.all(Array.from({ length: 300 }, () => writer.submit(stockOp(item, 1))));
    expect(results.every((r) => r === 'recorded')).toBe(true);
    expect(await stockRow(item)).toEqual({ on_hand: 300, reserved: 0 });
    const batches = (await metrics.pgBatchSize.get()).values.find((v) => v.metricName === 'irs_pg_batch_operations_count');
    expect(batches?.value).toBeLessThan(300);
    const { rows } = await pool.query('SELECT count(*)::int AS n FROM stock_movements WHERE item_id = $1', [item]);
    expect(rows[0].n).toBe(300); // the ledger keeps every movement
  });

  it('answers stale, and applies nothing, for a decision made under another generation', async () => {
    const writer = new BatchWriter(pool, createMetrics(), { maxBatch: 10, concurrency: 1, fateWaitMs: 0 });
    const item = `stale-${randomUUID()}`;
    expect(await writer.submit(stockOp(item, 5, '999'))).toBe('stale');
    expect(await stockRow(item)).toBeUndefined();
  });

  it('lets one idempotency key create one reservation; the loser is a conflict that changes nothing', async () => {
    const writer = new BatchWriter(pool, createMetrics(), { maxBatch: 10, concurrency: 1, fateWaitMs: 0 });
    const item = `idem-${randomUUID()}`;
    await writer.submit(stockOp(item, 10));
    const key = randomUUID();
    const [a, b] = await Promise.all([writer.submit(reserveOp(item, key, 2)), writer.submit(reserveOp(item, key, 3))]);
    expect([a, b].sort()).toEqual(['conflict', 'recorded']);
    expect(await stockRow(item)).toEqual({ on_hand: 10, reserved: a === 'recorded' ? 2 : 3 });
    const { rows } = await pool.query(
      `SELECT count(*)::int AS n FROM reservation_lines WHERE item_id = $1`,
      [item],
    );
    expect(rows[0].n).toBe(1);
  });

  it('records a transition only from pending', async () => {
    const writer = new BatchWriter(pool, createMetrics(), { maxBatch: 10, concurrency: 1, fateWaitMs: 0 });
    const item = `tr-${randomUUID()}`;
    await writer.submit(stockOp(item, 10));
    const op = reserveOp(item, randomUUID(), 4);
    await writer.submit(op);
    const transition = (to: 'confirmed' | 'released'): RecordOp => ({
      kind: 'transition',
      generation: GEN,
      reservationId: op.reservation.id,
      to,
      at: new Date(),
      lines: op.reservation.lines,
    });
    expect(await writer.submit(transition('confirmed'))).toBe('recorded');
    expect(await writer.submit(transition('released'))).toBe('conflict');
    expect(await stockRow(item)).toEqual({ on_hand: 6, reserved: 0 });
  });

  it('fails exactly the operations of a failed batch, and nothing of them is applied', async () => {
    const writer = new BatchWriter(pool, createMetrics(), { maxBatch: 10, concurrency: 1, fateWaitMs: 0 });
    const item = `fail-${randomUUID()}`;
    await writer.submit(stockOp(item, 10));
    // Same tick, same batch: a line of quantity 0 violates a CHECK constraint and aborts the transaction.
    const good = writer.submit(reserveOp(item, randomUUID(), 1));
    const bad = writer.submit(reserveOp(item, randomUUID(), 0));
    const [g, b] = await Promise.allSettled([good, bad]);
    expect(g.status).toBe('rejected');
    expect(b.status).toBe('rejected');
    expect((b as PromiseRejectedResult).reason).toBeInstanceOf(RecordError);
    expect(((b as PromiseRejectedResult).reason as RecordError).committed).toBe(false);
    expect(await stockRow(item)).toEqual({ on_hand: 10, reserved: 0 });
    // The next batch is unaffected.
    expect(await writer.submit(reserveOp(item, randomUUID(), 1))).toBe('recorded');
    expect(await stockRow(item)).toEqual({ on_hand: 10, reserved: 1 });
  });

  /**
   * A pool whose batch statement loses its answer: after running it (`'after'`) or before sending it; and whose
   * other queries (the writer's lookups) fail the first `unreachableLookups` times.
   */
  function lossyPool(when: 'after' | 'before', unreachableLookups = 0): pg.Pool {
    let lookups = 0;
    return {
      connect: async () => {
        const client = await pool.connect();
        const query = client.query.bind(client) as (...args: unknown[]) => Promise<unknown>;
        (client as unknown as { query: (...args: unknown[]) => Promise<unknown> }).query = async (...args: unknown[]) => {
          const batch = (args[0] as { name?: string }).name === 'record_batch';
          if (batch && when === 'before') throw new Error('connection lost');
          const result = await query(...args);
          if (batch) throw new Error('connection lost');
          return result;
        };
        return client;
      },
      query: async (...args: unknown[]) => {
        if (lookups++ < unreachableLookups) throw new Error('PostgreSQL unreachable');
        return (pool.query as (...a: unknown[]) => Promise<unknown>)(...args);
      },
    } as unknown as pg.Pool;
  }

  it('answers a batch whose answer was lost after it committed as recorded, with its exact results', async () => {
    const writer = new BatchWriter(lossyPool('after'), createMetrics(), { maxBatch: 10, concurrency: 1, fateWaitMs: 0 });
    const item = `lost-reply-${randomUUID()}`;
    const key = randomUUID();
    const [stock, a, b] = await Promise.all([
      writer.submit(stockOp(item, 7)),
      writer.submit(reserveOp(item, key, 2)),
      writer.submit(reserveOp(item, key, 3)),
    ]);
    expect(stock).toBe('recorded');
    expect([a, b].sort()).toEqual(['conflict', 'recorded']);
    expect(await stockRow(item)).toEqual({ on_hand: 7, reserved: a === 'recorded' ? 2 : 3 });
  });

  it('fails, as not committed, a batch whose connection was lost before it ran', async () => {
    const writer = new BatchWriter(lossyPool('before'), createMetrics(), { maxBatch: 10, concurrency: 1, fateWaitMs: 0 });
    const item = `lost-early-${randomUUID()}`;
    const error = await writer.submit(stockOp(item, 7)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RecordError);
    expect((error as RecordError).committed).toBe(false);
    expect(await stockRow(item)).toBeUndefined();
  });

  it('answers unknown while PostgreSQL cannot be asked, and settles the fate once it can: committed', async () => {
    const writer = new BatchWriter(lossyPool('after', 1), createMetrics(), { maxBatch: 10, concurrency: 1, fateWaitMs: 0 });
    const item = `unknown-committed-${randomUUID()}`;
    const error = await writer.submit(stockOp(item, 7)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RecordError);
    expect((error as RecordError).committed).toBe('unknown');
    expect(await (error as RecordError).fate).toBe(true);
    expect(await stockRow(item)).toEqual({ on_hand: 7, reserved: 0 });
  });

  it('answers unknown while PostgreSQL cannot be asked, and settles the fate once it can: not committed', async () => {
    const writer = new BatchWriter(lossyPool('before', 2), createMetrics(), { maxBatch: 10, concurrency: 1, fateWaitMs: 0 });
    const item = `unknown-lost-${randomUUID()}`;
    const error = await writer.submit(stockOp(item, 7)).catch((e: unknown) => e);
    expect((error as RecordError).committed).toBe('unknown');
    expect(await (error as RecordError).fate).toBe(false);
    expect(await stockRow(item)).toBeUndefined();
  });

  it('waits for PostgreSQL to answer, within WRITER_FATE_WAIT_MS, rather than answer 503 for a change that committed', async () => {
    const writer = new BatchWriter(lossyPool('after', 2), createMetrics(), { maxBatch: 10, concurrency: 1, fateWaitMs: 5_000 });
    const item = `waited-${randomUUID()}`;
    expect(await writer.submit(stockOp(item, 7))).toBe('recorded');
    expect(await stockRow(item)).toEqual({ on_hand: 7, reserved: 0 });
  });

  it('ends the lookup of a batch still running on the server before deciding it did not commit', async () => {
    // The batch blocks on a row lock; its connection "dies" (the client gives up); the lookup must terminate the
    // backend, or the batch would commit after being reported as not committed once the lock is released.
    const item = `running-${randomUUID()}`;
    await pool.query("INSERT INTO stock (item_id, location, on_hand) VALUES ($1, 'default', 1)", [item]);
    const blocker = await pool.connect();
    const impatient = {
      connect: async () => {
        const client = await pool.connect();
        const query = client.query.bind(client) as (...args: unknown[]) => Promise<unknown>;
        (client as unknown as { query: (...args: unknown[]) => Promise<unknown> }).query = (...args: unknown[]) => {
          const running = query(...args);
          running.catch(() => {});
          if ((args[0] as { name?: string }).name !== 'record_batch') return running;
          return waitForLockWait().then(() => Promise.reject(new Error('connection lost')));
        };
        return client;
      },
      query: pool.query.bind(pool),
    } as unknown as pg.Pool;
    const writer = new BatchWriter(impatient, createMetrics(), { maxBatch: 10, concurrency: 1, fateWaitMs: 0 });
    try {
      await blocker.query('BEGIN');
      await blocker.query('SELECT 1 FROM stock WHERE item_id = $1 FOR UPDATE', [item]);
      const error = await writer.submit(stockOp(item, 5)).catch((e: unknown) => e);
      expect((error as RecordError).committed).toBe(false);
    } finally {
      await blocker.query('COMMIT');
      blocker.release();
    }
    await new Promise((r) => setTimeout(r, 200));
    expect(await stockRow(item)).toEqual({ on_hand: 1, reserved: 0 });
  });

  it('fences out a batch that waited for a rebuild: it re-reads the generation after the rebuild commits', async () => {
    const writer = new BatchWriter(pool, createMetrics(), { maxBatch: 10, concurrency: 1, fateWaitMs: 0 });
    const item = `fenced-${randomUUID()}`;
    const { rows } = await pool.query<{ generation: string }>('SELECT generation::text AS generation FROM state_generation');
    const before = rows[0]!.generation;
    const rebuild = await pool.connect();
    try {
      await rebuild.query('BEGIN');
      await rebuild.query('UPDATE state_generation SET generation = generation + 1');
      const pending = writer.submit(stockOp(item, 5, before));
      await waitForLockWait();
      await rebuild.query('COMMIT');
      expect(await pending).toBe('stale');
    } finally {
      rebuild.release();
    }
    expect(await stockRow(item)).toBeUndefined();
    // A batch decided under the new generation is recorded.
    expect(await writer.submit(stockOp(item, 5, String(BigInt(before) + 1n)))).toBe('recorded');
  });

  it('makes a rebuild wait for a batch holding the fence, so the rebuild reads what the batch wrote', async () => {
    const writer = new BatchWriter(pool, createMetrics(), { maxBatch: 10, concurrency: 1, fateWaitMs: 0 });
    const item = `held-${randomUUID()}`;
    const { rows } = await pool.query<{ generation: string }>('SELECT generation::text AS generation FROM state_generation');
    const generation = rows[0]!.generation;
    // Hold the batch inside its statement: it takes the fence, then waits for the stock row this transaction holds.
    await pool.query("INSERT INTO stock (item_id, location, on_hand) VALUES ($1, 'default', 1)", [item]);
    const blocker = await pool.connect();
    const rebuild = await pool.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query('SELECT 1 FROM stock WHERE item_id = $1 FOR UPDATE', [item]);
      const pending = writer.submit(stockOp(item, 5, generation));
      await waitForLockWait();
      await rebuild.query('BEGIN');
      const bump = rebuild.query(
        `WITH g AS (UPDATE state_generation SET generation = generation + 1 RETURNING 1) SELECT 1 FROM g`,
      );
      await waitForLockWait(2);
      await blocker.query('COMMIT');
      expect(await pending).toBe('recorded');
      await bump;
      // The rebuild's next statement sees the batch.
      const seen = await rebuild.query<{ on_hand: number }>('SELECT on_hand FROM stock WHERE item_id = $1', [item]);
      expect(seen.rows[0]!.on_hand).toBe(6);
      await rebuild.query('ROLLBACK');
    } finally {
      blocker.release();
      rebuild.release();
    }
  });
});

/** Waits until `n` sessions of this database wait for a lock. */
async function waitForLockWait(n = 1): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const { rows } = await pool.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
    );
    if (rows[0]!.n >= n) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`no ${n} session(s) waiting for a lock`);
}

describe('the batch statement as the tables grow', () => {
  /**
   * Rows read from reservations (whole-table scans, and the partial index of pending reservations) by 10
   * transitions recorded after 20,000 reservations arrived at once, on a database whose first batches ran (and
   * whose plans were made) while it was nearly empty. One backend, so one plan cache.
   */
  async function readsAfterGrowth(options: { analyzeBeforeSale: boolean }): Promise<{ seq: number; partial: number }> {
    const own = await createTestDatabase();
    await migrate(own.url, pino({ level: 'silent' }));
    const single = createPool(own.url, { max: 1, queryTimeoutMs: 5000 });
    try {
      const writer = new BatchWriter(single, createMetrics(), { maxBatch: 10, concurrency: 1, fateWaitMs: 0 });
      const item = `grow-${randomUUID()}`;
      await writer.submit(stockOp(item, 1_000_000));
      const settle = async (rounds: number) => {
        for (let i = 0; i < rounds; i++) {
          const op = reserveOp(item, randomUUID());
          expect(await writer.submit(op)).toBe('recorded');
          const { id, lines } = op.reservation;
          expect(await writer.submit({ kind: 'transition', generation: GEN, reservationId: id, to: 'released', at: new Date(), lines })).toBe('recorded');
        }
      };
      await settle(10); // enough executions for PostgreSQL to settle on a cached plan
      if (options.analyzeBeforeSale) await single.query('ANALYZE reservations'); // statistics: nothing pending
      await single.query(
        `INSERT INTO reservations (id, status, expires_at, created_at, updated_at)
         SELECT gen_random_uuid(), 'pending', now() + interval '1 hour', now(), now() FROM generate_series(1, 20000)`,
      );
      const reads = async () => {
        const { rows } = await single.query<{ seq: string; partial: string; updated: string }>(
          `SELECT t.seq_tup_read AS seq, i.idx_tup_read AS partial, t.n_tup_upd AS updated
           FROM pg_stat_user_tables t
           JOIN pg_stat_user_indexes i ON i.relid = t.relid AND i.indexrelname = 'reservations_pending_expiry'
           WHERE t.relname = 'reservations'`,
        );
        return { seq: Number(rows[0]!.seq), partial: Number(rows[0]!.partial), updated: Number(rows[0]!.updated) };
      };
      const flushed = async (updated: number) => {
        // Backends report their statistics within seconds of going idle.
        for (const deadline = Date.now() + 20_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 250))) {
          const now = await reads();
          if (now.updated >= updated) return now;
        }
        throw new Error('statistics never caught up');
      };
      const before = await flushed(10);
      await settle(10);
      const after = await flushed(before.updated + 10);
      return { seq: after.seq - before.seq, partial: after.partial - before.partial };
    } finally {
      await single.end();
      await own.drop();
    }
  }

  // Any of the 10 transitions scanning the table, or the partial index, reads 20,000 rows or more.
  it('looks transitions up by primary key though its plan was first made on an empty table', async () => {
    const reads = await readsAfterGrowth({ analyzeBeforeSale: false });
    expect(reads.seq).toBeLessThan(20_000);
    expect(reads.partial).toBeLessThan(20_000);
  }, 60_000);

  it('looks transitions up by primary key though the statistics say nothing is pending', async () => {
    const reads = await readsAfterGrowth({ analyzeBeforeSale: true });
    expect(reads.seq).toBeLessThan(20_000);
    expect(reads.partial).toBeLessThan(20_000);
  }, 60_000);
});
