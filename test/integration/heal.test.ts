import pg from 'pg';
import { Redis } from 'ioredis';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newNodeId } from '../../src/jobs/node-lease.js';
import { ABANDONED_INTENT_AFTER_MS, correctDrift, reconcile, type ReconcileDeps, type ReconcileOptions, type ReconcileReport } from '../../src/jobs/reconcile.js';
import { formatHold, formatIntent, holdField, parseHold, parseIntent, parseStock, stockField } from '../../src/redis/layout.js';
import { HoldState } from '../../src/redis/status.js';
import { newItem, newKey, startTestApp, type TestApp } from '../helpers/app.js';
import { startRedis, type RedisServer } from '../helpers/redis-server.js';
import { documentAfter } from '../helpers/documents.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Drift heals itself: stock decisions left open (their process died, or Redis was away when it ended them) are
 * judged by the ledger, and drift that persists is corrected in place, fenced by PostgreSQL's stock row. Every
 * test builds the state a fault leaves (through the real scripts and the real writer, then what a dead process
 * never did), against the real Redis and PostgreSQL.
 */

let t: TestApp;
let deps: ReconcileDeps;
beforeAll(async () => {
  t = await startTestApp({ RECONCILE_INTERVAL_MS: 0 });
  deps = t.app.runtime.reconcileDeps;
});
afterAll(() => t.close());

const LOCATION = 'default';
const dryRun: ReconcileOptions = { heal: false, dropOrphans: false, rebuildOnDrift: false, orphanAfterMs: 60_000, settleMs: 0 };
const heal: ReconcileOptions = { ...dryRun, heal: true, dropOrphans: true };

/** Stocks `item` through the API (recorded and applied). */
async function stock(app: TestApp, item: string, quantity: number): Promise<void> {
  const res = await app.app.inject({ method: 'PUT', url: `/items/${item}/stock`, payload: { quantity } });
  expect(res.statusCode).toBe(200);
}

async function reserve(app: TestApp, item: string, quantity: number): Promise<string> {
  const res = await app.app.inject({
    method: 'POST',
    url: '/reservations',
    headers: { 'idempotency-key': newKey() },
    payload: { lines: [{ itemId: item, quantity }] },
  });
  expect(res.statusCode).toBe(201);
  return (res.json() as { id: string }).id;
}

/** A stock decision in Redis by `nodeId` (as the service makes one), not yet recorded. */
async function decide(app: TestApp, item: string, mode: 'set' | 'adjust', amount: number, nodeId: string) {
  const opId = uuidv7();
  const decision = await app.app.runtime.decisions.changeStock(item, LOCATION, mode, amount, { opId, nodeId });
  if (decision.kind !== 'changed' || !decision.intent) throw new Error(`expected a decision with an intent: ${JSON.stringify(decision)}`);
  return { opId, decision };
}

/** Records a decision as the service's writer does. */
function record(app: TestApp, item: string, d: Awaited<ReturnType<typeof decide>>) {
  return app.app.runtime.writer.submit({
    kind: 'stock',
    generation: d.decision.generation,
    itemId: item,
    location: LOCATION,
    onHandDelta: d.decision.onHandDelta,
    movement: 'adjust',
    reason: null,
    opId: d.opId,
  });
}

async function redisNow(redis: Redis): Promise<number> {
  const [seconds, micros] = await redis.time();
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
}

/** Makes an intent `ageMs` old by Redis' clock (what time does to an intent nobody ended). */
async function age(app: TestApp, item: string, opId: string, ageMs: number): Promise<void> {
  const { redis, keys } = app.app.runtime;
  const intent = parseIntent((await redis.hget(keys.item(item).intents, opId)) ?? '');
  if (!intent) throw new Error(`no intent ${opId}`);
  await redis.hset(keys.item(item).intents, opId, formatIntent({ ...intent, decidedMs: (await redisNow(redis)) - ageMs }));
}

