import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { recordPrefix, recordSuffix } from '../../src/redis/layout.js';
import { newItem, newKey, startTestApp, type TestApp } from '../helpers/app.js';

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp({ RECONCILE_INTERVAL_MS: 0 });
});
afterAll(() => t.close());

const put = (item: string, quantity: number) =>
  t.app.inject({ method: 'PUT', url: `/items/${item}/stock`, payload: { quantity } });
const reserve = (item: string, quantity: number, ttlSeconds = 600) =>
  t.app.inject({
    method: 'POST',
    url: '/reservations',
    headers: { 'idempotency-key': newKey() },
    payload: { lines: [{ itemId: item, quantity }], ttlSeconds },
  });
const availability = async (item: string) => (await t.app.inject({ url: `/items/${item}/availability` })).json();

/** Wipes this app's Redis state, as FLUSHALL or a restart without persistence would. */
async function loseRedisState(): Promise<void> {
  const { redis, keys } = t.app.runtime;
  const stream = redis.scanStream({ match: `${keys.prefix}*`, count: 1000 });
  for await (const batch of stream as AsyncIterable<string[]>) if (batch.length) await redis.unlink(...batch);
}

async function waitReady(): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if ((await t.app.inject({ url: '/health/ready' })).statusCode === 200) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('never became ready');
}

describe('recovery after Redis lost its state', () => {
  it('fails closed, rebuilds stock and live holds from PostgreSQL, and serves the same state again', async () => {
    const item = newItem();
    await put(item, 20);
    const held = await reserve(item, 3);
    const confirmed = await reserve(item, 2);
    await t.app.inject({ method: 'POST', url: `/reservations/${confirmed.json().id}/confirm` });
    const released = await reserve(item, 4);
    await t.app.inject({ method: 'POST', url: `/reservations/${released.json().id}/release` });
    const before = await availability(item);
    expect(before).toMatchObject({ onHand: 18, reserved: 3, available: 15 });

    await loseRedisState();
    const during = await reserve(item, 1);
    expect(during.statusCode).toBe(503);
    expect(during.json()).toMatchObject({ code: 'unavailable' });

    await waitReady();
    expect(await availability(item)).toEqual(before);
    // The rebuilt hold is a real hold: it confirms.
    const confirm = await t.app.inject({ method: 'POST', url: `/reservations/${held.json().id}/confirm` });
    expect(confirm.json()).toMatchObject({ status: 'confirmed' });
    expect(await availability(item)).toMatchObject({ onHand: 15, reserved: 0, available: 15 });
  });

  it('fences out a decision made before the rebuild whose record arrives after it', async () => {
    const item = newItem();
    await put(item, 10);
    const { decisions, writer } = t.app.runtime;
    const now = Date.now();
    const id = '01890000-0000-7000-8000-000000000001';
    const lines = [{ itemId: item, location: 'default', quantity: 4 }];
    const decided = await decisions.reserve({
      reservationId: id,
      lines,
      ttlMs: 60_000,
      idempotencyKey: t.app.runtime.keys.idempotency('_', newKey()),
      recordPrefix: recordPrefix('hash', id),
      recordSuffix: recordSuffix('node'),
      recordTtlMs: 60_000,
      header: { reference: null, metadata: {}, lines, tenant: 'default' },
      lease: { key: t.app.runtime.lease.key, ttlMs: t.app.runtime.lease.ttlMs },
    });
    expect(decided.kind).toBe('held');
    if (decided.kind !== 'held') return;

    await loseRedisState();
    await t.app.runtime.recovery.ensure();

    const result = await writer.submit({
      kind: 'reserve',
      generation: decided.generation,
      reservation: {
        id,
        status: 'pending',
        reference: null,
        metadata: {},
        lines,
        expiresAt: new Date(now + 60_000),
        createdAt: new Date(now),
        updatedAt: new Date(now),
        tenant: 'default',
      },
      idempotency: { scope: '_', key: newKey(), requestHash: 'h', statusCode: 201, response: {} },
    });
    expect(result).toBe('stale');
    expect(await availability(item)).toMatchObject({ onHand: 10, reserved: 0 });
    const { rowCount } = await t.app.runtime.db.query('SELECT 1 FROM reservations WHERE id = $1', [id]);
    expect(rowCount).toBe(0);
  });

  it('lets exactly one of several nodes rebuild', async () => {
    const others = await Promise.all([1, 2].map(() => buildApp(t.config)));
    try {
      await Promise.all(others.map((a) => a.ready()));
      const nodes = [t.app, ...others];
      const rebuildCount = async () =>
        (await Promise.all(nodes.map(async (a) => (await a.runtime.metrics.rebuilds.get()).values[0]?.value ?? 0))).reduce(
          (x, y) => x + y,
          0,
        );
      const before = await rebuildCount();
      await loseRedisState();
      await Promise.all(nodes.map((a) => a.runtime.recovery.ensure()));
      // One rebuild for this loss: the other nodes waited for the marker.
      expect((await rebuildCount()) - before).toBe(1);
      expect(await t.app.runtime.redis.get(t.app.runtime.keys.marker)).not.toBeNull();
    } finally {
      await Promise.all(others.map((a) => a.close()));
    }
  });
});
