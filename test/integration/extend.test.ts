import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { holdField, parseHold } from '../../src/redis/layout.js';
import { HoldState } from '../../src/redis/status.js';
import { RecordError } from '../../src/store/writer.js';
import { Api, expectInvalidFields, expectProblem, expectReservation, outcome, range, startHttpApp, wipeRedisState } from '../helpers/api.js';
import { newItem, type TestApp } from '../helpers/app.js';
import { checkInvariants } from '../helpers/invariants.js';
import { GiveUp, untilTime, waitFor } from '../helpers/wait.js';

/**
 * api.md "Saga operations", **Extend**: `POST /reservations/{id}/extend` `{ "ttlSeconds": n }` moves a pending,
 * unexpired reservation's expiry to now + n (longer or shorter), version + 1, recorded in PostgreSQL before the
 * answer; expired, released, confirmed → 409; If-Match as on confirm and release. Extend racing expiry has one
 * outcome.
 */

describe('extend a reservation', () => {
  let t: TestApp;
  let api: Api;

  beforeAll(async () => {
    // No sweeper pass unless a test runs one.
    t = await startHttpApp({ SWEEPER_INTERVAL_MS: 3_600_000 });
    api = await Api.listen(t.app);
  });
  afterAll(async () => {
    await t?.close();
  });

  const pending = async (ttlSeconds = 600) => {
    const item = newItem('ext');
    await api.stock(item, 10);
    const r = await api.hold({ lines: [{ itemId: item, quantity: 2 }], ttlSeconds });
    return { item, r };
  };

  /** What Redis (hold and header) and PostgreSQL store of the reservation. */
  const stored = async (id: string, item: string) => {
    const { redis, keys, db } = t.app.runtime;
    const value = await redis.hget(keys.item(item).holds, holdField(id, 'default'));
    const score = await redis.zscore(keys.item(item).exp, holdField(id, 'default'));
    const header = await redis.hget(keys.reservation(id), 'expires');
    const { rows } = await db.query<{ status: string; version: number; expires_ms: number }>(
      'SELECT status, version, floor(extract(epoch FROM expires_at) * 1000)::float8 AS expires_ms FROM reservations WHERE id = $1',
      [id],
    );
    return {
      hold: value === null ? null : parseHold(value),
      score: score === null ? null : Number(score),
      header: header === null ? null : Number(header),
      row: rows[0],
    };
  };

  /** Redis' hold, its expiry score and the header, and PostgreSQL's row all say `expiresAt` and `version`. */
  const expectStoredAt = async (id: string, item: string, expiresAt: string, version: number) => {
    const ms = Date.parse(expiresAt);
    const s = await stored(id, item);
    expect(s.hold).toMatchObject({ state: HoldState.pending, expiresAtMs: ms, version });
    expect(s.score).toBe(ms);
    expect(s.header).toBe(ms);
    expect(s.row).toEqual({ status: 'pending', version, expires_ms: ms });
  };

  it('lengthens: now + ttlSeconds, version + 1, ETag, the same in GET, Redis and PostgreSQL', async () => {
    const { item, r } = await pending(60);
    const res = await api.extend(r.id, { ttlSeconds: 600 });
    const doc = expectReservation(res, 200);
    expect(res.headers.etag).toBe('"2"');
    expect(doc).toEqual({ ...r, expiresAt: doc.expiresAt, updatedAt: doc.updatedAt, version: 2 });
    expect(Date.parse(doc.expiresAt) - Date.parse(doc.updatedAt)).toBe(600_000);
    expect(Date.parse(doc.updatedAt)).toBeGreaterThanOrEqual(Date.parse(r.createdAt));
    expect(expectReservation(await api.get(r.id), 200)).toEqual(doc);
    await expectStoredAt(r.id, item, doc.expiresAt, 2);
    // Again: version 3.
    const again = expectReservation(await api.extend(r.id, { ttlSeconds: 86_400 }), 200);
    expect(again.version).toBe(3);
    expect(Date.parse(again.expiresAt) - Date.parse(again.updatedAt)).toBe(86_400_000);
    await expectStoredAt(r.id, item, again.expiresAt, 3);
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 2, available: 8 });
    await checkInvariants(t.app, [item]);
  });

  it('shortens: the reservation then expires at its new time, and answers 409 reservation_expired', async () => {
    const { item, r } = await pending(600);
    const doc = expectReservation(await api.extend(r.id, { ttlSeconds: 1 }), 200);
    expect(Date.parse(doc.expiresAt) - Date.parse(doc.updatedAt)).toBe(1_000);
    await expectStoredAt(r.id, item, doc.expiresAt, 2);
    await untilTime(doc.expiresAt);
    expectProblem(await api.extend(r.id, { ttlSeconds: 600 }), 'reservation_expired');
    expect(expectReservation(await api.get(r.id), 200)).toMatchObject({ status: 'expired', version: 3 });
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 0, available: 10 });
    expectProblem(await api.confirm(r.id), 'reservation_expired');
    await t.app.runtime.sweeper.runOnce();
    await checkInvariants(t.app, [item]);
    expect((await stored(r.id, item)).row).toEqual({ status: 'expired', version: 3, expires_ms: Date.parse(doc.expiresAt) });
  });

  it('409 reservation_released and reservation_confirmed, nothing changed', async () => {
    for (const [action, code] of [
      ['release', 'reservation_released'],
      ['confirm', 'reservation_confirmed'],
    ] as const) {
      const { item, r } = await pending();
      const ended = expectReservation(await api[action](r.id), 200);
      expectProblem(await api.extend(r.id, { ttlSeconds: 600 }), code);
      expect(expectReservation(await api.get(r.id), 200)).toEqual(ended);
      // Also on the PostgreSQL path (the header gone from Redis).
      await t.app.runtime.redis.del(t.app.runtime.keys.reservation(r.id));
      expectProblem(await api.extend(r.id, { ttlSeconds: 600 }), code);
      expect(expectReservation(await api.get(r.id), 200)).toEqual(ended);
      await checkInvariants(t.app, [item]);
    }
  });

  it('409 reservation_expired once its TTL passed, before and after the sweeper recorded it', async () => {
    const { item, r } = await pending(1);
    await untilTime(r.expiresAt);
    expectProblem(await api.extend(r.id, { ttlSeconds: 600 }), 'reservation_expired');
    await t.app.runtime.sweeper.runOnce();
    await t.app.runtime.writer.drain();
    await t.app.runtime.redis.del(t.app.runtime.keys.reservation(r.id));
    expectProblem(await api.extend(r.id, { ttlSeconds: 600 }), 'reservation_expired');
    expect((await stored(r.id, item)).row).toMatchObject({ status: 'expired', version: 2 });
  });

  it('404 for an unknown id', async () => {
    expectProblem(await api.extend('0190f0f0-0000-7000-8000-000000000000', { ttlSeconds: 60 }), 'reservation_not_found');
    expectProblem(await api.extend('no-such-id', { ttlSeconds: 60 }), 'reservation_not_found');
  });

  it('400 for ttlSeconds 0, 86401, missing, not an integer, or another field; 1 and 86400 are taken', async () => {
    const { item, r } = await pending();
    const bad: [unknown, string][] = [
      [{ ttlSeconds: 0 }, 'ttlSeconds'],
      [{ ttlSeconds: 86_401 }, 'ttlSeconds'],
      [{ ttlSeconds: 1.5 }, 'ttlSeconds'],
      [{ ttlSeconds: '600' }, 'ttlSeconds'],
      [{}, 'ttlSeconds'],
      [{ ttlSeconds: 60, extra: 1 }, 'extra'],
    ];
    for (const [body, field] of bad) {
      const res = await api.extend(r.id, body);
      expect(outcome(res), JSON.stringify(body)).toBe('400 validation_failed');
      expectInvalidFields(res, field);
    }
    expect(outcome(await api.extend(r.id, undefined))).toBe('400 validation_failed');
    await expectStoredAt(r.id, item, r.expiresAt, 1);
    expect(expectReservation(await api.extend(r.id, { ttlSeconds: 86_400 }), 200).version).toBe(2);
    expect(expectReservation(await api.extend(r.id, { ttlSeconds: 1 }), 200).version).toBe(3);
  });

  it('If-Match: another version → 412, nothing changed; malformed → 400; the current one or `*` → extended', async () => {
    const { item, r } = await pending();
    expectProblem(await api.extend(r.id, { ttlSeconds: 60 }, '"2"'), 'precondition_failed');
    for (const bad of ['1', '"0"', 'W/"1"', '""']) {
      const res = await api.extend(r.id, { ttlSeconds: 60 }, bad);
      expect(outcome(res), bad).toBe('400 validation_failed');
      expectInvalidFields(res, 'If-Match');
    }
    await expectStoredAt(r.id, item, r.expiresAt, 1);
    expect(expectReservation(await api.extend(r.id, { ttlSeconds: 60 }, '"1"'), 200).version).toBe(2);
    expectProblem(await api.extend(r.id, { ttlSeconds: 60 }, '"1"'), 'precondition_failed');
    expect(expectReservation(await api.extend(r.id, { ttlSeconds: 60 }, '*'), 200).version).toBe(3);
    // On the PostgreSQL path too, and against a confirm: an extension moved it to 3, so "2" is stale.
    await t.app.runtime.redis.del(t.app.runtime.keys.reservation(r.id));
    expectProblem(await api.extend(r.id, { ttlSeconds: 60 }, '"2"'), 'precondition_failed');
    expectProblem(await api.confirm(r.id, '"2"'), 'precondition_failed');
    expect(expectReservation(await api.extend(r.id, { ttlSeconds: 60 }, '"3"'), 200).version).toBe(4);
    expect(expectReservation(await api.confirm(r.id, '"4"'), 200).version).toBe(5);
    // Ended: a stale If-Match is 412, the current one its 409.
    expectProblem(await api.extend(r.id, { ttlSeconds: 60 }, '"4"'), 'precondition_failed');
    expectProblem(await api.extend(r.id, { ttlSeconds: 60 }, '"5"'), 'reservation_confirmed');
    await checkInvariants(t.app, [item]);
  });

  it('a record PostgreSQL did not commit: 503, and Redis is back at the old expiry and version', async () => {
    const { item, r } = await pending();
    const { writer } = t.app.runtime;
    const submit = writer.submit.bind(writer);
    writer.submit = (op) => (op.kind === 'extend' ? Promise.reject(new RecordError(false, new Error('test: not committed'))) : submit(op));
    try {
      expect(outcome(await api.extend(r.id, { ttlSeconds: 60 }))).toBe('503 unavailable');
    } finally {
      writer.submit = submit;
    }
    await expectStoredAt(r.id, item, r.expiresAt, 1);
    expect(expectReservation(await api.extend(r.id, { ttlSeconds: 60 }), 200).version).toBe(2);
    await checkInvariants(t.app, [item]);
  });

  it('a failed record of a shortening: held again if it expired meanwhile; 409 expired if its units were taken since', async () => {
    for (const taken of [false, true]) {
      const item = newItem('ext');
      await api.stock(item, 2);
      const r = await api.hold({ lines: [{ itemId: item, quantity: 2 }], ttlSeconds: 600 });
      const { writer } = t.app.runtime;
      const submit = writer.submit.bind(writer);
      writer.submit = async (op) => {
        if (op.kind !== 'extend') return submit(op);
        await untilTime(op.expiresAt.getTime() + 50); // the shortened hold expires in Redis, its units free
        if (taken) await api.hold({ lines: [{ itemId: item, quantity: 2 }] });
        throw new RecordError(false, new Error('test: not committed'));
      };
      let answer;
      try {
        answer = await api.extend(r.id, { ttlSeconds: 1 });
      } finally {
        writer.submit = submit;
      }
      if (taken) {
        expectProblem(answer, 'reservation_expired');
        expect(await api.at(item)).toMatchObject({ onHand: 2, reserved: 2 });
      } else {
        expect(outcome(answer)).toBe('503 unavailable');
        await expectStoredAt(r.id, item, r.expiresAt, 1);
        expect(await api.at(item)).toMatchObject({ onHand: 2, reserved: 2 });
      }
      await checkInvariants(t.app, [item]);
    }
  });

  it('PostgreSQL refusing the extension (pending at another version): 503, and Redis is back at the old expiry', async () => {
    const { item, r } = await pending();
    // As if a change PostgreSQL recorded had never reached Redis.
    await t.app.runtime.db.query('UPDATE reservations SET version = 5 WHERE id = $1', [r.id]);
    expect(outcome(await api.extend(r.id, { ttlSeconds: 60 }))).toBe('503 unavailable');
    const s = await stored(r.id, item);
    expect(s.hold).toMatchObject({ state: HoldState.pending, expiresAtMs: Date.parse(r.expiresAt), version: 1 });
    expect(s.score).toBe(Date.parse(r.expiresAt));
    expect(s.header).toBe(Date.parse(r.expiresAt));
    expect(s.row).toEqual({ status: 'pending', version: 5, expires_ms: Date.parse(r.expiresAt) });
  });

  it('after Redis lost its state and was rebuilt from PostgreSQL, the extended expiry and version stay', async () => {
    const { item, r } = await pending(60);
    const doc = expectReservation(await api.extend(r.id, { ttlSeconds: 3_600 }), 200);
    await wipeRedisState(t.app);
    await t.app.runtime.recovery.ensure();
    expect(expectReservation(await api.get(r.id), 200)).toEqual(doc);
    const { hold, score } = await stored(r.id, item);
    expect(hold).toMatchObject({ state: HoldState.pending, expiresAtMs: Date.parse(doc.expiresAt), version: 2 });
    expect(score).toBe(Date.parse(doc.expiresAt));
    expect(expectReservation(await api.extend(r.id, { ttlSeconds: 60 }, '"2"'), 200).version).toBe(3);
    await checkInvariants(t.app, [item]);
  });

  it('a confirm or release decided after an extension answers the extended expiry, whatever header it read', async () => {
    for (const action of ['confirm', 'release'] as const) {
      const { item, r } = await pending(60);
      const doc = expectReservation(await api.extend(r.id, { ttlSeconds: 600 }), 200);
      // As if the call had read the header just before the extension moved it.
      await t.app.runtime.redis.hset(t.app.runtime.keys.reservation(r.id), 'expires', Date.parse(r.expiresAt));
      const ended = expectReservation(await api[action](r.id), 200);
      expect(ended.expiresAt).toBe(doc.expiresAt);
      expect(expectReservation(await api.get(r.id), 200)).toEqual(ended);
      await checkInvariants(t.app, [item]);
    }
  });

  it('PostgreSQL records an extension only while pending at a version below the one decided', async () => {
    const { item, r } = await pending();
    const generation = (await t.app.runtime.redis.get(t.app.runtime.keys.marker))!;
    const at = new Date();
    const expiresAt = new Date(at.getTime() + 60_000);
    const op = (version: number) => t.app.runtime.writer.submit({ kind: 'extend', generation, reservationId: r.id, expiresAt, at, version });
    expect(await op(1)).toBe('conflict');
    expect((await stored(r.id, item)).row).toEqual({ status: 'pending', version: 1, expires_ms: Date.parse(r.expiresAt) });
    // A version above the next: an extension decided in Redis whose record never came is taken up by this one.
    expect(await op(3)).toBe('recorded');
    expect((await stored(r.id, item)).row).toEqual({ status: 'pending', version: 3, expires_ms: expiresAt.getTime() });
    expect(await op(2)).toBe('conflict'); // decided before the one recorded: too late
    // Not once it ended.
    const ended = await pending();
    expectReservation(await api.release(ended.r.id), 200);
    const late = { kind: 'extend' as const, generation, reservationId: ended.r.id, expiresAt, at, version: 5 };
    expect(await t.app.runtime.writer.submit(late)).toBe('conflict');
  });

  describe('an extension decided in Redis whose record never came (its node died first)', () => {
    /** What a node that died between its decision and its record leaves: the extension in Redis only. */
    const stranded = async (ttlSeconds: number, extendBy: number) => {
      const { item, r } = await pending(ttlSeconds);
      const decision = await t.app.runtime.decisions.extend(r.id, r.lines, extendBy);
      if (decision.kind !== 'extended') throw new Error(decision.kind);
      return { item, r, decision };
    };

    it('the next extension is recorded over it, at the version and expiry Redis decided', async () => {
      const { item, r } = await stranded(600, 30_000);
      const doc = expectReservation(await api.extend(r.id, { ttlSeconds: 120 }), 200);
      expect(doc.version).toBe(3);
      await expectStoredAt(r.id, item, doc.expiresAt, 3);
      expect(expectReservation(await api.get(r.id), 200)).toEqual(doc);
      await checkInvariants(t.app, [item]);
    });

    it('a confirm after it, past the expiry PostgreSQL had, is recorded with the expiry Redis held it to', async () => {
      const { item, r, decision } = await stranded(1, 30_000);
      await untilTime(Date.parse(r.expiresAt) + 50);
      const doc = expectReservation(await api.confirm(r.id), 200);
      expect(doc).toMatchObject({ status: 'confirmed', version: 3, expiresAt: new Date(decision.expiresMs).toISOString() });
      expect(expectReservation(await api.get(r.id), 200)).toEqual(doc);
      await checkInvariants(t.app, [item]);
    });

    it('one that shortened the hold: the sweeper records the expiry at the time Redis expired it', async () => {
      const { item, r, decision } = await stranded(600, 200);
      await untilTime(decision.expiresMs + 50);
      expectProblem(await api.confirm(r.id), 'reservation_expired');
      // PostgreSQL still has the old expiry; once the sweeper looks, it records Redis' (the units were free since).
      await t.app.runtime.db.query('UPDATE reservations SET expires_at = now() - interval \'1 second\' WHERE id = $1', [r.id]);
      await t.app.runtime.sweeper.runOnce();
      const doc = expectReservation(await api.get(r.id), 200);
      expect(doc).toMatchObject({ status: 'expired', version: 3, expiresAt: new Date(decision.expiresMs).toISOString() });
      await checkInvariants(t.app, [item]);
    });
  });

  it('the sweeper never expires a reservation whose extension was recorded', async () => {
    const { item, r } = await pending(2);
    const doc = expectReservation(await api.extend(r.id, { ttlSeconds: 600 }), 200);
    await untilTime(r.expiresAt);
    await t.app.runtime.sweeper.runOnce();
    await expectStoredAt(r.id, item, doc.expiresAt, 2);
    // An expiry decided from the old expiry (a sweeper that read the row before the extension) is refused.
    const generation = await t.app.runtime.redis.get(t.app.runtime.keys.marker);
    const result = await t.app.runtime.writer.submit({
      kind: 'transition',
      generation: generation!,
      reservationId: r.id,
      to: 'expired',
      at: new Date(r.expiresAt),
      lines: r.lines,
    });
    expect(result).toBe('conflict');
    await expectStoredAt(r.id, item, doc.expiresAt, 2);
    expect(expectReservation(await api.get(r.id), 200)).toEqual(doc);
  });

  it('120 reservations hit by extend, confirm and release around their expiry: one outcome each, stores agree', async () => {
    const items = range(4).map(() => newItem('ext-race'));
    for (const item of items) await api.stock(item, 1_000);
    const itemAt = (n: number) => items[n % items.length]!;
    const reservations = await Promise.all(
      range(120).map((n) => api.hold({ lines: [{ itemId: itemAt(n), quantity: 1 }, { itemId: itemAt(n + 1), quantity: 2 }], ttlSeconds: 1 })),
    );
    const runs = await Promise.all(
      reservations.map(async (r, n) => {
        // Each call at its own time around the expiry, from 120 ms before to 20 ms after (a call takes some ms to
        // arrive), so that each of them comes first, and the TTL passes first, for some reservations.
        const at = (k: number) => untilTime(Date.parse(r.expiresAt) + (((n * 3 + k * 5) % 8) - 6) * 20);
        const calls = [
          at(n % 3).then(() => api.extend(r.id, { ttlSeconds: 1 + (n % 2) })).then((a) => ['extend', a] as const),
          at((n + 1) % 3).then(() => api.confirm(r.id)).then((a) => ['confirm', a] as const),
          at((n + 2) % 3).then(() => api.release(r.id)).then((a) => ['release', a] as const),
        ];
        const answers = Object.fromEntries(await Promise.all(calls));
        return { r, answers };
      }),
    );
    const finals: Record<string, number> = {};
    for (const { r, answers } of runs) {
      const { extend, confirm, release } = answers as Record<'extend' | 'confirm' | 'release', Awaited<ReturnType<Api['get']>>>;
      const final = expectReservation(await api.get(r.id), 200);
      const label = `${r.id}: extend ${outcome(extend)}, confirm ${outcome(confirm)}, release ${outcome(release)} → ${final.status}`;
      expect(['confirmed', 'released', 'expired'], label).toContain(final.status);
      finals[final.status] = (finals[final.status] ?? 0) + 1;
      // Each answer says the final state: a 200 of confirm or release is it, a 409 names it.
      if (confirm.status === 200) expect(expectReservation(confirm, 200), label).toEqual(final);
      else expectProblem(confirm, final.status === 'released' ? 'reservation_released' : 'reservation_expired');
      if (release.status === 200) expect(expectReservation(release, 200), label).toEqual(final);
      else expectProblem(release, 'reservation_confirmed');
      expect(confirm.status === 200 && release.status === 200 && final.status !== 'confirmed', label).toBe(false);
      if (extend.status === 200) {
        // Extended while pending: a confirm or release ended it after, at the version after the extension's.
        const extended = expectReservation(extend, 200);
        expect(extended.version, label).toBe(2);
        expect(final.version, label).toBe(3);
        expect(final.status, label).not.toBe('expired');
      } else {
        expectProblem(extend, `reservation_${final.status}` as 'reservation_confirmed' | 'reservation_released' | 'reservation_expired');
        expect(final.version, label).toBe(2);
      }
    }
    expect(Object.values(finals).reduce((a, b) => a + b, 0)).toBe(120);
    await t.app.runtime.sweeper.runOnce();
    await checkInvariants(t.app, items);
  });
});

