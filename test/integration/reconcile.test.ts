import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reconcile, type ReconcileOptions } from '../../src/jobs/reconcile.js';
import { formatHold, holdField, stockField } from '../../src/redis/layout.js';
import { HoldState } from '../../src/redis/status.js';
import { newItem, newKey, startTestApp, type TestApp } from '../helpers/app.js';
import { startRedis } from '../helpers/redis-server.js';

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp({ RECONCILE_INTERVAL_MS: 0 });
});
afterAll(() => t.close());

const dryRun: ReconcileOptions = { heal: false, dropOrphans: false, rebuildOnDrift: false, orphanAfterMs: 10_000, settleMs: 0 };
const repair: ReconcileOptions = { ...dryRun, heal: true, dropOrphans: true, rebuildOnDrift: true };
/** What a repair pass that found nothing to do reports, with `changes` on top. */
const repaired = (changes: Record<string, unknown>) => ({
  intentsFinished: 0,
  intentsTakenBack: 0,
  orphansDropped: 0,
  corrected: [],
  unhealed: [],
  rebuilt: false,
  ...changes,
});

async function stockAndHold(item: string, onHand: number, held: number) {
  await t.app.inject({ method: 'PUT', url: `/items/${item}/stock`, payload: { quantity: onHand } });
  const res = await t.app.inject({
    method: 'POST',
    url: '/reservations',
    headers: { 'idempotency-key': newKey() },
    payload: { lines: [{ itemId: item, quantity: held }] },
  });
  expect(res.statusCode).toBe(201);
}