const redisStock = async (app: TestApp, item: string) =>
  parseStock(await app.app.runtime.redis.hgetall(app.app.runtime.keys.item(item).stock)).get(LOCATION);
const intentsOf = async (app: TestApp, item: string) => app.app.runtime.redis.hgetall(app.app.runtime.keys.item(item).intents);

async function pgStock(app: TestApp, item: string): Promise<{ onHand: number; reserved: number } | undefined> {
  const { rows } = await app.app.runtime.db.query<{ on_hand: number; reserved: number }>(
    'SELECT on_hand, reserved FROM stock WHERE item_id = $1 AND location = $2',
    [item, LOCATION],
  );
  return rows[0] && { onHand: rows[0].on_hand, reserved: rows[0].reserved };
}

async function ledgerOf(app: TestApp, opId: string): Promise<{ kind: string; on_hand_delta: number }[]> {
  const { rows } = await app.app.runtime.db.query<{ kind: string; on_hand_delta: number }>(
    'SELECT kind, on_hand_delta FROM stock_movements WHERE op_id = $1',
    [opId],
  );
  return rows;
}

async function repairs(app: TestApp, action: string): Promise<number> {
  const metric = await app.app.runtime.metrics.registry.getSingleMetric('irs_reconcile_repairs_total')?.get();
  return metric?.values.find((v) => v.labels.action === action)?.value ?? 0;
}

const mine = (report: ReconcileReport, item: string) => report.strandedIntents.filter((s) => s.itemId === item);

/** The judging bound of this app: DATABASE_QUERY_TIMEOUT_MS + LEASE_TTL_MS + 1 s. */
const bound = () => deps.judgeIntentsAfterMs;

