import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CloudEvent } from '../../src/events/envelope.js';
import { webhookName } from '../../src/events/settings.js';
import { migrate } from '../../src/store/database.js';
import { ApiProcess } from '../drills/api-process.js';
import { HttpClient } from '../drills/http-client.js';
import { ClientLog, runLoad, seedStock, type Sku } from '../drills/load.js';
import { startNats, type NatsServer } from '../helpers/nats-server.js';
import { freePort } from '../helpers/ports.js';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres.js';
import { testRedisUrl } from '../helpers/servers.js';
import { waitFor } from '../helpers/wait.js';
import { expectEveryEventOnce, readStream } from './nats-stream.js';
import { closeReceivers, receiver, type Receiver } from './receiver.js';
import { orderViolations } from './support.js';

/**
 * The crash drill of issue 13: the drills' reservation load (reserve, confirm, release, expiry, stock changes,
 * sell-outs) against a real API process that relays to NATS JetStream and a webhook endpoint, killed with kill -9
 * while events are appended and delivered, then started again. Afterwards every change PostgreSQL committed has
 * exactly its events in the feed, in per-subject sequence without gap, and every transport received every event of
 * the feed, in per-subject order: the stream once each (its message-id window), the webhook endpoint at least once
 * (duplicates told apart by `webhook-id`).
 */

const SEED = Number(process.env.DRILL_SEED ?? Math.floor(Math.random() * 2 ** 31));
const SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const SKUS: Sku[] = [
  { itemId: `crash-a-${randomBytes(3).toString('hex')}`, location: 'default' },
  { itemId: `crash-a-${randomBytes(3).toString('hex')}`, location: 'north' },
  { itemId: `crash-b-${randomBytes(3).toString('hex')}`, location: 'default' },
  { itemId: `crash-c-${randomBytes(3).toString('hex')}`, location: 'default' },
];
SKUS[1]!.itemId = SKUS[0]!.itemId; // one item at two locations

let database: TestDatabase;
let db: pg.Pool;
let nats: NatsServer;
let hooks: Receiver;
const logDir = mkdtempSync(path.join(os.tmpdir(), 'irs-events-drill-'));
const apis: ApiProcess[] = [];
/** An event the webhook endpoint does not answer for (until the kill): its batch cannot finish. */
let held: string | null = null;

beforeAll(async () => {
  database = await createTestDatabase();
  await migrate(database.url, pino({ level: 'silent' }));
  db = new pg.Pool({ connectionString: database.url, max: 4 });
  db.on('error', () => {});
  nats = await startNats();
  // A little slow, so webhook delivery lags behind the appends; never answering for the event the drill holds.
  hooks = await receiver(async (_, { body }) => {
    await sleep(3);
    return (JSON.parse(body) as CloudEvent).id === held ? 'hang' : 200;
  });
});
afterAll(async () => {
  for (const api of apis) await api.kill9();
  await closeReceivers();
  await nats?.stop();
  await db?.end();
  await database?.drop();
});

