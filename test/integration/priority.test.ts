import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reconcile, type ReconcileOptions } from '../../src/jobs/reconcile.js';
import { stockField } from '../../src/redis/layout.js';
import {
  Api,
  expectProblem,
  outcome,
  problemOf,
  range,
  reservationOf,
  startHttpApp,
  tally,
  waitReady,
  wipeRedisState,
} from '../helpers/api.js';
import { newItem, type TestApp } from '../helpers/app.js';
import { checkInvariants, figuresOf } from '../helpers/invariants.js';
import { mulberry32 } from '../helpers/random.js';
import { waitForLockWait } from '../helpers/sessions.js';

/**
 * Priority reservations and safety stock against the real stores: concurrency, the two-phase safety change failing
 * closed, the rebuild after Redis loss, and reconciliation (api.md, "Priority reservations and safety stock").
 */

let t: TestApp;
let api: Api;
beforeAll(async () => {
  t = await startHttpApp({ RECONCILE_INTERVAL_MS: 0 });
  api = await Api.listen(t.app);
});
afterAll(() => t?.close());

describe('normal and high priority under concurrency', () => {
  it('300 concurrent reservations mixing priorities on one item: normal ones never take the safety stock, none oversells', async () => {
    const item = newItem('vip');
    const ON_HAND = 120;
    const SAFETY = 40;
    await api.safety(item, ON_HAND, SAFETY);
    const rng = mulberry32(11_2026);
    const requests = range(300).map(() => ({ priority: rng.chance(0.3) ? ('high' as const) : ('normal' as const), quantity: rng.int(1, 3) }));

    const answers = await Promise.all(
      requests.map((r) => api.reserve({ lines: [{ itemId: item, quantity: r.quantity }], priority: r.priority, ttlSeconds: 600 })),
    );
    expect(Object.keys(tally(answers)).sort()).toEqual(['201', '409 insufficient_stock']);

    let heldNormal = 0;
    let heldHigh = 0;
    answers.forEach((a, i) => {
      const r = requests[i]!;
      if (a.status === 201) {
        expect(reservationOf(a).priority).toBe(r.priority);
        if (r.priority === 'high') heldHigh += r.quantity;
        else heldNormal += r.quantity;
        return;
      }
      // No false refusal: a refused request asked for more than its priority could take when it was decided.
      const [short] = problemOf(a).lines!;
      expect(short!.requested, outcome(a)).toBe(r.quantity);
      expect(short!.available).toBeLessThan(r.quantity);
    });
    expect(heldNormal, 'units held by normal reservations').toBeLessThanOrEqual(ON_HAND - SAFETY);
    expect(heldNormal + heldHigh, 'no oversell').toBeLessThanOrEqual(ON_HAND);
    // With 300 requests for up to 3 units each, demand exceeds supply: every unit a priority could take was taken.
    const figures = await api.figures(item);
    expect(figures).toMatchObject({ onHand: ON_HAND, reserved: heldNormal + heldHigh, safetyStock: SAFETY });
    expect(figures.available).toBeLessThan(3);
    expect(figures.availableHighPriority).toBeLessThan(3);

    // PostgreSQL agrees with what was answered: priorities and units of every reservation.
    const { rows } = await t.app.runtime.db.query<{ priority: string; units: number }>(
      `SELECT r.priority, sum(l.quantity)::int AS units FROM reservations r JOIN reservation_lines l ON l.reservation_id = r.id
       WHERE l.item_id = $1 GROUP BY r.priority`,
      [item],
    );
    expect(new Map(rows.map((r) => [r.priority, r.units]))).toEqual(
      new Map([
        ['normal', heldNormal],
        ['high', heldHigh],
      ].filter(([, units]) => Number(units) > 0) as [string, number][]),
    );
    const report = await checkInvariants(t.app, [item], { holdsWithinSupply: true });
    expect(figuresOf(report, item)).toMatchObject({
      redis: { onHand: ON_HAND, safety: SAFETY, reservedLive: heldNormal + heldHigh },
      pg: { onHand: ON_HAND, safetyStock: SAFETY, reserved: heldNormal + heldHigh },
    });
  });

  it('concurrent safety stock sets with reservations: each reservation sees a whole set, and the stores agree', async () => {
    const item = newItem('vip-sets');
    await api.safety(item, 100, 10);
    const rng = mulberry32(7);
    const calls = rng.shuffle([
      ...range(150).map(() => ({ kind: 'reserve' as const, priority: rng.chance(0.5) ? ('high' as const) : ('normal' as const) })),
      ...range(20).map(() => ({ kind: 'set' as const, safety: rng.int(0, 60) })),
    ]);
    const answers = await Promise.all(
      calls.map((c) =>
        c.kind === 'set'
          ? api.putStock(item, { quantity: 100, safetyStock: c.safety })
          : api.reserve({ lines: [{ itemId: item, quantity: 1 }], priority: c.priority, ttlSeconds: 600 }),
      ),
    );
    calls.forEach((c, i) => expect(c.kind === 'set' ? ['200'] : ['201', '409 insufficient_stock']).toContain(outcome(answers[i]!)));
    const doc = await api.figures(item);
    expect(doc.safetyStock).toBeGreaterThanOrEqual(0);
    expect(doc.reserved).toBeLessThanOrEqual(100);
    await checkInvariants(t.app, [item], { holdsWithinSupply: true });
  });
});