describe('stranded stock intents, judged by the ledger', () => {
  it('a dead node’s increase that PostgreSQL recorded is finished: its units become available, once', async () => {
    const item = newItem();
    await stock(t, item, 10);
    const dead = newNodeId();
    const d = await decide(t, item, 'adjust', 5, dead);
    expect(await record(t, item, d)).toBe('recorded'); // …and the process died before `apply`
    await age(t, item, d.opId, bound() + 1_000);
    expect(await redisStock(t, item)).toEqual({ onHand: 10, reserved: 0, pending: 5, safety: null, safetyPending: null });

    const looked = await reconcile(deps, dryRun);
    expect(mine(looked, item)).toEqual([
      expect.objectContaining({ opId: d.opId, kind: 'supply', delta: 5, ownerAlive: false, ledger: 'recorded', action: 'finish' }),
    ]);
    expect(await redisStock(t, item)).toEqual({ onHand: 10, reserved: 0, pending: 5, safety: null, safetyPending: null }); // a dry run changes nothing

    const finished = await repairs(t, 'finish_intent');
    const healed = await reconcile(deps, heal);
    expect(healed.repair?.intentsFinished).toBeGreaterThanOrEqual(1);
    expect(await redisStock(t, item)).toEqual({ onHand: 15, reserved: 0, pending: null, safety: null, safetyPending: null });
    expect(await pgStock(t, item)).toEqual({ onHand: 15, reserved: 0 });
    expect(await intentsOf(t, item)).toEqual({});
    expect(await repairs(t, 'finish_intent')).toBe(finished + 1);

    // The dead process's `apply`, arriving late after all, finds no intent: it changes nothing.
    expect(await t.app.runtime.decisions.endStockChange(item, 'apply', d.opId, d.decision)).toEqual({ kind: 'already' });
    expect(await redisStock(t, item)).toMatchObject({ onHand: 15 });
  });

  it('a dead node’s increase that PostgreSQL never recorded is taken back, voided so that it can never land after', async () => {
    const item = newItem();
    await stock(t, item, 10);
    const d = await decide(t, item, 'adjust', 5, newNodeId());
    await age(t, item, d.opId, bound() + 1_000);

    const takenBack = await repairs(t, 'take_back_intent');
    await reconcile(deps, heal);
    expect(await redisStock(t, item)).toEqual({ onHand: 10, reserved: 0, pending: null, safety: null, safetyPending: null });
    expect(await intentsOf(t, item)).toEqual({});
    expect(await ledgerOf(t, d.opId)).toEqual([{ kind: 'void', on_hand_delta: 0 }]);
    expect(await repairs(t, 'take_back_intent')).toBe(takenBack + 1);

    // Its batch, had it been stuck somewhere all along, is refused: PostgreSQL never offers what Redis took back.
    expect(await record(t, item, d)).toBe('conflict');
    expect(await pgStock(t, item)).toEqual({ onHand: 10, reserved: 0 });
    expect(await ledgerOf(t, d.opId)).toEqual([{ kind: 'void', on_hand_delta: 0 }]);
  });

  it('leaves a live node’s unrecorded decision to it, and a dead node’s alone until the bound', async () => {
    const item = newItem();
    await stock(t, item, 10);
    const live = await decide(t, item, 'adjust', 3, t.app.runtime.lease.nodeId);
    await age(t, item, live.opId, bound() + 1_000);
    const young = await decide(t, item, 'adjust', 4, newNodeId());
    await age(t, item, young.opId, bound() - 2_000);

    const passed = await reconcile(deps, heal);
    expect(mine(passed, item)).toEqual([]);
    expect(await redisStock(t, item)).toEqual({ onHand: 10, reserved: 0, pending: 7, safety: null, safetyPending: null });
    expect(Object.keys(await intentsOf(t, item)).sort()).toEqual([live.opId, young.opId].sort());

    // Past the bound the dead node's is taken back; the live node's stays its own.
    await age(t, item, young.opId, bound() + 100);
    const later = await reconcile(deps, heal);
    expect(mine(later, item).map((s) => [s.opId, s.action])).toEqual([[young.opId, 'take_back']]);
    expect(await redisStock(t, item)).toEqual({ onHand: 10, reserved: 0, pending: 3, safety: null, safetyPending: null });
    expect(Object.keys(await intentsOf(t, item))).toEqual([live.opId]);

    // Its owner ends it as usual.
    expect(await record(t, item, live)).toBe('recorded');
    await t.app.runtime.decisions.endStockChange(item, 'apply', live.opId, live.decision);
    expect(await redisStock(t, item)).toEqual({ onHand: 13, reserved: 0, pending: null, safety: null, safetyPending: null });
  });

  it('takes back a live node’s unrecorded decision left open for a minute (its compensation failed, and is never retried)', async () => {
    const item = newItem();
    await stock(t, item, 10);
    const d = await decide(t, item, 'adjust', -2, t.app.runtime.lease.nodeId);
    await age(t, item, d.opId, ABANDONED_INTENT_AFTER_MS - 5_000);
    await reconcile(deps, heal);
    expect(await redisStock(t, item)).toMatchObject({ onHand: 8 });
    await age(t, item, d.opId, ABANDONED_INTENT_AFTER_MS + 1_000);
    const report = await reconcile(deps, heal);
    expect(mine(report, item)).toEqual([expect.objectContaining({ ownerAlive: true, ledger: 'none', action: 'take_back' })]);
    expect(await redisStock(t, item)).toMatchObject({ onHand: 10 });
    expect(await record(t, item, d)).toBe('conflict');
    expect(await pgStock(t, item)).toEqual({ onHand: 10, reserved: 0 });
  });

  it('finishes a live node’s recorded decision it never ended (Redis was away when it tried)', async () => {
    const item = newItem();
    await stock(t, item, 10);
    const d = await decide(t, item, 'adjust', 2, t.app.runtime.lease.nodeId);
    expect(await record(t, item, d)).toBe('recorded');
    await age(t, item, d.opId, bound() + 1_000);
    await reconcile(deps, heal);
    expect(await redisStock(t, item)).toEqual({ onHand: 12, reserved: 0, pending: null, safety: null, safetyPending: null });
    expect(await intentsOf(t, item)).toEqual({});
  });

  it('a dead node’s decrease that PostgreSQL never recorded is undone; one it recorded only loses its intent', async () => {
    const undone = newItem();
    const kept = newItem();
    await stock(t, undone, 10);
    await stock(t, kept, 10);
    const lost = await decide(t, undone, 'adjust', -3, newNodeId());
    const recorded = await decide(t, kept, 'adjust', -3, newNodeId());
    expect(await record(t, kept, recorded)).toBe('recorded');
    await age(t, undone, lost.opId, bound() + 1_000);
    await age(t, kept, recorded.opId, bound() + 1_000);
    expect(await redisStock(t, undone)).toMatchObject({ onHand: 7 });

    const report = await reconcile(deps, heal);
    expect([...mine(report, undone), ...mine(report, kept)].map((s) => [s.kind, s.ledger, s.action])).toEqual([
      ['debit', 'none', 'take_back'],
      ['debit', 'recorded', 'finish'],
    ]);
    expect(await redisStock(t, undone)).toMatchObject({ onHand: 10 });
    expect(await pgStock(t, undone)).toMatchObject({ onHand: 10 });
    expect(await ledgerOf(t, lost.opId)).toEqual([{ kind: 'void', on_hand_delta: 0 }]);
    expect(await redisStock(t, kept)).toMatchObject({ onHand: 7 });
    expect(await pgStock(t, kept)).toMatchObject({ onHand: 7 });
    expect(await intentsOf(t, undone)).toEqual({});
    expect(await intentsOf(t, kept)).toEqual({});
    expect((await reconcile(deps, dryRun)).drift.filter((r) => r.itemId === undone || r.itemId === kept)).toEqual([]);
  });
});

