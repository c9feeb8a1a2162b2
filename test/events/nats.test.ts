import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CloudEvent } from '../../src/events/envelope.js';
import { NatsTransport, STREAM_SUBJECTS } from '../../src/events/transports/nats.js';
import { ApiProcess } from '../drills/api-process.js';
import { appendEvents } from '../helpers/events.js';
import { greets, MACHINE_NATS_URL, startNats, type NatsServer } from '../helpers/nats-server.js';
import { freePort } from '../helpers/ports.js';
import { testRedisUrl } from '../helpers/servers.js';
import { waitFor } from '../helpers/wait.js';
import { expectEveryEventOnce, readStream, streamCount } from './nats-stream.js';
import {
  cursorOf,
  eventsDatabase,
  interleaved,
  startAtEnd,
  testRelays,
  type EventsDatabase,
  type TestRelays,
} from './support.js';

// NATS JetStream end to end: the relay publishing to real servers (a private `nats-server -js` per test, which a test
// may kill, and the machine's own), the stream read back message by message.

/** Whether the machine's NATS server answers (its test is skipped, and says so, where it does not). */
const machineNats = await greets(4222);
let database: EventsDatabase;
let relays: TestRelays;
const servers: NatsServer[] = [];
const connections: NatsConnection[] = [];

beforeAll(async () => {
  database = await eventsDatabase();
  relays = testRelays(database.db);
});
afterAll(async () => {
  await relays?.close();
  await Promise.all(connections.map((c) => c.close().catch(() => undefined)));
  await Promise.all(servers.map((s) => s.stop()));
  await database?.close();
});

async function nats(): Promise<NatsServer> {
  const server = await startNats();
  servers.push(server);
  return server;
}

