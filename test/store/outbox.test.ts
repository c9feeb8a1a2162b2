import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toDocument, type ReservationRecord } from '../../src/domain/reservation.js';
import { createMetrics } from '../../src/metrics.js';
import { createPool, migrate } from '../../src/store/database.js';
import { BatchWriter, RecordError, RecordRejected, type RecordOp } from '../../src/store/writer.js';
import { documentAfter } from '../helpers/documents.js';
import { eventsOf, expectOutboxConsistent, figures, typesOf } from '../helpers/events.js';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres.js';
import { mulberry32, seedFromEnv } from '../helpers/random.js';

// The outbox half of the batch statement (src/store/batch-statement.ts), through the writer, on a database of this
// file's own: which events each recorded operation appends, how an item's are numbered, and that nothing PostgreSQL
// did not record appends any.

let database: TestDatabase;
let pool: pg.Pool;
const GEN = '0';

beforeAll(async () => {
  database = await createTestDatabase();
  await migrate(database.url, pino({ level: 'silent' }));
  pool = createPool(database.url, { max: 8, queryTimeoutMs: 5000 });
});
afterAll(async () => {
  await pool.end();
  await database.drop();
});

function writer(
  options: { concurrency?: number; metrics?: ReturnType<typeof createMetrics>; pool?: pg.Pool; appendEvents?: boolean } = {},
): BatchWriter {
  return new BatchWriter(options.pool ?? pool, options.metrics ?? createMetrics(), {
    maxBatch: 500,
    concurrency: options.concurrency ?? 1,
    fateWaitMs: 0,
    ...(options.appendEvents === undefined ? {} : { appendEvents: options.appendEvents }),
  });
}

const stockOp = (itemId: string, onHandDelta: number, options: { location?: string; safetyDelta?: number; generation?: string } = {}): RecordOp => ({
  kind: 'stock',
  generation: options.generation ?? GEN,
  itemId,
  location: options.location ?? 'default',
  onHandDelta,
  safetyDelta: options.safetyDelta ?? 0,
  movement: 'adjust',
  reason: null,
  opId: randomUUID(),
});

function reserveOp(lines: { itemId: string; location?: string; quantity: number }[], generation = GEN): RecordOp & { kind: 'reserve' } {
  const now = new Date();
  const reservation: ReservationRecord = {
    id: randomUUID(),
    status: 'pending',
    reference: 'order-1',
    metadata: { channel: 'web' },
    priority: 'normal',
    lines: lines.map((l) => ({ itemId: l.itemId, location: l.location ?? 'default', quantity: l.quantity })),
    expiresAt: new Date(now.getTime() + 60_000),
    createdAt: now,
    updatedAt: now,
    tenant: 'default',
    allocation: null,
    version: 1,
  };
  const response = toDocument(reservation, now);
  return { kind: 'reserve', generation, reservation, idempotency: { scope: '_', key: randomUUID(), requestHash: 'h', statusCode: 201, response } };
}

function transitionOp(r: ReservationRecord, to: 'confirmed' | 'released' | 'expired', version: number, generation = GEN): RecordOp {
  const at = new Date();
  const document = toDocument({ ...r, status: to, updatedAt: at, version }, at);
  return { kind: 'transition', generation, reservationId: r.id, to, at, lines: r.lines, document };
}

const newItem = (label: string) => `${label}-${randomUUID()}`;

async function itemSequence(item: string): Promise<number | undefined> {
  const { rows } = await pool.query<{ sequence: number }>('SELECT sequence FROM event_item_sequences WHERE item_id = $1', [item]);
  return rows[0]?.sequence;
}