describe('a safety stock change fails closed', () => {
  /** Makes PostgreSQL refuse every ledger row that changes `item`'s safety stock (a real failed record). */
  async function refuseSafetyOf(item: string): Promise<() => Promise<void>> {
    const name = `refuse_${item.replace(/\W/g, '_')}`;
    const { db } = t.app.runtime;
    await db.query(`CREATE FUNCTION ${name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$`);
    await db.query(
      `CREATE TRIGGER ${name} BEFORE INSERT ON stock_movements FOR EACH ROW
       WHEN (NEW.item_id = '${item}' AND NEW.safety_delta <> 0) EXECUTE FUNCTION ${name}()`,
    );
    return async () => {
      await db.query(`DROP TRIGGER ${name} ON stock_movements`);
      await db.query(`DROP FUNCTION ${name}()`);
    };
  }

  /** Runs `during` while the ledger is locked and `change` waits for it (decided in Redis, not yet recorded). */
  async function whileUnrecorded<T>(change: () => Promise<T>, during: () => Promise<void>): Promise<T> {
    const lock = new pg.Client({ connectionString: t.databaseUrl });
    const watcher = new pg.Client({ connectionString: t.databaseUrl });
    await Promise.all([lock.connect(), watcher.connect()]);
    try {
      await lock.query('BEGIN');
      await lock.query('LOCK TABLE stock_movements IN EXCLUSIVE MODE');
      const changing = change();
      await waitForLockWait(watcher, 'the stock change to wait on the ledger');
      await during();
      await lock.query('COMMIT');
      return await changing;
    } finally {
      await lock.query('ROLLBACK').catch(() => {});
      await Promise.all([lock.end(), watcher.end()]);
    }
  }

  it('a decrease is not offered to normal reservations until recorded; one whose record fails never is', async () => {
    const item = newItem('safety-down');
    await api.safety(item, 10, 6);
    const allow = await refuseSafetyOf(item);
    try {
      const answer = await whileUnrecorded(
        () => api.putStock(item, { quantity: 10, safetyStock: 1 }),
        async () => {
          // Decided, not recorded: normal reservations still see the old safety stock.
          expect(await api.figures(item)).toMatchObject({ safetyStock: 6, available: 4 });
          const short = expectProblem(await api.reserve({ lines: [{ itemId: item, quantity: 5 }] }), 'insufficient_stock');
          expect(short.lines).toEqual([{ itemId: item, location: 'default', requested: 5, available: 4 }]);
        },
      );
      expectProblem(answer, 'unavailable');
      expect(await api.figures(item)).toMatchObject({ onHand: 10, safetyStock: 6, available: 4, availableHighPriority: 10 });
      expectProblem(await api.reserve({ lines: [{ itemId: item, quantity: 5 }] }), 'insufficient_stock');
    } finally {
      await allow();
    }
    await checkInvariants(t.app, [item]);
    // Recorded, it takes effect.
    expect(await api.safety(item, 10, 1)).toMatchObject({ safetyStock: 1, available: 9 });
    await checkInvariants(t.app, [item]);
  });

  it('an increase is enforced at once, and taken back when its record fails', async () => {
    const item = newItem('safety-up');
    await api.safety(item, 10, 2);
    const allow = await refuseSafetyOf(item);
    try {
      const answer = await whileUnrecorded(
        () => api.putStock(item, { quantity: 10, safetyStock: 9 }),
        async () => {
          // Decided, not recorded: already enforced (it only takes availability away).
          expect(await api.figures(item)).toMatchObject({ safetyStock: 9, available: 1 });
          expectProblem(await api.reserve({ lines: [{ itemId: item, quantity: 2 }] }), 'insufficient_stock');
        },
      );
      expectProblem(answer, 'unavailable');
      expect(await api.figures(item)).toMatchObject({ onHand: 10, safetyStock: 2, available: 8 });
    } finally {
      await allow();
    }
    const { rows } = await t.app.runtime.db.query('SELECT 1 FROM stock_movements WHERE item_id = $1 AND safety_delta = 7', [item]);
    expect(rows).toEqual([]);
    await checkInvariants(t.app, [item]);
  });

  it('a PUT changing on-hand and safety stock is one decision: a failed record takes both back', async () => {
    const item = newItem('safety-both');
    await api.safety(item, 10, 2);
    const allow = await refuseSafetyOf(item);
    try {
      expectProblem(await api.putStock(item, { quantity: 4, safetyStock: 3 }), 'unavailable');
    } finally {
      await allow();
    }
    expect(await api.figures(item)).toMatchObject({ onHand: 10, safetyStock: 2, available: 8 });
    await checkInvariants(t.app, [item]);
  });
});