describe('extend with concurrent group commits (WRITER_CONCURRENCY 2)', () => {
  let t: TestApp;
  let api: Api;

  beforeAll(async () => {
    t = await startHttpApp({ SWEEPER_INTERVAL_MS: 3_600_000, WRITER_CONCURRENCY: 2 });
    api = await Api.listen(t.app);
  });
  afterAll(async () => {
    await t?.close();
  });

  it("a reservation's changes commit in the order decided: none while a batch in flight records it", async () => {
    const item = newItem('ext-order');
    await api.stock(item, 10);
    const [r, s] = [await api.hold({ lines: [{ itemId: item, quantity: 1 }] }), await api.hold({ lines: [{ itemId: item, quantity: 1 }] })];
    const { writer, redis, keys, db } = t.app.runtime;
    const generation = (await redis.get(keys.marker))!;
    const lockWaits = async () =>
      Number(
        (
          await db.query<{ n: string }>(
            // The batch statement (its text is cut to its first kilobyte here).
            "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%WITH fence AS%' AND datname = current_database()",
          )
        ).rows[0]!.n,
      );

    // The first batch (r's extension) waits on r's row, which another transaction holds.
    const locker = await db.connect();
    let done = false;
    try {
      await locker.query('BEGIN');
      await locker.query('SELECT FROM reservations WHERE id = $1 FOR UPDATE', [r.id]);
      const extendAt = new Date();
      const extension = writer.submit({
        kind: 'extend',
        generation,
        reservationId: r.id,
        expiresAt: new Date(extendAt.getTime() + 60_000),
        at: extendAt,
        version: 2,
      });
      await waitFor('the extension waiting on the row', async () => ((await lockWaits()) === 1 ? true : undefined));
      const release = writer.submit({ kind: 'transition', generation, reservationId: r.id, to: 'released', at: new Date(), lines: r.lines });
      const other = writer.submit({ kind: 'transition', generation, reservationId: s.id, to: 'released', at: new Date(), lines: s.lines });
      // The second batch takes s's release only: r's waits for the extension's batch (else it would wait on the row too).
      const blocked = waitFor('a second batch waiting on the row', async () => {
        if (done) throw new GiveUp('done');
        return (await lockWaits()) >= 2 ? ('a second batch waits on r' as const) : undefined;
      }).catch(() => 'no second wait' as const);
      expect(await Promise.race([other, blocked])).toBe('recorded');
      done = true;
      expect(await lockWaits()).toBe(1);
      await locker.query('COMMIT');
      expect(await extension).toBe('recorded');
      expect(await release).toBe('recorded');
    } finally {
      done = true;
      await locker.query('ROLLBACK').catch(() => undefined);
      locker.release();
    }
    const { rows } = await db.query<{ status: string; version: number }>('SELECT status, version FROM reservations WHERE id = $1', [r.id]);
    expect(rows[0]).toEqual({ status: 'released', version: 3 });
  });
});