describe('the events a batch appends', () => {
  it('a reservation: created with the document it answered, then its transition, numbered by the version PostgreSQL recorded', async () => {
    const w = writer();
    const item = newItem('res');
    await w.submit(stockOp(item, 10));
    const op = reserveOp([{ itemId: item, quantity: 3 }]);
    expect(await w.submit(op)).toBe('recorded');
    // The document carries a version Redis decided; the event says PostgreSQL's.
    const confirm = transitionOp(op.reservation, 'confirmed', 7) as RecordOp & { kind: 'transition' };
    expect(await w.submit(confirm)).toBe('recorded');
    const events = await eventsOf(pool, op.reservation.id);
    expect(events.map((e) => [e.sequence, e.type])).toEqual([
      [1, 'inventory.reservation.created'],
      [2, 'inventory.reservation.confirmed'],
    ]);
    expect(events[0]!.data).toEqual(op.idempotency.response);
    expect(events[0]!.time).toEqual(op.reservation.createdAt);
    expect(events[1]!.data).toEqual({ ...confirm.document, version: 2 });
    expect(events[1]!.time).toEqual(confirm.at);
    // Holds change `reserved` alone: no stock.changed for them; the confirm sold 3: one.
    expect(await typesOf(pool, item)).toEqual(['stock.changed', 'stock.changed']);
    expect((await eventsOf(pool, item))[1]!.data).toEqual(figures(item, 'default', 7, 0));
  });

  it("an item's events in one batch: by location, stock.changed before availability, numbered on from the last", async () => {
    const w = writer();
    const item = newItem('locations');
    expect(await w.submit(stockOp(item, 2, { location: 'wh-b' }))).toBe('recorded');
    expect(await itemSequence(item)).toBe(1);
    // One batch: wh-c and wh-a are new (changed, never "restored"), wh-b's last 2 units are held (depleted).
    const ops = [stockOp(item, 5, { location: 'wh-c' }), reserveOp([{ itemId: item, location: 'wh-b', quantity: 2 }]), stockOp(item, 1, { location: 'wh-a' })];
    const metrics = createMetrics();
    const batch = writer({ metrics });
    expect(await Promise.all(ops.map((op) => batch.submit(op)))).toEqual(['recorded', 'recorded', 'recorded']);
    expect((await metrics.pgBatchSize.get()).values.find((v) => v.metricName === 'irs_pg_batch_operations_count')?.value).toBe(1);
    const events = await eventsOf(pool, item);
    expect(events.map((e) => [e.sequence, e.type, e.data.location])).toEqual([
      [1, 'inventory.stock.changed', 'wh-b'],
      [2, 'inventory.stock.changed', 'wh-a'],
      [3, 'inventory.availability.depleted', 'wh-b'],
      [4, 'inventory.stock.changed', 'wh-c'],
    ]);
    expect(events.map((e) => e.data)).toEqual([
      figures(item, 'wh-b', 2, 0),
      figures(item, 'wh-a', 1, 0),
      figures(item, 'wh-b', 2, 2),
      figures(item, 'wh-c', 5, 0),
    ]);
    // Inserted in sequence order: the sealer's order (seq) keeps it.
    expect(events.map((e) => e.seq)).toEqual([...events.map((e) => e.seq)].sort((a, b) => a - b));
    expect(await itemSequence(item)).toBe(4);
  });

  it('availability: depleted when it reaches 0, restored when it leaves 0, safety stock included; nothing when it stays', async () => {
    const w = writer();
    const item = newItem('availability');
    await w.submit(stockOp(item, 4));
    const a = reserveOp([{ itemId: item, quantity: 4 }]);
    await w.submit(a); // 4 → 0
    await w.submit(stockOp(item, 0, { safetyDelta: 2 })); // safety on an empty location: changed, still 0
    await w.submit(transitionOp(a.reservation, 'released', 2)); // 0 → 2 (4 − 2 safety)
    await w.submit(stockOp(item, -1)); // 2 → 1
    await w.submit(stockOp(item, 0, { safetyDelta: 1 })); // 1 → 0
    expect(await typesOf(pool, item)).toEqual([
      'stock.changed',
      'availability.depleted',
      'stock.changed',
      'availability.restored',
      'stock.changed',
      'stock.changed',
      'availability.depleted',
    ]);
    const events = await eventsOf(pool, item);
    expect(events[3]!.data).toEqual(figures(item, 'default', 4, 0, 2));
    expect(events.at(-1)!.data).toEqual(figures(item, 'default', 3, 0, 3));
  });

  it('counts what it appended per type (irs_events_appended_total)', async () => {
    const metrics = createMetrics();
    const w = writer({ metrics });
    const item = newItem('metric');
    await w.submit(stockOp(item, 1));
    const r = reserveOp([{ itemId: item, quantity: 1 }]);
    await w.submit(r);
    await w.submit(transitionOp(r.reservation, 'released', 2));
    const counts = Object.fromEntries((await metrics.eventsAppended.get()).values.map((v) => [v.labels.type, v.value]));
    expect(counts).toEqual({
      'inventory.stock.changed': 1,
      'inventory.reservation.created': 1,
      'inventory.availability.depleted': 1,
      'inventory.reservation.released': 1,
      'inventory.availability.restored': 1,
    });
  });
});