describe('reconciliation', () => {
  it('finds no drift when Redis and PostgreSQL agree', async () => {
    const item = newItem();
    await stockAndHold(item, 10, 3);
    const report = await reconcile(t.app.runtime.reconcileDeps, dryRun);
    expect(report.drift.filter((r) => r.itemId === item)).toEqual([]);
    expect(report.orphanHolds).toEqual([]);
  });

  it('reports an on-hand that drifted in Redis, and repair corrects it in place, without a rebuild', async () => {
    const item = newItem();
    await stockAndHold(item, 10, 3);
    const { redis, keys } = t.app.runtime;
    await redis.hset(keys.item(item).stock, stockField('onHand', 'default'), 42);

    const report = await reconcile(t.app.runtime.reconcileDeps, dryRun);
    expect(report.drift).toContainEqual({
      itemId: item,
      location: 'default',
      redis: { onHand: 42, reserved: 3, holds: 1, safetyStock: 0 },
      postgres: { onHand: 10, reserved: 3, holds: 1, safetyStock: 0 },
    });
    expect(await redis.hget(keys.item(item).stock, stockField('onHand', 'default'))).toBe('42'); // a dry run changes nothing

    const rebuildsBefore = await counter(t, 'irs_redis_rebuilds_total');
    const repairedNow = await reconcile(t.app.runtime.reconcileDeps, repair);
    expect(repairedNow.repair).toMatchObject(repaired({ corrected: [expect.objectContaining({ itemId: item, location: 'default' })] }));
    expect(repairedNow.repair?.corrected[0]).toMatchObject({ before: { onHand: 42, reserved: 3 }, after: { onHand: 10, reserved: 3 } });
    expect(await counter(t, 'irs_redis_rebuilds_total')).toBe(rebuildsBefore);
    expect((await reconcile(t.app.runtime.reconcileDeps, dryRun)).drift).toEqual([]);
    const availability = await t.app.inject({ url: `/items/${item}/availability` });
    expect(availability.json()).toMatchObject({ onHand: 10, reserved: 3, available: 7 });
  });

  it('covers allocated holds: a split reservation over two locations is no drift; drift at one of them is corrected there', async () => {
    const item = newItem();
    for (const [location, quantity] of [['wh-a', 3], ['wh-b', 5]] as const) {
      await t.app.inject({ method: 'PUT', url: `/items/${item}/stock`, payload: { quantity, location } });
    }
    const res = await t.app.inject({
      method: 'POST',
      url: '/reservations',
      headers: { 'idempotency-key': newKey() },
      payload: { lines: [{ itemId: item, quantity: 6 }], allocation: { strategy: 'ordered', locations: ['wh-a', 'wh-b'], split: true } },
    });
    expect(res.json()).toMatchObject({ lines: [{ location: 'wh-a', quantity: 3 }, { location: 'wh-b', quantity: 3 }] });
    await t.app.runtime.writer.drain();
    expect((await reconcile(t.app.runtime.reconcileDeps, dryRun)).drift.filter((r) => r.itemId === item)).toEqual([]);

    const { redis, keys } = t.app.runtime;
    await redis.hset(keys.item(item).stock, stockField('reserved', 'wh-b'), 0);
    const report = await reconcile(t.app.runtime.reconcileDeps, dryRun);
    expect(report.drift.filter((r) => r.itemId === item)).toEqual([
      { itemId: item, location: 'wh-b', redis: { onHand: 5, reserved: 0, safetyStock: 0, holds: 1 }, postgres: { onHand: 5, reserved: 3, safetyStock: 0, holds: 1 } },
    ]);
    const repairedNow = await reconcile(t.app.runtime.reconcileDeps, repair);
    expect(repairedNow.repair?.corrected).toEqual([expect.objectContaining({ itemId: item, location: 'wh-b', after: expect.objectContaining({ reserved: 3 }) })]);
    expect((await reconcile(t.app.runtime.reconcileDeps, dryRun)).drift).toEqual([]);
  });

  it('rebuilds from PostgreSQL, as the last resort, drift a correction cannot fix: Redis of another generation', async () => {
    const item = newItem();
    await stockAndHold(item, 10, 3);
    const { redis, keys } = t.app.runtime;
    await redis.hset(keys.item(item).stock, stockField('onHand', 'default'), 42);
    const generation = await redis.get(keys.marker);
    await redis.set(keys.marker, '999'); // not PostgreSQL's: a correction leaves such a Redis alone

    const healOnly = await reconcile(t.app.runtime.reconcileDeps, { ...repair, rebuildOnDrift: false });
    expect(healOnly.repair).toMatchObject(repaired({ unhealed: [expect.objectContaining({ itemId: item })] }));
    expect(await redis.hget(keys.item(item).stock, stockField('onHand', 'default'))).toBe('42');

    const rebuilt = await reconcile(t.app.runtime.reconcileDeps, repair);
    expect(rebuilt.repair).toMatchObject(repaired({ unhealed: [expect.objectContaining({ itemId: item })], rebuilt: true }));
    expect(await redis.get(keys.marker)).not.toBe('999');
    expect(await redis.get(keys.marker)).not.toBe(generation);
    expect((await reconcile(t.app.runtime.reconcileDeps, dryRun)).drift).toEqual([]);
    const availability = await t.app.inject({ url: `/items/${item}/availability` });
    expect(availability.json()).toMatchObject({ onHand: 10, reserved: 3, available: 7 });
  });

  it('drops a hold Redis granted but PostgreSQL never recorded, without a rebuild', async () => {
    const item = newItem();
    await stockAndHold(item, 10, 2);
    const { redis, keys } = t.app.runtime;
    // What a process that died between the decision and the commit leaves behind: a hold 60 s old.
    const orphan = uuidv7({ msecs: Date.now() - 60_000 });
    const k = keys.item(item);
    const expiresAt = Date.now() + 600_000;
    const field = holdField(orphan, 'default');
    await redis.hset(k.holds, field, formatHold({ state: HoldState.pending, quantity: 4, expiresAtMs: expiresAt, version: 1 }));
    await redis.zadd(k.exp, expiresAt, field);
    await redis.hincrby(k.stock, stockField('reserved', 'default'), 4);

    const report = await reconcile(t.app.runtime.reconcileDeps, dryRun);
    expect(report.orphanHolds.map((o) => o.reservationId)).toEqual([orphan]);

    const repairedNow = await reconcile(t.app.runtime.reconcileDeps, repair);
    expect(repairedNow.repair).toEqual(repaired({ orphansDropped: 1 }));
    const availability = await t.app.inject({ url: `/items/${item}/availability` });
    expect(availability.json()).toMatchObject({ onHand: 10, reserved: 2, available: 8 });
  });

  it('leaves a young unrecorded hold alone: its request may still be committing', async () => {
    const item = newItem();
    await stockAndHold(item, 10, 1);
    const { redis, keys } = t.app.runtime;
    const young = holdField(uuidv7(), 'default');
    await redis.hset(keys.item(item).holds, young, formatHold({ state: HoldState.pending, quantity: 1, expiresAtMs: Date.now() + 600_000, version: 1 }));
    await redis.hincrby(keys.item(item).stock, stockField('reserved', 'default'), 1);
    const report = await reconcile(t.app.runtime.reconcileDeps, { ...dryRun, dropOrphans: true });
    expect(report.orphanHolds).toEqual([]);
    expect(report.repair).toEqual(
      repaired({
        unhealed: [{ itemId: item, location: 'default', redis: { onHand: 10, reserved: 2, holds: 2, safetyStock: 0 }, postgres: { onHand: 10, reserved: 1, holds: 1, safetyStock: 0 } }],
      }),
    );
    expect(await redis.hget(keys.item(item).holds, young)).not.toBeNull();
    // Clean up so other tests see no drift.
    await redis.hdel(keys.item(item).holds, young);
    await redis.hincrby(keys.item(item).stock, stockField('reserved', 'default'), -1);
  });

  it('finds an item only Redis knows: stocked there, never recorded in PostgreSQL', async () => {
    const item = newItem();
    const { decisions, redis, keys } = t.app.runtime;
    // What an increase applied without a record would leave (never the service's way): on-hand PostgreSQL never saw.
    const opId = uuidv7();
    const decided = await decisions.changeStock(item, 'default', 'set', 5, { opId, nodeId: t.app.runtime.lease.nodeId });
    if (decided.kind !== 'changed' || !decided.pending) throw new Error(`expected a pending increase: ${JSON.stringify(decided)}`);
    await decisions.endStockChange(item, 'apply', opId, decided);

    const report = await reconcile(t.app.runtime.reconcileDeps, dryRun);
    expect(report.drift).toContainEqual({
      itemId: item,
      location: 'default',
      redis: { onHand: 5, reserved: 0, holds: 0, safetyStock: 0 },
      postgres: { onHand: 0, reserved: 0, holds: 0, safetyStock: 0 },
    });
    // Clean up so other tests see no drift.
    await redis.del(keys.item(item).stock);
  });

  it('is served to operators at /admin/reconciliation', async () => {
    const res = await t.app.inject({ url: '/admin/reconciliation' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ strandedIntents: [], drift: [], orphanHolds: [], repair: null });
  });
});

