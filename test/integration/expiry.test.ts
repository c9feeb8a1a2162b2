import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { holdField, parseHold } from '../../src/redis/layout.js';
import { HoldState } from '../../src/redis/status.js';
import { Api, availabilityOf, outcome, range, reservationOf, startHttpApp } from '../helpers/api.js';
import { newItem, newKey, type TestApp } from '../helpers/app.js';
import { checkInvariants } from '../helpers/invariants.js';
import { waitForLockWait } from '../helpers/sessions.js';
import { untilTime, waitFor } from '../helpers/wait.js';

/** I3: a pending reservation stops holding stock the instant its TTL passes and can no longer be confirmed. */

describe('expiry (I3)', () => {
  let t: TestApp;
  let api: Api;

  beforeAll(async () => {
    // Two writer slots: the late-release test parks one batch on a row lock per slot.
    t = await startHttpApp({ SWEEPER_INTERVAL_MS: 100, WRITER_CONCURRENCY: 2 });
    api = await Api.listen(t.app);
  });
  afterAll(async () => {
    await t?.close();
  });

  const storedStatus = async (ids: readonly string[]): Promise<Map<string, string>> => {
    const { rows } = await t.app.runtime.db.query<{ id: string; status: string }>(
      'SELECT id, status FROM reservations WHERE id = ANY($1)',
      [ids],
    );
    return new Map(rows.map((r) => [r.id, r.status]));
  };

  it('a 1-second reservation frees its units at its TTL, cannot be confirmed, and its row reads expired soon after', async () => {
    const a = newItem('ttl');
    const b = newItem('ttl');
    await api.stock(a, 10);
    await api.stock(b, 5, 'wh-1');

    const created = await api.reserve({
      lines: [
        { itemId: a, quantity: 4 },
        { itemId: b, location: 'wh-1', quantity: 2 },
      ],
      ttlSeconds: 1,
    });
    expect(outcome(created)).toBe('201');
    const r = reservationOf(created);
    const expiresAt = Date.parse(r.expiresAt);
    expect(expiresAt - Date.parse(r.createdAt)).toBe(1000);

    // While it lives (checked only if this read finished before the TTL: no timing assumption).
    const during = availabilityOf(await api.availability(a));
    if (Date.now() < expiresAt) expect(during).toMatchObject({ onHand: 10, reserved: 4, available: 6 });

    await untilTime(expiresAt);
    // The very first reads after the TTL: no waiting for a background job.
    const [afterA, afterB, read, confirm] = await Promise.all([
      api.availability(a),
      api.availability(b),
      api.get(r.id),
      api.confirm(r.id),
    ]);
    expect(availabilityOf(afterA)).toMatchObject({ onHand: 10, reserved: 0, available: 10 });
    expect(availabilityOf(afterB).locations).toEqual([{ location: 'wh-1', onHand: 5, reserved: 0, safetyStock: 0, available: 5, availableHighPriority: 5 }]);
    expect(reservationOf(read)).toMatchObject({ id: r.id, status: 'expired' });
    expect(outcome(confirm)).toBe('409 reservation_expired');
    expect(confirm.headers['content-type']).toMatch(/^application\/problem\+json/);

    // The stored row says so within a few seconds (the sweeper runs every 100 ms here).
    await waitFor('the row to read expired', async () => ((await storedStatus([r.id])).get(r.id) === 'expired' ? true : undefined), {
      timeoutMs: 5_000,
    });

    // Terminal: still unconfirmable; release answers 200 with the expired document; nothing changes.
    expect(outcome(await api.confirm(r.id))).toBe('409 reservation_expired');
    const release = await api.release(r.id);
    expect(outcome(release)).toBe('200');
    expect(reservationOf(release).status).toBe('expired');
    expect(availabilityOf(await api.availability(a))).toMatchObject({ onHand: 10, reserved: 0, available: 10 });
    await checkInvariants(t.app, [a, b], { holdsWithinSupply: true });
  });

  it('confirms racing the TTL never both confirm and free: each reservation is sold or expired, never both', async () => {
    const skus = [newItem('race'), newItem('race')];
    const perSku = 20;
    for (const sku of skus) await api.stock(sku, perSku);
    const bodies = skus.flatMap((sku) => range(perSku).map(() => ({ lines: [{ itemId: sku, quantity: 1 }], ttlSeconds: 1 })));
    const created = await Promise.all(bodies.map((body) => api.reserve(body)));
    for (const c of created) expect(outcome(c), c.text).toBe('201');
    const reservations = created.map(reservationOf);

    // Each reservation gets a volley of 4 concurrent-ish confirms centred on its own offset from the TTL, the offsets
    // spread over ±120 ms, so across the set the race is lost and won at every point around the boundary.
    const n = reservations.length;
    const answers = await Promise.all(
      reservations.map(async (r, i) => {
        const base = Date.parse(r.expiresAt) - 120 + Math.round((240 * i) / (n - 1));
        const volley = range(4).map(async (j) => {
          await untilTime(base + j * 4);
          return api.confirm(r.id);
        });
        return Promise.all(volley);
      }),
    );

    const confirmedIds: string[] = [];
    reservations.forEach((r, i) => {
      const outcomes = answers[i]!.map(outcome);
      for (const o of outcomes) expect(['200', '409 reservation_expired'], `${r.id}: ${outcomes.join(', ')}`).toContain(o);
      expect(new Set(outcomes).size, `reservation ${r.id} answered both ways: ${outcomes.join(', ')}`).toBe(1);
      if (outcomes[0] === '200') {
        confirmedIds.push(r.id);
        for (const a of answers[i]!) expect(reservationOf(a).status).toBe('confirmed');
      }
    });

    // Every row settles (the sweeper records the expired ones) exactly as the confirms were answered.
    const ids = reservations.map((r) => r.id);
    const stored = await waitFor(
      'every row to leave pending',
      async () => {
        const s = await storedStatus(ids);
        return [...s.values()].every((status) => status !== 'pending') ? s : undefined;
      },
      { timeoutMs: 8_000 },
    );
    for (const r of reservations) expect(stored.get(r.id), r.id).toBe(confirmedIds.includes(r.id) ? 'confirmed' : 'expired');

    // Units: a confirmed one left on-hand for good; an expired one is available again. Reads after TTL re-check it.
    for (const sku of skus) {
      const sold = reservations.filter((r) => r.lines[0]!.itemId === sku && confirmedIds.includes(r.id)).length;
      expect(availabilityOf(await api.availability(sku))).toMatchObject({ onHand: perSku - sold, reserved: 0, available: perSku - sold });
    }
    for (const r of reservations) {
      const late = await api.confirm(r.id);
      expect(outcome(late)).toBe(confirmedIds.includes(r.id) ? '200' : '409 reservation_expired');
    }
    console.info(`confirm vs TTL race: ${confirmedIds.length} of ${n} reservations sold, ${n - confirmedIds.length} expired`);
    await checkInvariants(t.app, skus, { holdsWithinSupply: true });
  });

  // A release decided in Redis before the TTL but still committing after it must win over the sweeper: the sweeper
  // leaves holds Redis calls released (or confirmed) alone for UNRECORDED_GRACE_MS. Made deterministic by holding
  // row locks in PostgreSQL so the release's batch is still waiting when the sweeper runs past the TTL.
  it('a release decided before the TTL but committed after it wins over the sweeper and answers 200', async () => {
    const [slow1, slow2, item] = [newItem('slow'), newItem('slow'), newItem('slow')];
    for (const sku of [slow1, slow2, item]) await api.stock(sku, 5);
    const created = await api.reserve({ lines: [{ itemId: item, quantity: 1 }], ttlSeconds: 2 });
    expect(outcome(created)).toBe('201');
    const r = reservationOf(created);
    const expiresAt = Date.parse(r.expiresAt);
    const key = newKey();

    const clients = range(4).map(() => new pg.Client({ connectionString: t.databaseUrl }));
    const [lock1, lock2, lockKey, watcher] = clients as [pg.Client, pg.Client, pg.Client, pg.Client];
    await Promise.all(clients.map((c) => c.connect()));
    const submit = vi.spyOn(t.app.runtime.writer, 'submit');
    const waiters = (n: number) => waitForLockWait(watcher, `${n} statements waiting on locks`, { n });
    try {
      await lock1.query('BEGIN');
      await lock1.query('SELECT 1 FROM stock WHERE item_id = $1 FOR UPDATE', [slow1]);
      await lock2.query('BEGIN');
      await lock2.query('SELECT 1 FROM stock WHERE item_id = $1 FOR UPDATE', [slow2]);
      await lockKey.query('BEGIN');
      await lockKey.query(
        `INSERT INTO idempotency_keys (scope, key, request_hash, reservation_id, status_code, response)
         VALUES ('_', $1, 'held-by-test', gen_random_uuid(), 201, '{}')`,
        [key],
      );
      // Both writer slots (WRITER_CONCURRENCY 2) block on the stock rows.
      const adjust1 = api.adjust(slow1, { delta: 1 });
      await waiters(1);
      const adjust2 = api.adjust(slow2, { delta: 1 });
      await waiters(2);
      // Decided in Redis now, before the TTL; they wait for the next batch together.
      const reserve = api.reserve({ lines: [{ itemId: item, quantity: 1 }] }, key);
      const release = api.release(r.id);
      const holds = t.app.runtime.keys.item(item).holds;
      await waitFor('the release to be decided in Redis', async () =>
        parseHold((await t.app.runtime.redis.hget(holds, holdField(r.id, 'default'))) ?? '')?.state === HoldState.released ? true : undefined,
      );
      expect(Date.now(), 'set-up finished before the TTL').toBeLessThan(expiresAt);
      // That batch now waits on the test's uncommitted idempotency row, before its UPDATE of the reservation.
      await lock2.query('ROLLBACK');
      expect((await adjust2).status).toBe(200);
      await waiters(2);
      // After the TTL a sweeper pass sees the released hold and leaves the reservation to the release's commit.
      await untilTime(expiresAt);
      await t.app.runtime.sweeper.runOnce();
      expect(
        submit.mock.calls.some(([op]) => op.kind === 'transition' && op.reservationId === r.id && op.to === 'expired'),
      ).toBe(false);
      await lock1.query('ROLLBACK');
      expect((await adjust1).status).toBe(200);
      await lockKey.query('ROLLBACK');

      expect(outcome(await reserve)).toBe('201');
      const answer = await release;
      expect(outcome(answer), answer.text).toBe('200');
      expect(reservationOf(answer).status).toBe('released');
      expect((await storedStatus([r.id])).get(r.id)).toBe('released');
    } finally {
      submit.mockRestore();
      for (const c of [lock1, lock2, lockKey]) await c.query('ROLLBACK').catch(() => undefined);
      await Promise.all(clients.map((c) => c.end()));
    }
  });

  it('a release racing the TTL frees the units either way and answers released or expired, never an error', async () => {
    const sku = newItem('race-release');
    const count = 20;
    await api.stock(sku, count);
    const created = await Promise.all(
      range(count).map(() => api.reserve({ lines: [{ itemId: sku, quantity: 1 }], ttlSeconds: 1 })),
    );
    const reservations = created.map(reservationOf);
    const answers = await Promise.all(
      reservations.map(async (r, i) => {
        await untilTime(Date.parse(r.expiresAt) - 60 + Math.round((120 * i) / (count - 1)));
        return Promise.all([api.release(r.id), api.release(r.id)]);
      }),
    );
    const answered = new Map<string, string>();
    reservations.forEach((r, i) => {
      for (const a of answers[i]!) expect(outcome(a), a.text).toBe('200');
      const statuses = answers[i]!.map((a) => reservationOf(a).status);
      expect(['released', 'expired']).toContain(statuses[0]);
      expect(new Set(statuses).size, `reservation ${r.id} answered ${statuses.join(' and ')}`).toBe(1);
      answered.set(r.id, statuses[0]!);
    });
    expect(availabilityOf(await api.availability(sku))).toMatchObject({ onHand: count, reserved: 0, available: count });
    const ids = reservations.map((r) => r.id);
    const stored = await waitFor('every row to leave pending', async () => {
      const s = await storedStatus(ids);
      return [...s.values()].every((status) => status !== 'pending') ? s : undefined;
    });
    for (const r of reservations) expect(stored.get(r.id), r.id).toBe(answered.get(r.id));
    await checkInvariants(t.app, [sku], { holdsWithinSupply: true });
  });
});