describe('the sealer queue', () => {
  it('every event a batch appends is queued for the sealer (unsealed_events), and nothing else is', async () => {
    const w = writer();
    const item = newItem('queued');
    const r = reserveOp([{ itemId: item, quantity: 1 }]);
    await w.submit(stockOp(item, 1));
    await w.submit(r); // reservation.created, availability.depleted
    await w.submit(transitionOp(r.reservation, 'released', 2)); // reservation.released, availability.restored
    // Nothing seals here: every event this file's batches appended is still queued, and the queue holds only events.
    const { rows } = await pool.query<{ events: number; queued: number; unqueued: number }>(
      `SELECT (SELECT count(*)::int FROM events) AS events, (SELECT count(*)::int FROM unsealed_events) AS queued,
              (SELECT count(*)::int FROM events e WHERE NOT EXISTS (SELECT FROM unsealed_events u WHERE u.seq = e.seq)) AS unqueued`,
    );
    expect(rows[0]!.events).toBeGreaterThanOrEqual(5);
    expect(rows[0]).toEqual({ events: rows[0]!.events, queued: rows[0]!.events, unqueued: 0 });
  });
});

describe('nothing PostgreSQL did not record appends an event', () => {
  it('a stale batch (decided under another generation): no event, no item sequence', async () => {
    const w = writer();
    const item = newItem('stale');
    await w.submit(stockOp(item, 10));
    const r = reserveOp([{ itemId: item, quantity: 1 }]);
    await w.submit(r);
    const before = await pool.query('SELECT count(*)::int AS n FROM events');
    const fresh = newItem('stale-new');
    const ops = [
      stockOp(item, 5, { generation: '99' }),
      stockOp(fresh, 5, { generation: '99' }),
      reserveOp([{ itemId: item, quantity: 1 }], '99'),
      transitionOp(r.reservation, 'confirmed', 2, '99'),
    ];
    expect(await Promise.all(ops.map((op) => w.submit(op)))).toEqual(['stale', 'stale', 'stale', 'stale']);
    expect((await pool.query('SELECT count(*)::int AS n FROM events')).rows[0].n).toBe(before.rows[0].n);
    expect((await pool.query('SELECT count(*)::int AS n FROM unsealed_events')).rows[0].n).toBe(before.rows[0].n);
    expect(await itemSequence(fresh)).toBeUndefined();
  });

  it('a refused operation: a transition of a reservation no longer pending, a key already taken, a voided stock change', async () => {
    const w = writer();
    const item = newItem('refused');
    await w.submit(stockOp(item, 10));
    const r = reserveOp([{ itemId: item, quantity: 1 }]);
    await w.submit(r);
    await w.submit(transitionOp(r.reservation, 'released', 2));
    const itemEvents = await typesOf(pool, item);
    expect(await w.submit(transitionOp(r.reservation, 'confirmed', 3))).toBe('conflict');
    expect(await w.submit(transitionOp(r.reservation, 'expired', 3))).toBe('conflict');
    const twin = reserveOp([{ itemId: item, quantity: 2 }]);
    twin.idempotency = { ...twin.idempotency, key: r.idempotency.key };
    expect(await w.submit(twin)).toBe('conflict');
    const voided = stockOp(item, 5) as RecordOp & { kind: 'stock' };
    await pool.query(
      "INSERT INTO stock_movements (item_id, location, kind, on_hand_delta, reserved_delta, op_id) VALUES ($1, 'default', 'void', 0, 0, $2)",
      [item, voided.opId],
    );
    expect(await w.submit(voided)).toBe('conflict');
    expect(await typesOf(pool, r.reservation.id)).toEqual(['reservation.created', 'reservation.released']);
    expect(await eventsOf(pool, twin.reservation.id)).toEqual([]);
    expect(await typesOf(pool, item)).toEqual(itemEvents);
  });

  it('a batch that fails as a whole (a statement timeout): none of its operations appends anything', async () => {
    const strict = new pg.Pool({ connectionString: database.url, max: 2, statement_timeout: 300 });
    try {
      const w = writer({ pool: strict });
      const item = newItem('failed');
      const other = newItem('failed-other');
      await writer().submit(stockOp(item, 10));
      await writer().submit(stockOp(other, 10));
      const blocker = await pool.connect();
      let settled: PromiseSettledResult<unknown>[];
      try {
        await blocker.query('BEGIN');
        await blocker.query('SELECT 1 FROM stock WHERE item_id = $1 FOR UPDATE', [item]);
        settled = await Promise.allSettled([w.submit(reserveOp([{ itemId: other, quantity: 10 }])), w.submit(stockOp(item, 5)), w.submit(stockOp(other, -3))]);
      } finally {
        await blocker.query('COMMIT');
        blocker.release();
      }
      for (const s of settled) expect((s as PromiseRejectedResult).reason).toBeInstanceOf(RecordError);
      expect(await typesOf(pool, item)).toEqual(['stock.changed']);
      expect(await typesOf(pool, other)).toEqual(['stock.changed']);
      expect(await itemSequence(other)).toBe(1);
    } finally {
      await strict.end();
    }
  });

  it('an operation split out of its batch for its own values: the others append theirs, it none', async () => {
    const w = writer();
    const item = newItem('split');
    await w.submit(stockOp(item, 10));
    const bad = reserveOp([{ itemId: item, quantity: 1 }]);
    bad.reservation.reference = 'order\u00001'; // PostgreSQL's text cannot hold a NUL (22021)
    const good = [reserveOp([{ itemId: item, quantity: 2 }]), reserveOp([{ itemId: item, quantity: 3 }])];
    const settled = await Promise.allSettled([good[0]!, bad, good[1]!, stockOp(item, 1)].map((op) => w.submit(op)));
    expect(settled.map((s) => (s.status === 'fulfilled' ? s.value : s.reason instanceof RecordRejected))).toEqual(['recorded', true, 'recorded', 'recorded']);
    expect(await eventsOf(pool, bad.reservation.id)).toEqual([]);
    for (const g of good) expect(await typesOf(pool, g.reservation.id)).toEqual(['reservation.created']);
    expect(await typesOf(pool, item)).toEqual(['stock.changed', 'stock.changed']);
    await expectOutboxConsistent(pool);
  });
});

