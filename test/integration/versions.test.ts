import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { holdField, parseHold } from '../../src/redis/layout.js';
import { HoldState } from '../../src/redis/status.js';
import { Api, expectInvalidFields, expectProblem, expectReservation, outcome, range, startHttpApp, wipeRedisState } from '../helpers/api.js';
import { newItem, newKey, type TestApp } from '../helpers/app.js';
import { checkInvariants } from '../helpers/invariants.js';
import { untilTime } from '../helpers/wait.js';

/**
 * api.md "Saga operations", **Versions**: `version` on every reservation document (1 when created, +1 on every
 * change), `ETag: "<version>"` on every answer that is one reservation document, and `If-Match` on confirm and
 * release: another version → 412 precondition_failed and nothing changes, a repeat of the same call answers by its
 * idempotent rule first, a malformed one → 400.
 */

describe('reservation versions, ETag and If-Match', () => {
  let t: TestApp;
  let api: Api;

  beforeAll(async () => {
    // No sweeper pass unless a test runs one: an expiry reads expired before it is recorded.
    t = await startHttpApp({ SWEEPER_INTERVAL_MS: 3_600_000 });
    api = await Api.listen(t.app);
  });
  afterAll(async () => {
    await t?.close();
  });

  /** A stocked item and a pending reservation of 2 of its units. */
  const pending = async (ttlSeconds = 600) => {
    const item = newItem('ver');
    await api.stock(item, 10);
    const r = await api.hold({ lines: [{ itemId: item, quantity: 2 }], ttlSeconds });
    return { item, r };
  };

  /** What Redis and PostgreSQL store of the reservation: its hold and its row. */
  const stored = async (id: string, item: string) => {
    const { redis, keys, db } = t.app.runtime;
    const value = await redis.hget(keys.item(item).holds, holdField(id, 'default'));
    const { rows } = await db.query<{ status: string; version: number }>('SELECT status, version FROM reservations WHERE id = $1', [id]);
    return { hold: value === null ? null : parseHold(value), row: rows[0] };
  };

  it('version 1 when created, on the 201, its replay and GET, each with its ETag', async () => {
    const item = newItem('ver');
    await api.stock(item, 10);
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 1 }] };
    const created = expectReservation(await api.reserve(body, key), 201);
    expect(created.version).toBe(1);
    const replay = await api.reserve(body, key);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(expectReservation(replay, 201)).toEqual(created);
    expect(expectReservation(await api.get(created.id), 200).version).toBe(1);
    expect((await stored(created.id, item)).row).toEqual({ status: 'pending', version: 1 });
  });

  it('a first answer recorded before versions existed replays at version 1, with its ETag', async () => {
    const item = newItem('ver');
    await api.stock(item, 10);
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 1 }] };
    const created = expectReservation(await api.reserve(body, key), 201);
    await t.app.runtime.db.query("UPDATE idempotency_keys SET response = (response::jsonb - 'version')::text WHERE reservation_id = $1", [created.id]);
    expect(expectReservation(await api.reserve(body, key), 201)).toEqual(created);
  });

  it('+1 on confirm and on release, in the answer, its ETag, GET, Redis and PostgreSQL', async () => {
    for (const action of ['confirm', 'release'] as const) {
      const { item, r } = await pending();
      const done = expectReservation(await api[action](r.id), 200);
      expect(done.version).toBe(2);
      expect(expectReservation(await api.get(r.id), 200).version).toBe(2);
      const { hold, row } = await stored(r.id, item);
      expect(hold?.version).toBe(2);
      expect(row).toEqual({ status: action === 'confirm' ? 'confirmed' : 'released', version: 2 });
      // A repeat changes nothing: still 2.
      expect(expectReservation(await api[action](r.id), 200).version).toBe(2);
    }
  });

  it('an expiry is +1 at once, before the sweeper records it, and the same after', async () => {
    const { item, r } = await pending(1);
    await untilTime(r.expiresAt);
    const read = expectReservation(await api.get(r.id), 200);
    expect(read).toMatchObject({ status: 'expired', version: 2 });
    expect((await stored(r.id, item)).row).toEqual({ status: 'pending', version: 1 });
    // Releasing it answers it expired, at its expiry's version; Redis' hold has expired at that version.
    expect(expectReservation(await api.release(r.id, '"2"'), 200)).toEqual(read);
    expect((await stored(r.id, item)).hold).toMatchObject({ state: HoldState.expired, version: 2 });

    await t.app.runtime.sweeper.runOnce();
    await t.app.runtime.writer.drain();
    expect((await stored(r.id, item)).row).toEqual({ status: 'expired', version: 2 });
    expect(expectReservation(await api.get(r.id), 200)).toEqual(read);
    await checkInvariants(t.app, [item]);
  });

  it('If-Match naming the current version: the call happens', async () => {
    for (const action of ['confirm', 'release'] as const) {
      const { r } = await pending();
      expect(expectReservation(await api[action](r.id, '"1"'), 200)).toMatchObject({
        status: action === 'confirm' ? 'confirmed' : 'released',
        version: 2,
      });
    }
  });

  it('If-Match naming another version: 412 precondition_failed, nothing changed in Redis or PostgreSQL', async () => {
    for (const action of ['confirm', 'release'] as const) {
      const { item, r } = await pending();
      const before = await stored(r.id, item);
      for (const stale of ['"2"', '"7"']) {
        const problem = expectProblem(await api[action](r.id, stale), 'precondition_failed');
        expect(problem.detail).toContain('version 1');
      }
      expect(await stored(r.id, item)).toEqual(before);
      expect(before.hold).toMatchObject({ state: HoldState.pending, version: 1 });
      expect(await api.at(item)).toEqual({ onHand: 10, reserved: 2, available: 8 });
      expect(expectReservation(await api.get(r.id), 200)).toEqual(r);
    }
  });

  it('a repeat of a call that happened answers by its idempotent rule first, whatever its If-Match', async () => {
    const { r: sold } = await pending();
    const confirmed = expectReservation(await api.confirm(sold.id), 200);
    expect(expectReservation(await api.confirm(sold.id, '"1"'), 200)).toEqual(confirmed);
    const { r: freed } = await pending();
    const released = expectReservation(await api.release(freed.id), 200);
    expect(expectReservation(await api.release(freed.id, '"1"'), 200)).toEqual(released);
  });

  it('another call on an ended reservation: 412 for a stale If-Match, its usual answer for the current one', async () => {
    const { r: sold } = await pending();
    await api.confirm(sold.id);
    expectProblem(await api.release(sold.id, '"1"'), 'precondition_failed');
    expectProblem(await api.release(sold.id, '"2"'), 'reservation_confirmed');
    const { r: freed } = await pending();
    await api.release(freed.id);
    expectProblem(await api.confirm(freed.id, '"1"'), 'precondition_failed');
    expectProblem(await api.confirm(freed.id, '"2"'), 'reservation_released');
    const { r: lapsed } = await pending(1);
    await untilTime(lapsed.expiresAt);
    expectProblem(await api.confirm(lapsed.id, '"1"'), 'precondition_failed');
    expectProblem(await api.confirm(lapsed.id, '"2"'), 'reservation_expired');
    expectProblem(await api.release(lapsed.id, '"1"'), 'precondition_failed');
    expect(expectReservation(await api.release(lapsed.id, '"2"'), 200)).toMatchObject({ status: 'expired', version: 2 });
  });

  it('a malformed If-Match: 400 naming the header, nothing changed; `*` matches any version', async () => {
    const { item, r } = await pending();
    for (const action of ['confirm', 'release'] as const) {
      for (const bad of ['1', '"0"', '"-1"', '"01"', '"1.0"', '"abc"', 'W/"1"', '"1", "2"', '""', '"1234567890123456"']) {
        const res = await api[action](r.id, bad);
        expect(outcome(res), `${action} If-Match: ${bad}`).toBe('400 validation_failed');
        expectInvalidFields(res, 'If-Match');
      }
    }
    expect((await stored(r.id, item)).row).toEqual({ status: 'pending', version: 1 });
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 2, available: 8 });
    expect(expectReservation(await api.confirm(r.id, '*'), 200).version).toBe(2);
    // A malformed one is refused before anything else: also for an id that names nothing.
    expect(outcome(await api.release('no-such-id', 'W/"1"'))).toBe('400 validation_failed');
  });

  it('Redis without the reservation header (PostgreSQL read first): the settle script still decides If-Match', async () => {
    const { item, r } = await pending();
    await t.app.runtime.redis.del(t.app.runtime.keys.reservation(r.id));
    const before = await stored(r.id, item);
    expectProblem(await api.confirm(r.id, '"2"'), 'precondition_failed');
    expect(await stored(r.id, item)).toEqual(before);
    expect(expectReservation(await api.confirm(r.id, '"1"'), 200).version).toBe(2);
  });

  it('after Redis lost its state and was rebuilt from PostgreSQL, every version is the same', async () => {
    const { item, r: live } = await pending();
    const sold = await api.hold({ lines: [{ itemId: item, quantity: 1 }] });
    await api.confirm(sold.id);
    await t.app.runtime.writer.drain();
    const before = await Promise.all([live.id, sold.id].map(async (id) => expectReservation(await api.get(id), 200)));

    await wipeRedisState(t.app);
    await t.app.runtime.recovery.ensure();

    expect(await Promise.all([live.id, sold.id].map(async (id) => expectReservation(await api.get(id), 200)))).toEqual(before);
    expect((await stored(live.id, item)).hold).toMatchObject({ state: HoldState.pending, version: 1 });
    expectProblem(await api.confirm(live.id, '"2"'), 'precondition_failed');
    expect(expectReservation(await api.confirm(live.id, '"1"'), 200).version).toBe(2);
    await checkInvariants(t.app, [item]);
  });

  it('100 reservations each hit at once by confirm and release with If-Match "1": exactly one wins each', async () => {
    const items = range(4).map(() => newItem('ver-race'));
    for (const item of items) await api.stock(item, 1_000);
    const itemAt = (n: number) => items[n % items.length]!;
    const reservations = await Promise.all(
      range(100).map((n) => api.hold({ lines: [{ itemId: itemAt(n), quantity: 1 }, { itemId: itemAt(n + 1), quantity: 2 }] })),
    );
    // Every other reservation also gets a duplicate of its confirm: that one answers by its idempotent rule.
    const answers = await Promise.all(
      reservations.map(async (r, n) => {
        const calls = [
          api.confirm(r.id, '"1"').then((a) => ['confirm', a] as const),
          api.release(r.id, '"1"').then((a) => ['release', a] as const),
          ...(n % 2 === 0 ? [api.confirm(r.id, '"1"').then((a) => ['confirm', a] as const)] : []),
        ];
        return { r, results: await Promise.all(calls) };
      }),
    );
    const wins = { confirm: 0, release: 0 };
    for (const { r, results } of answers) {
      const won = results.filter(([, a]) => a.status === 200);
      const lost = results.filter(([, a]) => a.status !== 200);
      const winner = won[0]?.[0];
      expect(winner, `${r.id}: ${results.map(([op, a]) => `${op} ${outcome(a)}`).join(', ')}`).toBeDefined();
      // Every 200 is the same operation, with the same document at version 2; every other answer is a 412.
      expect(won.every(([op]) => op === winner)).toBe(true);
      const docs = won.map(([, a]) => expectReservation(a, 200));
      for (const doc of docs) expect(doc).toEqual({ ...docs[0], status: winner === 'confirm' ? 'confirmed' : 'released', version: 2 });
      for (const [op, a] of lost) {
        expect(op).not.toBe(winner);
        expectProblem(a, 'precondition_failed');
      }
      wins[winner!]++;
      expect(expectReservation(await api.get(r.id), 200).version).toBe(2);
    }
    expect(wins.confirm + wins.release).toBe(100);
    await checkInvariants(t.app, items);
  });
});
