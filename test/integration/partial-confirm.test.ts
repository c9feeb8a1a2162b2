import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { holdField, parseHold } from '../../src/redis/layout.js';
import { HoldState } from '../../src/redis/status.js';
import { RecordError } from '../../src/store/writer.js';
import { Api, expectProblem, expectReservation, outcome, range, startHttpApp, wipeRedisState, type Answer } from '../helpers/api.js';
import { newItem, type TestApp } from '../helpers/app.js';
import { checkInvariants } from '../helpers/invariants.js';
import { untilTime } from '../helpers/wait.js';

/**
 * api.md "Saga operations", **Partial confirm**, against the real stores: the units sold and released are decided
 * in one step and recorded before the answer; a record that fails is undone without holding units someone else
 * took meanwhile; Redis rebuilt from PostgreSQL keeps it; and it races extend, release and the TTL with one outcome.
 */
describe('partial confirm', () => {
  let t: TestApp;
  let api: Api;

  beforeAll(async () => {
    // No sweeper pass unless a test runs one; an unrecorded confirm is taken as dead 1 s past its TTL.
    t = await startHttpApp({ SWEEPER_INTERVAL_MS: 3_600_000, UNRECORDED_GRACE_MS: 1_000 });
    api = await Api.listen(t.app);
  });
  afterAll(async () => {
    await t?.close();
  });

  /** 4 of `item` held (of 10 on hand), by a reservation of one line. */
  const pending = async (ttlSeconds = 600) => {
    const item = newItem('pc');
    await api.stock(item, 10);
    const r = await api.hold({ lines: [{ itemId: item, quantity: 4 }], ttlSeconds });
    return { item, r };
  };

  const hold = async (id: string, item: string) => {
    const value = await t.app.runtime.redis.hget(t.app.runtime.keys.item(item).holds, holdField(id, 'default'));
    return value === null ? null : parseHold(value);
  };

  /** Fails every confirm's record once (not committed), after `meanwhile` ran. */
  const failingConfirm = async <T>(meanwhile: () => Promise<unknown>, run: () => Promise<T>): Promise<T> => {
    const { writer } = t.app.runtime;
    const submit = writer.submit.bind(writer);
    writer.submit = async (op) => {
      if (op.kind !== 'transition' || op.to !== 'confirmed') return submit(op);
      await meanwhile();
      throw new RecordError(false, new Error('test: not committed'));
    };
    try {
      return await run();
    } finally {
      writer.submit = submit;
    }
  };

  it('a record PostgreSQL did not commit: 503, and Redis holds every unit again, as before', async () => {
    const { item, r } = await pending();
    const answer = await failingConfirm(
      async () => undefined,
      () => api.confirm(r.id, undefined, { lines: [{ itemId: item, quantity: 1 }] }),
    );
    expect(outcome(answer)).toBe('503 unavailable');
    expect(await hold(r.id, item)).toMatchObject({ state: HoldState.pending, quantity: 4, version: 1 });
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 4, available: 6 });
    expect(expectReservation(await api.get(r.id), 200)).toEqual(r);
    const doc = expectReservation(await api.confirm(r.id, undefined, { lines: [{ itemId: item, quantity: 1 }] }), 200);
    expect(doc.lines).toEqual([{ itemId: item, location: 'default', quantity: 4, confirmedQuantity: 1 }]);
    expect(await api.at(item)).toEqual({ onHand: 9, reserved: 0, available: 9 });
    await checkInvariants(t.app, [item]);
  });

  it('a failed record whose released units were taken meanwhile is not undone (no unit held twice); the sweeper ends it', async () => {
    const { item, r } = await pending(2);
    // The confirm sells 1 and frees 3; before its record fails, another reservation takes every free unit.
    let other: string | undefined;
    const answer = await failingConfirm(
      async () => {
        other = (await api.hold({ lines: [{ itemId: item, quantity: 9 }] })).id;
      },
      () => api.confirm(r.id, undefined, { lines: [{ itemId: item, quantity: 1 }] }),
    );
    expect(outcome(answer)).toBe('503 unavailable');
    expect(other).toBeDefined();
    // Holding the 4 again would hold 13 of the 9 left on hand: the hold stays as decided, sold.
    expect(await hold(r.id, item)).toMatchObject({ state: HoldState.confirmed, quantity: 1 });
    expect(await api.at(item)).toEqual({ onHand: 9, reserved: 9, available: 0 });
    // PostgreSQL never recorded the confirm: past the TTL and the grace, the sweeper records the expiry and gives the
    // sold unit back.
    await untilTime(Date.parse(r.expiresAt) + 1_100);
    await t.app.runtime.sweeper.runOnce();
    expect(expectReservation(await api.get(r.id), 200)).toMatchObject({ status: 'expired', version: 2 });
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 9, available: 1 });
    await checkInvariants(t.app, [item]);
  });

  it('after Redis lost its state and was rebuilt from PostgreSQL, the sold and released units stay as confirmed', async () => {
    const { item, r } = await pending();
    const doc = expectReservation(await api.confirm(r.id, undefined, { lines: [{ itemId: item, quantity: 3 }] }), 200);
    await wipeRedisState(t.app);
    await t.app.runtime.recovery.ensure();
    expect(expectReservation(await api.get(r.id), 200)).toEqual(doc);
    expect(await api.at(item)).toEqual({ onHand: 7, reserved: 0, available: 7 });
    expect(expectReservation(await api.confirm(r.id, undefined, { lines: [{ itemId: item, quantity: 1 }] }), 200)).toEqual(doc);
    await checkInvariants(t.app, [item]);
  });

  it('the ledger records the units sold as a confirm and the rest as a release, per line', async () => {
    const { item, r } = await pending();
    expectReservation(await api.confirm(r.id, undefined, { lines: [{ itemId: item, quantity: 3 }] }), 200);
    const { rows } = await t.app.runtime.db.query<{ kind: string; on_hand_delta: string; reserved_delta: string }>(
      'SELECT kind, on_hand_delta, reserved_delta FROM stock_movements WHERE reservation_id = $1 ORDER BY id',
      [r.id],
    );
    expect(rows.map((m) => [m.kind, Number(m.on_hand_delta), Number(m.reserved_delta)])).toEqual([
      ['reserve', 0, 4],
      ['confirm', -3, -3],
      ['release', 0, -1],
    ]);
  });

  it('120 reservations hit by partial confirm, extend and release around their TTL: one outcome each, stores agree', async () => {
    const items = range(4).map(() => newItem('pc-race'));
    for (const item of items) await api.stock(item, 1_000);
    const itemAt = (n: number) => items[n % items.length]!;
    // A TTL of 3 s: making 120 holds takes over a second on a busy machine, and each must still be live when the
    // calls on it start.
    const reservations = await Promise.all(
      range(120).map((n) => api.hold({ lines: [{ itemId: itemAt(n), quantity: 2 }, { itemId: itemAt(n + 1), quantity: 3 }], ttlSeconds: 3 })),
    );
    const sold = (n: number) => 1 + (n % 3);
    const runs = await Promise.all(
      reservations.map(async (r, n) => {
        // Each call at its own time around the expiry, from 300 ms before to 50 ms after, so that each of them comes
        // first, and the TTL passes first, for some reservations (wide enough that a busy machine's stalls do not
        // push every call past the expiry).
        const at = (k: number) => untilTime(Date.parse(r.expiresAt) + (((n * 3 + k * 5) % 8) - 6) * 50);
        const [extend, confirm, release] = await Promise.all([
          at(n % 3).then(() => api.extend(r.id, { ttlSeconds: 1 })),
          at((n + 1) % 3).then(() => api.confirm(r.id, undefined, { lines: [{ itemId: itemAt(n + 1), quantity: sold(n) }] })),
          at((n + 2) % 3).then(() => api.release(r.id)),
        ]);
        return { r, n, extend: extend as Answer, confirm: confirm as Answer, release: release as Answer };
      }),
    );
    const finals: Record<string, number> = {};
    for (const { r, n, extend, confirm, release } of runs) {
      const final = expectReservation(await api.get(r.id), 200);
      const label = `${r.id}: extend ${outcome(extend)}, confirm ${outcome(confirm)}, release ${outcome(release)} → ${final.status}`;
      expect(['confirmed', 'released', 'expired'], label).toContain(final.status);
      finals[final.status] = (finals[final.status] ?? 0) + 1;
      if (confirm.status === 200) {
        expect(expectReservation(confirm, 200), label).toEqual(final);
        expect(final.lines.map((l) => l.confirmedQuantity), label).toEqual([0, sold(n)]);
      } else {
        expectProblem(confirm, final.status === 'released' ? 'reservation_released' : 'reservation_expired');
      }
      if (release.status === 200) expect(expectReservation(release, 200), label).toEqual(final);
      else expectProblem(release, 'reservation_confirmed');
      expect(final.version, label).toBe(extend.status === 200 ? 3 : 2);
      if (extend.status !== 200) {
        expectProblem(extend, `reservation_${final.status}` as 'reservation_confirmed' | 'reservation_released' | 'reservation_expired');
      }
    }
    expect(Object.values(finals).reduce((a, b) => a + b, 0)).toBe(120);
    expect(finals.confirmed ?? 0, JSON.stringify(finals)).toBeGreaterThan(0);
    await t.app.runtime.sweeper.runOnce();
    await checkInvariants(t.app, items);
  });
});
