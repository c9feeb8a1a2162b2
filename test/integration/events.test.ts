import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultServices } from '../../src/app.js';
import { ProblemError } from '../../src/domain/errors.js';
import { ANONYMOUS_CALLER as anonymous } from '../../src/http/access.js';
import { Sweeper } from '../../src/jobs/sweeper.js';
import { Api, expectReservation, outcome, startHttpApp, type Answer } from '../helpers/api.js';
import { newItem, newKey, type TestApp } from '../helpers/app.js';
import { eventsOf, expectDocumented, expectOutboxConsistent, figures, typesOf, type StoredEvent } from '../helpers/events.js';
import { checkInvariants } from '../helpers/invariants.js';
import { mulberry32, seedFromEnv } from '../helpers/random.js';
import { ANY_NODE, lockWaiters, waitForLockWait } from '../helpers/sessions.js';
import { untilTime, waitFor } from '../helpers/wait.js';

// api.md "Events", end to end through the API: every change a request or the sweeper records appends its events in
// the same statement, with the data a consumer needs and the subject's next sequence; a request refused, or whose
// record failed, appends none.

let t: TestApp;
let api: Api;
beforeAll(async () => {
  t = await startHttpApp({ SWEEPER_INTERVAL_MS: 100, WRITER_CONCURRENCY: 2 });
  api = Api.inject(t.app);
});
afterAll(() => t?.close());

const db = () => t.app.runtime.db;

/** The events as a consumer receives them (the envelope src/events/envelope.ts makes) are what the AsyncAPI document says. */
function expectAllDocumented(events: StoredEvent[]): void {
  for (const e of events) {
    expectDocumented({
      specversion: '1.0',
      id: e.id,
      source: t.config.EVENTS_SOURCE,
      type: e.type,
      subject: e.subject,
      time: e.time.toISOString(),
      datacontenttype: 'application/json',
      sequence: String(e.sequence),
      data: e.data,
    });
  }
}