describe('crash drill', () => {
  it(`an API process killed with kill -9 mid-load: every committed change has exactly its events, every transport got them (DRILL_SEED=${SEED})`, async () => {
    const env = {
      DATABASE_URL: database.url,
      REDIS_URL: testRedisUrl(),
      REDIS_KEY_PREFIX: `t${randomBytes(4).toString('hex')}:`,
      EVENTS_NATS_URL: nats.url,
      EVENTS_WEBHOOK_URLS: hooks.url,
      EVENTS_WEBHOOK_SECRET: SECRET,
      LOG_LEVEL: 'warn',
      SWEEPER_INTERVAL_MS: '200',
      UNRECORDED_GRACE_MS: '3000',
      ORPHAN_HOLD_AFTER_MS: '3000',
      RECONCILE_INTERVAL_MS: '2000',
      SHUTDOWN_GRACE_MS: '1000',
    };
    const port = await freePort();
    const first = new ApiProcess('api-1', port, env, path.join(logDir, 'api-1.log'));
    apis.push(first);
    await first.start();
    const log = new ClientLog();
    await seedStock(first.url, SKUS, 150, 10, log);
    const load = runLoad({ runId: 'crash', seed: SEED, clients: 40, durationMs: 4_000, drainMs: 6_000, skus: SKUS, nodes: [first.url], restockBelow: 60, log });

    const webhook = webhookName(hooks.url);
    // Killed mid-stream: events flowing, and the webhook relay in the middle of a batch, with events the endpoint
    // accepted that its cursor does not cover yet. The endpoint holds one event not sealed yet, so the batch that
    // takes it cannot finish (other subjects' events in it are accepted meanwhile).
    held = (
      await waitFor('an event not sealed yet', async () => {
        const { rows } = await db.query<{ id: string }>('SELECT e.id FROM unsealed_events u JOIN events e USING (seq) WHERE u.seq > 200 LIMIT 1');
        return rows[0]?.id;
      }, { timeoutMs: 15_000, intervalMs: 2 })
    );
    await waitFor('the webhook relay stuck mid-batch', async () => {
      const { rows } = await db.query<{ delivered: number }>('SELECT position AS delivered FROM event_cursors WHERE transport = $1', [webhook]);
      // Positions run 1, 2, 3… here (nothing is pruned): the cursor covers `delivered` events.
      const accepted = new Set(hooks.accepted().map((e) => e.id));
      return hooks.requests.some((q) => q.status === 'hung') && accepted.size > rows[0]!.delivered ? true : undefined;
    }, { timeoutMs: 15_000 });
    await first.kill9();
    held = null;
    await sleep(300);
    const second = new ApiProcess('api-2', port, env, path.join(logDir, 'api-2.log'));
    apis.push(second);
    await second.start();
    await load;
    expect(log.acks).toBeGreaterThan(100);

    // Settled: every hold due within the next 15 s ended (the load's TTLs are seconds long), so no expiry comes while
    // the transports are read (one recorded between reading the feed and reading the webhook's receiver was an event
    // the feed lacked); then every event sealed and delivered by both transports.
    await waitFor('expiries recorded', async () => {
      const { rows } = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM reservations WHERE status = 'pending' AND expires_at < now() + interval '15 seconds'`);
      return rows[0]!.n === 0 ? true : undefined;
    }, { timeoutMs: 30_000, intervalMs: 200 });
    await waitFor('every event delivered', async () => {
      const { rows } = await db.query<{ unsealed: number; last: number; nats: number; hook: number }>(
        `SELECT (SELECT count(*)::int FROM unsealed_events) AS unsealed,
                (SELECT coalesce(max(position), 0) FROM event_feed) AS last,
                (SELECT position FROM event_cursors WHERE transport = 'nats') AS nats,
                (SELECT position FROM event_cursors WHERE transport = $1) AS hook`,
        [webhook],
      );
      const r = rows[0]!;
      return r.unsealed === 0 && r.nats === r.last && r.hook === r.last ? true : undefined;
    }, { timeoutMs: 30_000, intervalMs: 200 });

    // The feed: every event, in position order, cursor after cursor.
    const feed = await readFeed(second.url);
    const { rows: stored } = await db.query<{ id: string }>('SELECT e.id FROM event_feed f JOIN events e USING (seq) ORDER BY f.position');
    expect(feed.map((e) => e.id)).toEqual(stored.map((r) => r.id));

    // Every committed reservation has its events, sequences 1..its count of events (not its version, which grows by
    // two where an extension decided in Redis was never recorded), created first, its final state last, at its
    // version; and no reservation event names a reservation PostgreSQL does not have.
    const { rows: reservations } = await db.query<{ id: string; status: string; version: number; event_sequence: number }>(
      'SELECT id, status, version, event_sequence FROM reservations',
    );
    const bySubject = new Map<string, CloudEvent[]>();
    for (const e of feed) bySubject.set(e.subject, [...(bySubject.get(e.subject) ?? []), e]);
    const wrong: string[] = [];
    for (const r of reservations) {
      const events = bySubject.get(r.id) ?? [];
      const sequences = events.map((e) => Number(e.sequence));
      if (sequences.join() !== Array.from({ length: r.event_sequence }, (_, i) => i + 1).join()) wrong.push(`${r.id} (${r.status}, ${r.event_sequence} events): sequences ${sequences.join()}`);
      else if ((events.at(-1)!.data as { version?: number }).version !== r.version) wrong.push(`${r.id} (v${r.version}): last event at version ${String((events.at(-1)!.data as { version?: number }).version)}`);
      else if (events[0]!.type !== 'inventory.reservation.created') wrong.push(`${r.id}: first ${events[0]!.type}`);
      else if (r.status !== 'pending' && events.at(-1)!.type !== `inventory.reservation.${r.status}`) wrong.push(`${r.id} (${r.status}): last ${events.at(-1)!.type}`);
    }
    const ids = new Set(reservations.map((r) => r.id));
    for (const e of feed) if (e.type.startsWith('inventory.reservation.') && !ids.has(e.subject)) wrong.push(`${e.type} of unknown ${e.subject}`);
    expect(wrong.slice(0, 20)).toEqual([]);
    expect(reservations.some((r) => r.status === 'expired') && reservations.some((r) => r.status === 'confirmed')).toBe(true);

    // Every item's events numbered 1..n without gap (n its last handed out), and its last stock.changed per location
    // says what PostgreSQL's stock row says.
    const { rows: items } = await db.query<{ item_id: string; sequence: number }>('SELECT item_id, sequence FROM event_item_sequences');
    expect(items.map((i) => i.item_id).sort()).toEqual([...new Set(SKUS.map((s) => s.itemId))].sort());
    for (const item of items) {
      const sequences = (bySubject.get(item.item_id) ?? []).map((e) => Number(e.sequence));
      expect(sequences, item.item_id).toEqual(Array.from({ length: item.sequence }, (_, i) => i + 1));
    }
    const { rows: stock } = await db.query<{ item_id: string; location: string; on_hand: number }>('SELECT item_id, location, on_hand FROM stock');
    for (const s of stock) {
      const last = feed.filter((e) => e.type === 'inventory.stock.changed' && e.subject === s.item_id && (e.data as { location: string }).location === s.location).at(-1);
      expect((last?.data as { onHand: number } | undefined)?.onHand, `${s.item_id}@${s.location}`).toBe(s.on_hand);
    }

    // NATS: the stream holds each event of the feed once, in per-subject order.
    expectEveryEventOnce(await readStream(nats.url, 'INVENTORY'), feed);
    // Webhooks: every event at least once, in per-subject order; a redelivery carries the same webhook-id.
    const accepted = hooks.accepted();
    expect(new Set(accepted.map((e) => e.id))).toEqual(new Set(feed.map((e) => e.id)));
    expect(orderViolations(accepted)).toEqual([]);
    for (const q of hooks.requests) expect(q.headers['webhook-id']).toBe((JSON.parse(q.body) as CloudEvent).id);
    expect(accepted.length).toBeGreaterThan(feed.length); // what was accepted and not recorded at the kill came again
    console.log(
      `events crash drill: ${feed.length} events, ${reservations.length} reservations; webhook redeliveries ${accepted.length - feed.length}; ` +
        `${first.crashes.length + second.crashes.length} unexpected exits`,
    );
    expect([...first.crashes, ...second.crashes]).toEqual([]);
    rmSync(logDir, { recursive: true, force: true });
  }, 120_000);
});

/** The whole feed, page after page (`GET /events?after=<nextCursor>`), until a page comes back empty. */
async function readFeed(base: string): Promise<CloudEvent[]> {
  const http = new HttpClient(10_000);
  const events: CloudEvent[] = [];
  try {
    for (let after: string | null = null; ; ) {
      const page = await http.request(base, 'GET', `/events?limit=1000${after === null ? '' : `&after=${encodeURIComponent(after)}`}`);
      if (page.status !== 200) throw new Error(`GET /events answered ${page.status}: ${JSON.stringify(page.body)}`);
      const { items, nextCursor } = page.body as { items: CloudEvent[]; nextCursor: string | null };
      if (items.length === 0) return events;
      events.push(...items);
      after = nextCursor;
    }
  } finally {
    http.close();
  }
}