/** A counter's value on the app's registry (0 when never counted). */
async function counter(app: TestApp, name: string): Promise<number> {
  const metric = await app.app.runtime.metrics.registry.getSingleMetric(name)?.get();
  return metric?.values.reduce((sum, v) => sum + v.value, 0) ?? 0;
}

describe('listing items', () => {
  it('reads the set of stocked items, never scanning the keyspace; a rebuild fills the set again', async () => {
    // A private Redis: SCAN counts are server-wide, and other test files share the local one.
    const server = await startRedis();
    const own = await startTestApp({ REDIS_URL: server.url, RECONCILE_INTERVAL_MS: 0 });
    try {
      const { redis, keys, recovery } = own.app.runtime;
      await recovery.ensure();
      const items = [newItem(), newItem()];
      for (const item of items) {
        expect((await own.app.inject({ method: 'PUT', url: `/items/${item}/stock`, payload: { quantity: 3 } })).statusCode).toBe(200);
      }
      expect((await redis.smembers(keys.items)).sort()).toEqual([...items].sort());

      await redis.config('RESETSTAT');
      const report = await reconcile(own.app.runtime.reconcileDeps, dryRun);
      expect(report).toMatchObject({ checkedItems: 2, drift: [] });
      const stats = await redis.info('commandstats');
      expect(stats).toContain('cmdstat_sscan');
      expect(stats).not.toMatch(/^cmdstat_scan:/m);

      await redis.flushall(); // Redis lost its state: the rebuild lists the items again
      await recovery.ensure();
      expect((await redis.smembers(keys.items)).sort()).toEqual([...items].sort());
    } finally {
      await own.close();
      await server.stop();
    }
  });
});