describe('the fenced correction', () => {
  async function corrections(app: TestApp, item: string) {
    const { rows } = await app.app.runtime.db.query(
      `SELECT redis_on_hand_before, redis_reserved_before, redis_on_hand_after, redis_reserved_after, pg_on_hand, pg_reserved, reason
       FROM stock_corrections WHERE item_id = $1 ORDER BY id`,
      [item],
    );
    return rows;
  }

  it('sets an on-hand Redis lost, or gained, back to PostgreSQL’s, with an audit row and a metric', async () => {
    const short = newItem();
    const over = newItem();
    await stock(t, short, 10);
    await stock(t, over, 10);
    const { redis, keys } = t.app.runtime;
    await redis.hset(keys.item(short).stock, stockField('onHand', LOCATION), 7);
    await redis.hset(keys.item(over).stock, stockField('onHand', LOCATION), 13);

    const counted = await repairs(t, 'correct');
    const report = await reconcile(deps, heal);
    expect(report.repair?.corrected.filter((c) => c.itemId === short || c.itemId === over)).toHaveLength(2);
    expect(await redisStock(t, short)).toEqual({ onHand: 10, reserved: 0, pending: null, safety: null, safetyPending: null });
    expect(await redisStock(t, over)).toEqual({ onHand: 10, reserved: 0, pending: null, safety: null, safetyPending: null });
    expect(await repairs(t, 'correct')).toBe(counted + 2);
    expect(await corrections(t, short)).toEqual([
      {
        redis_on_hand_before: 7,
        redis_reserved_before: 0,
        redis_on_hand_after: 10,
        redis_reserved_after: 0,
        pg_on_hand: 10,
        pg_reserved: 0,
        reason: 'drift persisted across two looks: Redis on-hand/reserved/holds/safety 7/0/0/0, PostgreSQL 10/0/0/0',
      },
    ]);
    // Nothing left to do: the next pass corrects nothing.
    const again = await reconcile(deps, heal);
    expect(again.repair?.corrected.filter((c) => c.itemId === short || c.itemId === over)).toEqual([]);
  });

  // A whole confirm sells the 3 held; a partial one sells 1 and releases 2. Redis keeps what it sold (on-hand 10 would
  // oversell), PostgreSQL takes it out when it records.
  it.each([
    ['a confirm', undefined, 7],
    ['a partial confirm (by the units it sold, not the units it held)', 1, 9],
  ])('accounts for %s in flight: Redis keeps the units it sold, PostgreSQL takes them out when it records', async (_label, confirmedQuantity, onHand) => {
    const item = newItem();
    await stock(t, item, 10);
    const id = await reserve(t, item, 3);
    const lines = [{ itemId: item, location: LOCATION, quantity: 3, ...(confirmedQuantity === undefined ? {} : { confirmedQuantity }) }];
    const settled = await t.app.runtime.decisions.settle('confirm', id, lines); // decided, not recorded yet
    if (settled.kind !== 'settled') throw new Error(settled.kind);
    const { redis, keys } = t.app.runtime;
    await redis.hincrby(keys.item(item).stock, stockField('onHand', LOCATION), -2); // and 2 units lost

    await reconcile(deps, heal);
    expect(await redisStock(t, item)).toEqual({ onHand, reserved: 0, pending: null, safety: null, safetyPending: null });
    const recorded = await t.app.runtime.writer.submit({
      kind: 'transition',
      generation: settled.generation,
      reservationId: id,
      to: 'confirmed',
      at: new Date(settled.nowMs),
      lines,
      document: documentAfter({ id, lines, status: 'confirmed', at: new Date(settled.nowMs), version: settled.version }),
    });
    expect(recorded).toBe('recorded');
    expect(await pgStock(t, item)).toEqual({ onHand, reserved: 0 });
    expect((await reconcile(deps, dryRun)).drift.filter((r) => r.itemId === item)).toEqual([]);
  });

  it('accounts for a decrease in flight the same way', async () => {
    const item = newItem();
    await stock(t, item, 10);
    const d = await decide(t, item, 'adjust', -4, t.app.runtime.lease.nodeId); // decided, not recorded yet
    const { redis, keys } = t.app.runtime;
    await redis.hincrby(keys.item(item).stock, stockField('onHand', LOCATION), -1); // and 1 unit lost

    await reconcile(deps, heal);
    expect(await redisStock(t, item)).toEqual({ onHand: 6, reserved: 0, pending: null, safety: null, safetyPending: null }); // not 10
    expect(await record(t, item, d)).toBe('recorded');
    await t.app.runtime.decisions.endStockChange(item, 'settle', d.opId, d.decision);
    expect(await pgStock(t, item)).toEqual({ onHand: 6, reserved: 0 });
    expect((await reconcile(deps, dryRun)).drift.filter((r) => r.itemId === item)).toEqual([]);
  });

  it('leaves a Redis of another generation alone (a rebuild wrote it, or will)', async () => {
    const item = newItem();
    await stock(t, item, 10);
    const { redis, keys } = t.app.runtime;
    await redis.hset(keys.item(item).stock, stockField('onHand', LOCATION), 7);
    const generation = (await redis.get(keys.marker))!;
    await redis.set(keys.marker, String(Number(generation) + 1));
    try {
      const row = (await reconcile(deps, dryRun)).drift.find((r) => r.itemId === item)!;
      expect(await correctDrift(deps, row)).toBeNull();
      expect(await redisStock(t, item)).toMatchObject({ onHand: 7 });
      expect(await corrections(t, item)).toEqual([]);
    } finally {
      await redis.set(keys.marker, generation);
    }
    await reconcile(deps, heal);
    expect(await redisStock(t, item)).toMatchObject({ onHand: 10 });
  });

  it('sets reserved to the units of the pending holds', async () => {
    const item = newItem();
    await stock(t, item, 10);
    await reserve(t, item, 2);
    const { redis, keys } = t.app.runtime;
    await redis.hincrby(keys.item(item).stock, stockField('reserved', LOCATION), 5);
    await reconcile(deps, heal);
    expect(await redisStock(t, item)).toEqual({ onHand: 10, reserved: 2, pending: null, safety: null, safetyPending: null });
  });

  it('adds back a pending unexpired hold PostgreSQL has and Redis lost, with PostgreSQL’s expiry', async () => {
    const item = newItem();
    await stock(t, item, 10);
    const id = await reserve(t, item, 3);
    const { redis, keys } = t.app.runtime;
    const field = holdField(id, LOCATION);
    const hold = parseHold((await redis.hget(keys.item(item).holds, field))!)!;
    await redis.hdel(keys.item(item).holds, field);
    await redis.zrem(keys.item(item).exp, field);
    await redis.hincrby(keys.item(item).stock, stockField('reserved', LOCATION), -3);

    await reconcile(deps, heal);
    expect(parseHold((await redis.hget(keys.item(item).holds, field))!)).toEqual({ ...hold, state: HoldState.pending });
    expect(Number(await redis.zscore(keys.item(item).exp, field))).toBe(hold.expiresAtMs);
    expect(await redisStock(t, item)).toEqual({ onHand: 10, reserved: 3, pending: null, safety: null, safetyPending: null });
    // Held again: it can be confirmed.
    expect((await t.app.inject({ method: 'POST', url: `/reservations/${id}/confirm` })).statusCode).toBe(200);
  });

  it('adds back the holds of a hot item Redis lost, tens of thousands of them, in one correction', async () => {
    // Each hold is four facts for the script: as arguments of their own, 20,000 holds overflowed the client's stack.
    const holds = 20_000;
    const item = newItem();
    await stock(t, item, 30_000);
    const { db, redis, keys } = t.app.runtime;
    // PostgreSQL recorded the holds; Redis never saw them (as after Redis lost its writes since a snapshot).
    await db.query(
      `WITH r AS (
         INSERT INTO reservations (id, status, expires_at, created_at, updated_at)
         SELECT gen_random_uuid(), 'pending', now() + interval '1 hour', now(), now() FROM generate_series(1, $1)
         RETURNING id)
       INSERT INTO reservation_lines (reservation_id, line_no, item_id, location, quantity) SELECT id, 0, $2, $3, 1 FROM r`,
      [holds, item, LOCATION],
    );
    await db.query('UPDATE stock SET reserved = $1 WHERE item_id = $2 AND location = $3', [holds, item, LOCATION]);

    const row = (await reconcile(deps, dryRun)).drift.find((r) => r.itemId === item)!;
    expect(row.redis).toMatchObject({ reserved: 0, holds: 0 });
    expect(await correctDrift(deps, row)).toMatchObject({ holdsReadded: holds });
    expect(await redisStock(t, item)).toEqual({ onHand: 30_000, reserved: holds, pending: null, safety: null, safetyPending: null });
    expect(await redis.hlen(keys.item(item).holds)).toBe(holds);
    expect(await redis.zcard(keys.item(item).exp)).toBe(holds);
    expect((await reconcile(deps, dryRun)).drift.filter((r) => r.itemId === item)).toEqual([]);
    // Done with the hot item: later passes in this file need not read its holds.
    await db.query(`UPDATE reservations SET status = 'released' WHERE id IN (SELECT reservation_id FROM reservation_lines WHERE item_id = $1)`, [item]);
    await db.query('UPDATE stock SET reserved = 0 WHERE item_id = $1', [item]);
    await redis.del(keys.item(item).holds, keys.item(item).exp);
    await redis.hset(keys.item(item).stock, stockField('reserved', LOCATION), 0);
  });

  it('gives a hold PostgreSQL has final the state PostgreSQL recorded where Redis calls it pending', async () => {
    const item = newItem();
    await stock(t, item, 10);
    const id = await reserve(t, item, 3);
    expect((await t.app.inject({ method: 'POST', url: `/reservations/${id}/confirm` })).statusCode).toBe(200);
    const { redis, keys } = t.app.runtime;
    const field = holdField(id, LOCATION);
    const hold = parseHold((await redis.hget(keys.item(item).holds, field))!)!;
    // Redis lost the confirm: the hold pending again (at the version before it), its units reserved and back on hand.
    await redis.hset(keys.item(item).holds, field, formatHold({ ...hold, state: HoldState.pending, version: 1 }));
    await redis.zadd(keys.item(item).exp, hold.expiresAtMs, field);
    await redis.hset(keys.item(item).stock, stockField('onHand', LOCATION), 10, stockField('reserved', LOCATION), 3);

    await reconcile(deps, heal);
    // PostgreSQL's state, and its version.
    expect(parseHold((await redis.hget(keys.item(item).holds, field))!)).toEqual({ ...hold, state: HoldState.confirmed, version: 2 });
    expect(await redisStock(t, item)).toEqual({ onHand: 7, reserved: 0, pending: null, safety: null, safetyPending: null });
    expect(await pgStock(t, item)).toEqual({ onHand: 7, reserved: 0 });
  });
});

