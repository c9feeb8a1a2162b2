import { describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { recordPrefix, recordSuffix } from '../../src/redis/layout.js';
import { expectProblem, useHttpApp, waitReady, wipeRedisState } from '../helpers/api.js';
import { newItem, newKey } from '../helpers/app.js';
import { documentAfter } from '../helpers/documents.js';

const { t, api } = useHttpApp({ RECONCILE_INTERVAL_MS: 0 });

const reserve = (item: string, quantity: number) => api.hold({ lines: [{ itemId: item, quantity }], ttlSeconds: 600 });
/** Wipes this app's Redis state, as FLUSHALL or a restart without persistence would. */
const loseRedisState = () => wipeRedisState(t.app);

describe('recovery after Redis lost its state', () => {
  it('fails closed, rebuilds stock and live holds from PostgreSQL, and serves the same state again', async () => {
    const item = newItem();
    await api.stock(item, 20);
    const held = await reserve(item, 3);
    const confirmed = await reserve(item, 2);
    expect((await api.confirm(confirmed.id)).status).toBe(200);
    const released = await reserve(item, 4);
    expect((await api.release(released.id)).status).toBe(200);
    const before = await api.figures(item);
    expect(before).toMatchObject({ onHand: 18, reserved: 3, available: 15 });

    await loseRedisState();
    const during = await api.reserve({ lines: [{ itemId: item, quantity: 1 }], ttlSeconds: 600 });
    expectProblem(during, 'unavailable');

    await waitReady(t.app);
    expect(await api.figures(item)).toEqual(before);
    // The rebuilt hold is a real hold: it confirms.
    const confirm = await api.confirm(held.id);
    expect(confirm.body).toMatchObject({ status: 'confirmed' });
    expect(await api.figures(item)).toMatchObject({ onHand: 15, reserved: 0, available: 15 });
  });

  it('fences out a decision made before the rebuild whose record arrives after it', async () => {
    const item = newItem();
    await api.stock(item, 10);
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
      header: { reference: null, metadata: {}, tenant: 'default', allocation: null },
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
        priority: 'normal',
        lines,
        expiresAt: new Date(now + 60_000),
        createdAt: new Date(now),
        updatedAt: new Date(now),
        tenant: 'default',
        allocation: null,
        version: 1,
      },
      idempotency: {
        scope: '_',
        key: newKey(),
        requestHash: 'h',
        statusCode: 201,
        response: documentAfter({ id, lines, status: 'pending', at: new Date(now), version: 1 }),
      },
    });
    expect(result).toBe('stale');
    expect(await api.figures(item)).toMatchObject({ onHand: 10, reserved: 0 });
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