describe('Redis lost and rebuilt, drift reconciled', () => {
  const dryRun: ReconcileOptions = { heal: false, dropOrphans: false, rebuildOnDrift: false, orphanAfterMs: 10_000, settleMs: 0 };
  const heal: ReconcileOptions = { ...dryRun, heal: true };

  it('the rebuild after Redis lost its state restores the safety stock, and normal reservations still cannot take it', async () => {
    const item = newItem('safety-rebuild');
    await api.safety(item, 12, 5, 'wh-1');
    await api.stock(item, 3, 'wh-2');
    await api.hold({ lines: [{ itemId: item, quantity: 6, location: 'wh-1' }], priority: 'high', ttlSeconds: 600 });
    const before = await api.figures(item);
    expect(before).toMatchObject({ onHand: 15, reserved: 6, safetyStock: 5, available: 4, availableHighPriority: 9 });

    await wipeRedisState(t.app); // FLUSHALL, for this app's keys only (other test files share this Redis)
    await waitReady(t.app);
    expect(await api.figures(item)).toEqual(before);
    expectProblem(await api.reserve({ lines: [{ itemId: item, quantity: 2, location: 'wh-1' }] }), 'insufficient_stock');
    await api.hold({ lines: [{ itemId: item, quantity: 2, location: 'wh-1' }], priority: 'high' });
    await checkInvariants(t.app, [item]);
  });

  it('reconciliation reports a safety stock that drifted in Redis and corrects it in place', async () => {
    const item = newItem('safety-drift');
    await api.safety(item, 10, 4);
    const { redis, keys } = t.app.runtime;
    await redis.hset(keys.item(item).stock, stockField('safety', 'default'), 1);
    expect(await api.figures(item)).toMatchObject({ safetyStock: 1, available: 9 });

    const report = await reconcile(t.app.runtime.reconcileDeps, dryRun);
    expect(report.drift).toContainEqual({
      itemId: item,
      location: 'default',
      redis: { onHand: 10, reserved: 0, holds: 0, safetyStock: 1 },
      postgres: { onHand: 10, reserved: 0, holds: 0, safetyStock: 4 },
    });

    const healed = await reconcile(t.app.runtime.reconcileDeps, heal);
    expect(healed.repair?.corrected).toEqual([
      expect.objectContaining({
        itemId: item,
        before: expect.objectContaining({ safety: 1, safetyPending: 0 }),
        after: expect.objectContaining({ onHand: 10, safety: 4, safetyPending: 0 }),
        postgres: { onHand: 10, reserved: 0, safetyStock: 4 },
      }),
    ]);
    expect(await api.figures(item)).toMatchObject({ safetyStock: 4, available: 6 });
    const { rows } = await t.app.runtime.db.query<{ before: number; after: number; pg: number }>(
      'SELECT redis_safety_before AS before, redis_safety_after AS after, pg_safety_stock AS pg FROM stock_corrections WHERE item_id = $1',
      [item],
    );
    expect(rows).toEqual([{ before: 1, after: 4, pg: 4 }]);
    await checkInvariants(t.app, [item]);
  });

  it('a correction keeps a safety stock change still in flight: an increase enforced, a decrease pending', async () => {
    const item = newItem('safety-inflight');
    await api.safety(item, 10, 4);
    const { decisions, redis, keys, lease } = t.app.runtime;
    // Decided in Redis and never recorded (its request still in flight): +3 enforced at once.
    const decided = await decisions.changeStock(item, 'default', 'set', 10, { opId: crypto.randomUUID(), nodeId: lease.nodeId }, 7);
    expect(decided).toMatchObject({ kind: 'changed', safetyDelta: 3 });
    await redis.hset(keys.item(item).stock, stockField('onHand', 'default'), 99); // and drift beside it
    const healed = await reconcile(t.app.runtime.reconcileDeps, heal);
    expect(healed.repair?.corrected).toEqual([
      expect.objectContaining({
        itemId: item,
        after: expect.objectContaining({ onHand: 10, safety: 7, safetyPending: 0 }),
        inFlight: expect.objectContaining({ safetyIncreases: 3, safetyDecreases: 0 }),
      }),
    ]);
    expect(await api.figures(item)).toMatchObject({ onHand: 10, safetyStock: 7, available: 3 });
  });
});