describe('the fenced correction holds PostgreSQL’s stock row', () => {
  let server: RedisServer;
  let own: TestApp;
  let admin: Redis;
  let watcher: pg.Client;
  beforeAll(async () => {
    // A private Redis: the test pauses it, and other test files share the local one.
    server = await startRedis();
    own = await startTestApp({ REDIS_URL: server.url, RECONCILE_INTERVAL_MS: 0, REDIS_COMMAND_TIMEOUT_MS: 10_000 });
    admin = new Redis(server.url);
    watcher = new pg.Client({ connectionString: own.databaseUrl });
    await watcher.connect();
  });
  afterAll(async () => {
    await watcher.end();
    admin.disconnect();
    await own.close();
    await server.stop();
  });

  /** A backend of this database in the state asked for, whose last statement matches `query` (SQL LIKE). */
  const session = (where: string, params: unknown[]) =>
    waitFor(
      where,
      async () => {
        const { rows } = await watcher.query(`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND ${where}`, params);
        return rows.length > 0 ? true : undefined;
      },
      { timeoutMs: 2_500, intervalMs: 5 },
    );

  it('a confirm recorded while the correction runs waits for it, then lands on top: Redis = PostgreSQL', async () => {
    const item = newItem();
    await stock(own, item, 10);
    const id = await reserve(own, item, 3);
    const lines = [{ itemId: item, location: LOCATION, quantity: 3 }];
    const settled = await own.app.runtime.decisions.settle('confirm', id, lines);
    if (settled.kind !== 'settled') throw new Error(settled.kind);
    const { redis, keys } = own.app.runtime;
    await redis.hincrby(keys.item(item).stock, stockField('onHand', LOCATION), -2); // 2 units lost: Redis 5, PostgreSQL 10
    const ownDeps = own.app.runtime.reconcileDeps;
    const row = (await reconcile(ownDeps, dryRun)).drift.find((r) => r.itemId === item)!;

    // Redis answers nothing for 3 s: the correction takes the row, then waits on its first Redis read.
    await admin.call('CLIENT', 'PAUSE', '3000', 'ALL');
    const correcting = correctDrift(ownDeps, row);
    await session("state = 'idle in transaction' AND query LIKE '%FROM stock WHERE item_id%'", []);
    // The confirm's record, in that window: it must wait for the row, not commit under the correction's feet.
    const recording = own.app.runtime.writer.submit({
      kind: 'transition',
      generation: settled.generation,
      reservationId: id,
      to: 'confirmed',
      at: new Date(settled.nowMs),
      lines,
      document: documentAfter({ id, lines, status: 'confirmed', at: new Date(settled.nowMs), version: settled.version }),
    });
    await session("wait_event_type = 'Lock' AND query LIKE '%WITH fence AS%'", []); // the batch statement

    const correction = await correcting;
    expect(correction).toMatchObject({ before: { onHand: 5 }, after: { onHand: 7 }, inFlight: { confirms: 3 } });
    expect(await recording).toBe('recorded');
    expect(await pgStock(own, item)).toEqual({ onHand: 7, reserved: 0 });
    expect(await redisStock(own, item)).toEqual({ onHand: 7, reserved: 0, pending: null, safety: null, safetyPending: null });
    expect((await reconcile(ownDeps, dryRun)).drift).toEqual([]);
  });
});