describe("a reservation's events", () => {
  it('created, extended, confirmed in part: one event each, sequence 1, 2, 3, data = the document answered', async () => {
    const item = newItem();
    const other = newItem();
    await api.stock(item, 10);
    await api.stock(other, 5, 'wh-2');
    const created = await api.hold({
      lines: [
        { itemId: item, quantity: 2 },
        { itemId: other, location: 'wh-2', quantity: 1 },
      ],
      reference: 'order-events-1',
      metadata: { channel: 'web' },
      ttlSeconds: 300,
    });
    const extended = expectReservation(await api.extend(created.id, { ttlSeconds: 600 }), 200);
    const confirmed = expectReservation(await api.confirm(created.id, undefined, { lines: [{ itemId: item, quantity: 1 }] }), 200);
    expect(confirmed.lines.map((l) => l.confirmedQuantity)).toEqual([1, 0]);

    const events = await eventsOf(db(), created.id);
    expect(events.map((e) => [e.sequence, e.type, e.data])).toEqual([
      [1, 'inventory.reservation.created', created],
      [2, 'inventory.reservation.extended', extended],
      [3, 'inventory.reservation.confirmed', confirmed],
    ]);
    expect(events.map((e) => e.time.toISOString())).toEqual([created.createdAt, extended.updatedAt, confirmed.updatedAt]);
    expect(events[2]!.data).toEqual(expectReservation(await api.get(created.id), 200));
    expectAllDocumented(events);
  });

  it('a change Redis decided whose record never came leaves no gap: the sequence counts events, not versions', async () => {
    const item = newItem();
    await api.stock(item, 10);
    const created = await api.hold({ lines: [{ itemId: item, quantity: 2 }], ttlSeconds: 300 });
    // An extension decided in Redis by a node that died before its record: version 2 is never recorded.
    const stranded = await t.app.runtime.decisions.extend(created.id, [{ itemId: item, location: 'default', quantity: 2 }], 600_000);
    expect(stranded.kind).toBe('extended');
    const confirmed = expectReservation(await api.confirm(created.id), 200);
    expect(confirmed.version).toBe(3);
    const events = await eventsOf(db(), created.id);
    expect(events.map((e) => [e.sequence, e.type, e.data.version])).toEqual([
      [1, 'inventory.reservation.created', 1],
      [2, 'inventory.reservation.confirmed', 3],
    ]);
  });

  it('released, and released by reference: the released document', async () => {
    const item = newItem();
    await api.stock(item, 10);
    const a = await api.hold({ lines: [{ itemId: item, quantity: 1 }], reference: 'order-events-2' });
    const b = await api.hold({ lines: [{ itemId: item, quantity: 1 }], reference: 'order-events-3' });
    const released = expectReservation(await api.release(a.id), 200);
    const byReference = await api.releaseByReference({ reference: 'order-events-3' });
    expect(outcome(byReference)).toBe('200');
    const [bReleased] = (byReference.body as { items: unknown[] }).items;
    expect(await eventsOf(db(), a.id)).toMatchObject([{ type: 'inventory.reservation.created' }, { type: 'inventory.reservation.released', sequence: 2 }]);
    expect((await eventsOf(db(), a.id))[1]!.data).toEqual(released);
    expect((await eventsOf(db(), b.id))[1]!.data).toEqual(bReleased);
  });

  it('expired by the sweeper: reservation.expired once, however many sweepers race, and the item restored', async () => {
    const item = newItem();
    await api.stock(item, 3);
    const r = await api.hold({ lines: [{ itemId: item, quantity: 3 }], ttlSeconds: 1 });
    await untilTime(r.expiresAt);
    // A second node's sweeper, and a release racing them (it answers the expired document, records nothing).
    const { db: pool, decisions, writer, metrics } = t.app.runtime;
    const second = new Sweeper({ db: pool, decisions, writer, metrics, log: pino({ level: 'silent' }) }, { intervalMs: 100, unrecordedGraceMs: 30_000, idempotencyRetentionHours: 24 });
    const [, , release] = await Promise.all([t.app.runtime.sweeper.runOnce(), second.runOnce(), api.release(r.id)]);
    expect(expectReservation(release, 200).status).toBe('expired');
    await waitFor('the expiry to be recorded', async () => ((await typesOf(db(), r.id)).length === 2 ? true : undefined));
    await Promise.all([t.app.runtime.sweeper.runOnce(), second.runOnce()]);
    const events = await eventsOf(db(), r.id);
    expect(events.map((e) => e.type)).toEqual(['inventory.reservation.created', 'inventory.reservation.expired']);
    expect(events[1]!.data).toEqual({ ...r, status: 'expired', updatedAt: r.expiresAt, version: 2 });
    expect(events[1]!.data).toEqual(expectReservation(await api.get(r.id), 200));
    expect(events[1]!.time.toISOString()).toBe(r.expiresAt);
    expect(await typesOf(db(), item)).toEqual(['stock.changed', 'availability.depleted', 'availability.restored']);
    expectAllDocumented(events);
  });
});

describe("an item's events", () => {
  it('stock.changed for on-hand and safety stock, depleted and restored as available reaches and leaves 0', async () => {
    const item = newItem();
    await api.stock(item, 5); // 1: a new location: changed, not restored
    await api.stock(item, 4, 'wh-2'); // 2
    const r = await api.hold({ lines: [{ itemId: item, quantity: 5 }] }); // 3: depleted (holds alone: no stock.changed)
    await api.release(r.id); // 4: restored
    const s = await api.hold({ lines: [{ itemId: item, quantity: 5 }] }); // 5: depleted
    await api.confirm(s.id); // 6: changed (on hand 0), still 0 available
    expect(outcome(await api.adjust(item, { delta: 3, reason: 'found' }))).toBe('200'); // 7, 8: changed, restored
    await api.safety(item, 3, 3); // 9, 10: changed, depleted (the 3 kept for high priority)
    const events = await eventsOf(db(), item);
    expect(events.map((e) => [e.sequence, e.type.replace('inventory.', ''), e.data])).toEqual([
      [1, 'stock.changed', figures(item, 'default', 5, 0)],
      [2, 'stock.changed', figures(item, 'wh-2', 4, 0)],
      [3, 'availability.depleted', figures(item, 'default', 5, 5)],
      [4, 'availability.restored', figures(item, 'default', 5, 0)],
      [5, 'availability.depleted', figures(item, 'default', 5, 5)],
      [6, 'stock.changed', figures(item, 'default', 0, 0)],
      [7, 'stock.changed', figures(item, 'default', 3, 0)],
      [8, 'availability.restored', figures(item, 'default', 3, 0)],
      [9, 'stock.changed', figures(item, 'default', 3, 0, 3)],
      [10, 'availability.depleted', figures(item, 'default', 3, 0, 3)],
    ]);
    // The last figures are the availability the API answers for that location.
    const availability = await api.figures(item);
    expect(availability.locations.find((l) => l.location === 'default')).toEqual({ ...events.at(-1)!.data, itemId: undefined });
    expectAllDocumented(events);
    await checkInvariants(t.app, [item]);
  });
});