async function client(url: string): Promise<{ nc: NatsConnection; jsm: JetStreamManager }> {
  const nc = await connect({ servers: url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  connections.push(nc);
  return { nc, jsm: await jetstreamManager(nc) };
}

describe('NATS JetStream', () => {
  it('publishes every event to the subject of its type with its id as Nats-Msg-Id, creating the stream over inventory.>', async () => {
    const server = await nats();
    await startAtEnd(database.db, 'nats');
    const stream = `S${randomBytes(4).toString('hex')}`;
    const appended = await appendEvents(database.db, [
      ...interleaved(150, 10, Math.random, 'res'),
      { subject: 'sku-1', type: 'inventory.stock.changed' },
      { subject: 'sku-1', type: 'inventory.availability.depleted' },
    ]);
    const relay = relays.relay(new NatsTransport({ servers: [server.url], stream }, { publishTimeoutMs: 2_000, concurrency: 16 }));
    relay.start();
    await waitFor('the cursor at the end', async () => ((await cursorOf(database.db, 'nats')) === appended.at(-1)!.position ? true : undefined));
    await relay.stop();

    const { jsm } = await client(server.url);
    expect((await jsm.streams.info(stream)).config.subjects).toEqual(STREAM_SUBJECTS);
    const stored = await readStream(server.url, stream);
    expectEveryEventOnce(stored, appended);
    expect(new Set(stored.map((s) => s.subject))).toEqual(
      new Set(['inventory.reservation.created', 'inventory.reservation.confirmed', 'inventory.stock.changed', 'inventory.availability.depleted']),
    );
    expect(stored[0]!.contentType).toBe('application/cloudevents+json');
    expect(stored[0]!.event).toMatchObject({ specversion: '1.0', source: '/test', datacontenttype: 'application/json' });
  });

  it('the stream drops a redelivery with the same Nats-Msg-Id (a relay resumed from an older cursor)', async () => {
    const server = await nats();
    await startAtEnd(database.db, 'nats');
    const stream = `S${randomBytes(4).toString('hex')}`;
    const before = await cursorOf(database.db, 'nats');
    const appended = await appendEvents(database.db, interleaved(40, 4, Math.random, 'dup'));
    const transport = () => new NatsTransport({ servers: [server.url], stream });
    const first = relays.relay(transport());
    first.start();
    await waitFor('delivery', async () => ((await cursorOf(database.db, 'nats')) === appended.at(-1)!.position ? true : undefined));
    await first.stop();
    // As if the cursor update had been lost to a crash: the next relay sends all of them again.
    await database.db.query('UPDATE event_cursors SET position = $1 WHERE transport = $2', [before, 'nats']);
    const { nc } = await client(server.url);
    const published: string[] = [];
    const sub = nc.subscribe('inventory.>', { callback: (_, m) => void published.push(m.json<CloudEvent>().id) });
    await nc.flush();
    const second = relays.relay(transport());
    second.start();
    await waitFor('redelivery', async () => ((await cursorOf(database.db, 'nats')) === appended.at(-1)!.position ? true : undefined));
    await second.stop();
    sub.unsubscribe();
    expect(published.length).toBe(appended.length); // every one was published again…
    expect(await streamCount(server.url, stream)).toBe(appended.length); // …and the stream kept one of each
    expectEveryEventOnce(await readStream(server.url, stream), appended);
  });

  it('a NATS server killed mid-stream and restarted: the relay retries until everything is in, once, in per-subject order', async () => {
    const server = await nats();
    await startAtEnd(database.db, 'nats');
    const stream = `S${randomBytes(4).toString('hex')}`;
    const appended = await appendEvents(database.db, interleaved(1_500, 30, Math.random, 'kill'));
    const relay = relays.relay(new NatsTransport({ servers: [server.url], stream }, { publishTimeoutMs: 500, concurrency: 16 }), {
      batchSize: 100,
      backoff: { baseMs: 20, capMs: 200 },
    });
    relay.start();
    await waitFor('some events in', async () => ((await cursorOf(database.db, 'nats')) > appended[200]!.position ? true : undefined));
    await server.kill9();
    const stalled = await cursorOf(database.db, 'nats');
    expect(stalled).toBeLessThan(appended.at(-1)!.position); // killed mid-stream
    await server.restart();
    await waitFor('every event', async () => ((await cursorOf(database.db, 'nats')) === appended.at(-1)!.position ? true : undefined), { timeoutMs: 20_000 });
    await relay.stop();
    expectEveryEventOnce(await readStream(server.url, stream), appended);
  });

  it('an API process killed with kill -9 between publishing and recording its cursor: the next one republishes, the stream keeps each event once', async () => {
    const server = await nats();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'irs-nats-api-'));
    const prefix = `t${randomBytes(4).toString('hex')}:`;
    const env = {
      DATABASE_URL: database.url,
      REDIS_URL: testRedisUrl(),
      REDIS_KEY_PREFIX: prefix,
      EVENTS_NATS_URL: server.url,
      LOG_LEVEL: 'info',
    };
    await startAtEnd(database.db, 'nats');
    const stream = 'INVENTORY';
    const appended = await appendEvents(database.db, interleaved(1_200, 40, Math.random, 'api'));
    // Hold the cursor row: the process publishes its first batch, then waits on its cursor update.
    const holder = new pg.Client({ connectionString: database.url });
    await holder.connect();
    await holder.query('BEGIN');
    await holder.query(`SELECT 1 FROM event_cursors WHERE transport = 'nats' FOR UPDATE`);
    const api = new ApiProcess('api-1', await freePort(), env, path.join(dir, 'api-1.log'));
    const { nc } = await client(server.url);
    const published: string[] = [];
    const sub = nc.subscribe('inventory.>', { callback: (_, m) => void published.push(m.json<CloudEvent>().id) });
    let restarted: ApiProcess | undefined;
    try {
      await api.start();
      await waitFor('a batch in the stream', async () => ((await streamCount(server.url, stream).catch(() => 0)) >= 500 ? true : undefined), { timeoutMs: 20_000 });
      await api.kill9();
      const inStream = await streamCount(server.url, stream);
      // Its cursor update, sent before the kill and waiting on the row, would still commit once the row is free:
      // end it, as if the process had died before sending it.
      await holder.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'UPDATE event_cursors%'`,
      );
      await holder.query('ROLLBACK');
      expect(await cursorOf(database.db, 'nats')).toBeLessThan(appended[inStream - 1]!.position); // published, not recorded

      restarted = new ApiProcess('api-2', await freePort(), env, path.join(dir, 'api-2.log'));
      await restarted.start();
      await waitFor('every event', async () => ((await cursorOf(database.db, 'nats')) === appended.at(-1)!.position ? true : undefined), { timeoutMs: 20_000 });
      await nc.flush();
      const republished = published.length - appended.length;
      expect(republished).toBeGreaterThanOrEqual(inStream); // the second process sent the first batch again…
      expectEveryEventOnce(await readStream(server.url, stream), appended); // …and the stream dropped it
    } finally {
      sub.unsubscribe();
      await holder.end().catch(() => undefined);
      await api.kill9();
      await restarted?.stop();
    }
  }, 60_000);

  it.runIf(machineNats)("against the machine's server (nats://127.0.0.1:4222): every event arrives, in per-subject order", async () => {
    // Its own stream unless one over inventory.> exists already (streams may not overlap): then that one, read
    // from the sequence it had reached, our events told apart by id.
    const { jsm } = await client(MACHINE_NATS_URL);
    let existing: { name: string; next: number } | undefined;
    for await (const s of jsm.streams.list()) {
      if (s.config.subjects?.some((subject) => subject === 'inventory.>' || subject === '>')) existing = { name: s.config.name, next: s.state.last_seq + 1 };
    }
    const stream = existing?.name ?? `IRS_TEST_${randomBytes(4).toString('hex')}`;
    await startAtEnd(database.db, 'nats');
    const appended = await appendEvents(database.db, interleaved(200, 10, Math.random, 'machine'));
    const relay = relays.relay(new NatsTransport({ servers: [MACHINE_NATS_URL], stream }));
    relay.start();
    try {
      await waitFor('the cursor at the end', async () => ((await cursorOf(database.db, 'nats')) === appended.at(-1)!.position ? true : undefined));
      await relay.stop();
      const ours = new Set(appended.map((e) => e.id));
      const stored = (await readStream(MACHINE_NATS_URL, stream, existing?.next)).filter((s) => ours.has(s.event.id));
      expectEveryEventOnce(stored, appended);
    } finally {
      if (!existing) await jsm.streams.delete(stream).catch(() => undefined);
    }
  });
});