describe('under concurrency', () => {
  it('concurrent batches touching the same items in any order: no deadlock, every subject numbered 1, 2, 3… without a gap', async () => {
    const items = Array.from({ length: 6 }, (_, i) => newItem(`hot${i}`));
    const locations = ['wh-a', 'wh-b', 'wh-c'];
    const seed = seedFromEnv();
    const rng = mulberry32(seed);
    const random = () => rng.next();
    const pick = <T>(xs: readonly T[]) => rng.pick(xs);
    const metrics = createMetrics();
    // Two nodes' writers, two batches in flight each.
    const writers = [writer({ concurrency: 2, metrics }), writer({ concurrency: 2, metrics })];
    for (const item of items) for (const location of locations) await writers[0]!.submit(stockOp(item, 50, { location }));
    const deadlocks = async () =>
      (await pool.query<{ n: number }>('SELECT deadlocks::int AS n FROM pg_stat_database WHERE datname = current_database()')).rows[0]!.n;
    const deadlocksBefore = await deadlocks();

    const reserved: RecordOp[] = [];
    const rounds = Array.from({ length: 12 }, async () => {
      const ops: RecordOp[] = [];
      for (let i = 0; i < 40; i++) {
        const kind = random();
        if (kind < 0.5) {
          const lines = [...new Set(Array.from({ length: 1 + Math.floor(random() * 3) }, () => `${pick(items)}@${pick(locations)}`))].map((pair) => {
            const [itemId, location] = pair.split('@') as [string, string];
            return { itemId, location, quantity: 1 };
          });
          const op = reserveOp(lines);
          reserved.push(op);
          ops.push(op);
        } else {
          ops.push(stockOp(pick(items), Math.floor(random() * 7) - 3 || 1, { location: pick(locations) }));
        }
      }
      const w = pick(writers);
      const results = await Promise.all(ops.map((op) => w.submit(op)));
      expect(results.every((r) => r === 'recorded'), `seed ${seed}`).toBe(true);
      // Settle half of what this round reserved, in other batches.
      const settles = ops
        .filter((op): op is RecordOp & { kind: 'reserve' } => op.kind === 'reserve' && random() < 0.5)
        .map((op) => pick(writers).submit(transitionOp(op.reservation, random() < 0.5 ? 'confirmed' : 'released', 2)));
      expect(await Promise.all(settles)).toEqual(settles.map(() => 'recorded'));
    });
    await Promise.all(rounds);
    expect(await deadlocks(), `seed ${seed}`).toBe(deadlocksBefore);
    expect((await metrics.pgBatchFailures.get()).values[0]?.value ?? 0).toBe(0);
    await expectOutboxConsistent(pool);
    // Each location's last event says PostgreSQL's on-hand (every change of it appends a stock.changed).
    const { rows } = await pool.query<{ item_id: string; location: string; on_hand: number }>(
      'SELECT item_id, location, on_hand FROM stock WHERE item_id = ANY($1)',
      [items],
    );
    for (const row of rows) {
      const last = (await eventsOf(pool, row.item_id)).filter((e) => e.data.location === row.location).at(-1)!;
      expect(last.data.onHand, `${row.item_id}@${row.location}`).toBe(row.on_hand);
    }
  });
});