describe('no event for what was not recorded', () => {
  it('refused requests, repeats and replays append nothing', async () => {
    const item = newItem();
    await api.stock(item, 2);
    const r = await api.hold({ lines: [{ itemId: item, quantity: 1 }] }, 'events-replayed-key');
    await api.release(r.id);
    const before = { item: await typesOf(db(), item), reservation: await typesOf(db(), r.id) };
    const refused: [Promise<Answer>, string][] = [
      [api.reserve({ lines: [{ itemId: item, quantity: 3 }] }), '409 insufficient_stock'],
      [api.reserve({ lines: [{ itemId: newItem(), quantity: 1 }] }), '404 item_not_found'],
      [api.adjust(item, { delta: -3 }), '409 insufficient_stock'],
      [api.confirm(r.id), '409 reservation_released'],
      [api.extend(r.id, { ttlSeconds: 60 }), '409 reservation_released'],
      [api.release(r.id, '"1"'), '200'], // a repeat (its If-Match is not compared once it ended the way asked)
      [api.release(r.id), '200'],
      [api.reserve({ lines: [{ itemId: item, quantity: 1 }] }, 'events-replayed-key'), '201'], // a replay
    ];
    for (const [answer, expected] of refused) expect(outcome(await answer)).toBe(expected);
    expect({ item: await typesOf(db(), item), reservation: await typesOf(db(), r.id) }).toEqual(before);
    expect(before.reservation).toEqual(['reservation.created', 'reservation.released']);
  });

  it('a record that fails (answered 503, compensated) appends nothing, for a reservation, a transition or a stock change', async () => {
    const item = newItem();
    await api.stock(item, 10);
    const r = await api.hold({ lines: [{ itemId: item, quantity: 2 }] });
    const ids = async (subject: string) => (await eventsOf(db(), subject)).map((e) => e.id);
    const before = { item: await ids(item), reservation: await ids(r.id) };
    const { db: pool } = t.app.runtime;
    const blocker = await pool.connect();
    let answers: Answer[];
    try {
      // The fence row locked: the batch waits, and is cancelled there (an ERROR: nothing of it committed).
      await blocker.query('BEGIN');
      await blocker.query('SELECT FROM state_generation FOR UPDATE');
      let settled = false;
      const pending = Promise.all([api.reserve({ lines: [{ itemId: item, quantity: 1 }] }), api.confirm(r.id), api.adjust(item, { delta: 5 })]);
      void pending.finally(() => (settled = true));
      await waitForLockWait(pool, 'the batch statement waiting on the fence', { applicationName: ANY_NODE });
      // Every batch that comes to wait (the three may take one or several) is cancelled, until all are answered.
      while (!settled) {
        for (const pid of await lockWaiters(pool, ANY_NODE)) await pool.query('SELECT pg_cancel_backend($1)', [pid]);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      answers = await pending;
    } finally {
      await blocker.query('ROLLBACK');
      blocker.release();
    }
    expect(answers.map(outcome)).toEqual(['503 unavailable', '503 unavailable', '503 unavailable']);
    expect({ item: await ids(item), reservation: await ids(r.id) }).toEqual(before);
    // The next changes number on where the item and the reservation were.
    await api.confirm(r.id);
    expect((await eventsOf(db(), r.id)).map((e) => e.sequence)).toEqual([1, 2]);
    expect((await eventsOf(db(), item)).map((e) => e.sequence)).toEqual([...before.item.map((_, i) => i + 1), before.item.length + 1]);
    await checkInvariants(t.app, [item]);
  });

  it('an operation PostgreSQL rejects for its own values appends nothing; its batch-mates append theirs', async () => {
    const { reservations } = defaultServices(t.app.runtime, pino({ level: 'silent' }));
    const item = newItem();
    await api.stock(item, 10);
    const settled = await Promise.allSettled([
      reservations.reserve(anonymous, newKey(), { lines: [{ itemId: item, quantity: 3 }], reference: 'order\u00001' }),
      ...Array.from({ length: 4 }, () => reservations.reserve(anonymous, newKey(), { lines: [{ itemId: item, quantity: 1 }] })),
    ]);
    expect((settled[0] as PromiseRejectedResult).reason).toBeInstanceOf(ProblemError);
    const created = settled.slice(1).map((s) => (s as PromiseFulfilledResult<{ body: { id: string } }>).value.body.id);
    for (const id of created) expect(await typesOf(db(), id)).toEqual(['reservation.created']);
    const { rows } = await db().query<{ n: number }>(
      "SELECT count(*)::int AS n FROM events WHERE type = 'inventory.reservation.created' AND data->'lines'->0->>'itemId' = $1",
      [item],
    );
    expect(rows[0]!.n).toBe(4);
    expect(await typesOf(db(), item)).toEqual(['stock.changed']);
  });
});

describe('under concurrency, on two nodes', () => {
  it('many reservations, transitions and stock changes on few items: every subject numbered 1, 2, 3… without a gap, in feed order', async () => {
    const seed = seedFromEnv();
    const rng = mulberry32(seed);
    // A second node on the same database and Redis: its own writer (two batches in flight), sealer and sweeper.
    const second = await startHttpApp({ DATABASE_URL: t.databaseUrl, REDIS_KEY_PREFIX: t.config.REDIS_KEY_PREFIX, WRITER_CONCURRENCY: 2 });
    try {
      const nodes = [api, Api.inject(second.app)];
      const node = () => rng.pick(nodes);
      const items = [newItem('hot'), newItem('hot'), newItem('hot')];
      const pairs = items.flatMap((itemId) => ['default', 'wh-2'].map((location) => ({ itemId, location })));
      for (const p of pairs) await api.stock(p.itemId, 40, p.location);

      const work = Array.from({ length: 120 }, async () => {
        if (rng.chance(0.25)) {
          const p = rng.pick(pairs);
          const delta = rng.pick([-2, -1, 1, 3]);
          const answer = await node().adjust(p.itemId, { delta, location: p.location });
          expect(['200', '409 insufficient_stock'], `seed ${seed}`).toContain(outcome(answer));
          return;
        }
        const lines = rng.sample(pairs, rng.int(1, 2)).map((p) => ({ ...p, quantity: rng.int(1, 3) }));
        const held = await node().reserve({ lines, ttlSeconds: 60 });
        if (held.status !== 201) return; // sold out: a refusal, no event
        const id = (held.body as { id: string }).id;
        if (rng.chance(0.3)) expect(outcome(await node().extend(id, { ttlSeconds: 120 }))).toBe('200');
        const end = rng.pick(['confirm', 'release', 'leave'] as const);
        if (end === 'confirm') expect(['200', '409 insufficient_stock']).toContain(outcome(await node().confirm(id)));
        if (end === 'release') expect(outcome(await node().release(id))).toBe('200');
      });
      await Promise.all(work);
      await t.app.runtime.writer.drain();
      await second.app.runtime.writer.drain();
      // Both nodes' sealer jobs place them (a round of either may have looked before the last commits).
      await waitFor('every event sealed', async () => {
        const { rows } = await db().query<{ n: number }>('SELECT count(*)::int AS n FROM unsealed_events');
        return rows[0]!.n === 0 ? true : undefined;
      });
      await expectOutboxConsistent(db());

      // The feed: every event once, each subject's in sequence order.
      const read: { subject: string; sequence: string }[] = [];
      for (let after: string | undefined; ; ) {
        const page = await nodes[1]!.request({ method: 'GET', url: `/events?limit=97${after ? `&after=${after}` : ''}` });
        const body = page.body as { items: { subject: string; sequence: string }[]; nextCursor: string };
        read.push(...body.items);
        if (body.items.length === 0) break;
        after = body.nextCursor;
      }
      const { rows } = await db().query<{ n: number }>('SELECT count(*)::int AS n FROM events');
      expect(read).toHaveLength(rows[0]!.n);
      for (const subject of [...items, ...new Set(read.map((e) => e.subject))]) {
        const sequences = read.filter((e) => e.subject === subject).map((e) => Number(e.sequence));
        expect(sequences, `${subject}, seed ${seed}`).toEqual(sequences.map((_, i) => i + 1));
      }
      await checkInvariants(t.app, items);
    } finally {
      await second.app.close();
    }
  });
});