describe('the periodic reconciler', () => {
  it('spreads its pass at RECONCILE_DUTY_PERCENT, and stopping the node cuts a pass short', async () => {
    const own = await startTestApp({ RECONCILE_INTERVAL_MS: 100, RECONCILE_DUTY_PERCENT: 1 });
    try {
      await own.app.reconciler.stop(); // started with the app: it starts again once every item is stocked
      for (let i = 0; i < 10; i++) await Promise.all(Array.from({ length: 20 }, () => stock(own, newItem(), 1)));
      // The same comparison flat out, for scale.
      const started = performance.now();
      expect((await reconcile(own.app.runtime.reconcileDeps, dryRun)).checkedItems).toBe(200);
      const flatOut = performance.now() - started;
      own.app.reconciler.start();
      // Asleep 99 times as long as it works, the periodic pass is still comparing well after ten flat-out passes
      // would have ended: the item count it reports when done is not in yet.
      await new Promise((r) => setTimeout(r, 200 + 10 * flatOut));
      const itemsCompared = async () => (await own.app.metrics.reconcileItems.get()).values[0]?.value ?? 0;
      expect(await itemsCompared()).toBe(0);
      await own.app.reconciler.stop();
      expect(await itemsCompared()).toBe(0); // abandoned mid-read, not waited out
    } finally {
      await own.close();
    }
  });

  it('keeps its lease while a pass outlasts the interval: the other node starts none meanwhile', async () => {
    // A lease of 600 ms, renewed every 200: one of 100 ms was lost to a stall of the loaded test machine (a full run).
    const settings = { RECONCILE_INTERVAL_MS: 600, RECONCILE_DUTY_PERCENT: 1 };
    const own = await startTestApp(settings);
    const other = await startTestApp({ ...settings, DATABASE_URL: own.databaseUrl, REDIS_KEY_PREFIX: own.config.REDIS_KEY_PREFIX });
    try {
      const { redis, keys } = own.app.runtime;
      await Promise.all([own.app.reconciler.stop(), other.app.reconciler.stop()]);
      await redis.del(keys.reconcileLock); // whichever node's first tick took it
      for (let i = 0; i < 10; i++) await Promise.all(Array.from({ length: 20 }, () => stock(own, newItem(), 1)));
      own.app.reconciler.start();
      const holder = await waitFor('a pass to take the lease', async () => (await redis.get(keys.reconcileLock)) ?? undefined);
      other.app.reconciler.start();
      // At 1 % the pass lasts far longer than the lease's TTL: renewed meanwhile, it stays its node's.
      for (let i = 0; i < 20; i++) {
        await new Promise((r) => setTimeout(r, 50));
        expect(await redis.get(keys.reconcileLock)).toBe(holder);
      }
    } finally {
      await other.close();
      await own.close();
    }
  });

  it('heals an increase whose process died between its record and its apply, by itself', async () => {
    const own = await startTestApp({ RECONCILE_INTERVAL_MS: 200 });
    try {
      const item = newItem();
      await stock(own, item, 10);
      const d = await decide(own, item, 'adjust', 6, newNodeId());
      expect(await record(own, item, d)).toBe('recorded'); // the process died here: Redis 10 (+6 pending), PostgreSQL 16
      await waitFor('the reconciler to make the 6 units available', async () =>
        (await redisStock(own, item))?.onHand === 16 ? true : undefined,
      );
      expect(await redisStock(own, item)).toEqual({ onHand: 16, reserved: 0, pending: null, safety: null, safetyPending: null });
      expect(await intentsOf(own, item)).toEqual({});
      const res = await own.app.inject({ url: `/items/${item}/availability` });
      expect(res.json()).toMatchObject({ onHand: 16, available: 16 });
    } finally {
      await own.close();
    }
  });
});