describe("the benchmark's comparison without the outbox (appendEvents: false)", () => {
  it('records exactly what the statement with events records, and appends no event', async () => {
    // The same operations, on an item of each writer's own: everything but the events must come out the same.
    const record = async (w: BatchWriter, item: string) => {
      await w.submit(stockOp(item, 10));
      const kept = reserveOp([{ itemId: item, quantity: 2 }]);
      const sold = reserveOp([{ itemId: item, quantity: 3 }]);
      const returned = reserveOp([{ itemId: item, quantity: 1 }]);
      expect(await Promise.all([kept, sold, returned].map((op) => w.submit(op)))).toEqual(['recorded', 'recorded', 'recorded']);
      const at = new Date();
      const extend: RecordOp = {
        kind: 'extend',
        generation: GEN,
        reservationId: kept.reservation.id,
        expiresAt: new Date(at.getTime() + 120_000),
        at,
        version: 2,
        document: toDocument({ ...kept.reservation, version: 2, updatedAt: at }, at),
      };
      const settles = [transitionOp(sold.reservation, 'confirmed', 2), transitionOp(returned.reservation, 'released', 2), extend];
      expect(await Promise.all(settles.map((op) => w.submit(op)))).toEqual(['recorded', 'recorded', 'recorded']);
      const ids = [kept, sold, returned].map((op) => op.reservation.id);
      const { rows: reservations } = await pool.query(
        `SELECT status, version, expires_at > now() + interval '90 s' AS extended FROM reservations
         WHERE id = ANY($1::uuid[]) ORDER BY array_position($1::uuid[], id)`,
        [ids],
      );
      const { rows: stock } = await pool.query('SELECT on_hand, reserved FROM stock WHERE item_id = $1', [item]);
      const { rows: ledger } = await pool.query(
        'SELECT kind, on_hand_delta, reserved_delta FROM stock_movements WHERE item_id = $1 ORDER BY kind, reserved_delta',
        [item],
      );
      const events = (await Promise.all([item, ...ids].map((subject) => eventsOf(pool, subject)))).flat();
      return { recorded: { reservations, stock, ledger }, events, itemSequence: await itemSequence(item) };
    };
    const withEvents = await record(writer(), newItem('outbox-on'));
    const withoutEvents = await record(writer({ appendEvents: false }), newItem('outbox-off'));
    expect(withoutEvents.recorded).toEqual(withEvents.recorded);
    expect(withEvents.recorded.stock).toEqual([{ on_hand: 7, reserved: 2 }]);
    // Two stock.changed: the stock's first change and the confirm's sale (holds change `reserved` alone).
    expect(withEvents.events.map((e) => e.type.replace(/^inventory\./, '')).sort()).toEqual([
      'reservation.confirmed',
      'reservation.created',
      'reservation.created',
      'reservation.created',
      'reservation.extended',
      'reservation.released',
      'stock.changed',
      'stock.changed',
    ]);
    expect(withoutEvents.events).toEqual([]);
    expect(withoutEvents.itemSequence).toBeUndefined();
  });
});
