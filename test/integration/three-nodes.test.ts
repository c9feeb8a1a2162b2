import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, range, startHttpApp } from '../helpers/api.js';
import { newItem, type TestApp } from '../helpers/app.js';
import { checkInvariants } from '../helpers/invariants.js';
import { waitFor } from '../helpers/wait.js';
import { closeReceivers, receiver, type Receiver } from '../events/receiver.js';

// Three API nodes on one database and one Redis (in the `cluster` project: one Redis Cluster), each with its own
// sweeper, event sealer and webhook relay, under concurrent reservations, confirms, releases and expiries: every
// expiry is recorded once however many sweepers look, each event is delivered by one relay (none twice), I1–I6 hold.

const SECRET = `whsec_${randomBytes(32).toString('base64')}`;

describe('three API nodes', () => {
  const nodes: TestApp[] = [];
  let apis: Api[];
  let hooks: Receiver;

  beforeAll(async () => {
    hooks = await receiver();
    const shared = { EVENTS_WEBHOOK_URLS: hooks.url, EVENTS_WEBHOOK_SECRET: SECRET, SWEEPER_INTERVAL_MS: 100 };
    const first = await startHttpApp(shared);
    nodes.push(first);
    for (let i = 0; i < 2; i++) {
      nodes.push(await startHttpApp({ ...shared, DATABASE_URL: first.databaseUrl, REDIS_KEY_PREFIX: first.config.REDIS_KEY_PREFIX }));
    }
    apis = nodes.map((n) => Api.inject(n.app));
  });
  afterAll(async () => {
    // The first node last: it drops the database.
    for (const node of [...nodes].reverse()) await node.close();
    await closeReceivers();
  });

  it('record each expiry once, deliver each event once, and keep I1–I6 under concurrent load', async () => {
    const items = range(6).map(() => newItem('three-nodes'));
    for (const item of items) await apis[0]!.stock(item, 500);
    const api = (n: number) => apis[n % apis.length]!;
    // 90 reservations of two items each, made, then confirmed (a third), released (a third) or left to expire, each
    // call on another node than the one before. Only those left alone live 1 s: a loaded machine may take longer
    // than that between a hold and its confirm.
    const outcomes = await Promise.all(
      range(90).map(async (n) => {
        const ttlSeconds = n % 3 === 2 ? 1 : 60;
        const r = await api(n).hold({ lines: [{ itemId: items[n % 6]!, quantity: 1 }, { itemId: items[(n + 1) % 6]!, quantity: 2 }], ttlSeconds });
        if (n % 3 === 0) expect((await api(n + 1).confirm(r.id)).status).toBe(200);
        if (n % 3 === 1) expect((await api(n + 2).release(r.id)).status).toBe(200);
        return r.id;
      }),
    );
    const { db } = nodes[0]!.app.runtime;
    const expiring = outcomes.filter((_, n) => n % 3 === 2);
    await waitFor(
      'every reservation left alone to be recorded expired',
      async () => {
        const { rows } = await db.query<{ n: number }>("SELECT count(*)::int AS n FROM reservations WHERE id = ANY($1) AND status = 'expired'", [expiring]);
        return rows[0]!.n === expiring.length ? true : undefined;
      },
      { timeoutMs: 20_000 },
    );

    // Each expiry once: one ledger row per line, one reservation.expired event.
    const { rows: expiries } = await db.query<{ reservation_id: string; n: number }>(
      "SELECT reservation_id, count(*)::int AS n FROM stock_movements WHERE kind = 'expire' GROUP BY reservation_id",
    );
    expect(new Map(expiries.map((e) => [e.reservation_id, e.n]))).toEqual(new Map(expiring.map((id) => [id, 2])));
    const { rows: expiredEvents } = await db.query<{ subject: string; n: number }>(
      "SELECT subject, count(*)::int AS n FROM events WHERE type = 'inventory.reservation.expired' GROUP BY subject",
    );
    expect(new Map(expiredEvents.map((e) => [e.subject, e.n]))).toEqual(new Map(expiring.map((id) => [id, 1])));

    // Every event delivered, by one node's relay: none twice.
    const { rows: stored } = await db.query<{ id: string }>('SELECT id::text FROM events');
    await waitFor('every event at the endpoint', async () => (hooks.accepted().length >= stored.length ? true : undefined), { timeoutMs: 20_000 });
    const delivered = hooks.accepted().map((e) => e.id);
    expect(delivered.length).toBe(new Set(delivered).size);
    expect(new Set(delivered)).toEqual(new Set(stored.map((r) => r.id)));
    expect(nodes.filter((t) => t.app.eventDelivery.relays[0]!.active)).toHaveLength(1);

    await checkInvariants(nodes[0]!.app, items);
  }, 90_000);
});
