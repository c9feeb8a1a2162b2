import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { pino } from 'pino';
import type { Counter } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/metrics.js';
import { createPool, ensureDatabase } from '../../src/store/database.js';
import { ReplicaRouter } from '../../src/store/read-replica.js';
import { Api, expectPage, expectReservation, startHttpApp } from '../helpers/api.js';
import { newItem, type TestApp } from '../helpers/app.js';
import { freePort } from '../helpers/ports.js';
import { createTestDatabase, startPostgres, type PrivatePostgres } from '../helpers/postgres.js';
import { startReplica, type PostgresReplica } from '../helpers/postgres-replica.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';

// DATABASE_REPLICA_URL against a real streaming replica this file starts (one primary and one replica for the file):
// which reads it serves, how stale they may be, and that a replica lagging, failing or stopped never fails a read.

let primary: PrivatePostgres;
let replica: PostgresReplica;
const urlOf = (server: PrivatePostgres, database: string): string => `postgres://postgres@127.0.0.1:${server.port}/${database}`;

/** Two nodes of one deployment: `patient` takes answers up to a minute behind, `strict` up to 300 ms. */
let patient: TestApp;
let strict: TestApp;
const apps: TestApp[] = [];
/** Every node of this file shares one Redis key prefix: one deployment on one database. */
const prefix = `t${randomBytes(4).toString('hex')}:`;

beforeAll(async () => {
  primary = await startPostgres();
  replica = await startReplica(primary);
  const node = async (maxLagMs: number): Promise<TestApp> => {
    const app = await startHttpApp({
      DATABASE_URL: urlOf(primary, 'inventory'),
      DATABASE_REPLICA_URL: urlOf(replica, 'inventory'),
      DATABASE_REPLICA_MAX_LAG_MS: maxLagMs,
      REDIS_KEY_PREFIX: prefix,
    });
    apps.push(app);
    return app;
  };
  await ensureDatabase(urlOf(primary, 'inventory'));
  patient = await node(60_000);
  strict = await node(300);
  await replica.caughtUp();
}, 60_000);

afterAll(async () => {
  for (const app of apps.reverse()) await app.close();
  await replica?.destroy();
  await primary?.destroy();
});

/** The sum of a counter's values whose labels include `labels`. */
async function count(metric: Counter, labels: Record<string, string>): Promise<number> {
  const { values } = await metric.get();
  return values.filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l)).reduce((sum, v) => sum + v.value, 0);
}
const served = (t: TestApp, read: string, by: 'replica' | 'primary') => count(t.app.runtime.metrics.pgReads, { read, served_by: by });
const fallbacks = (t: TestApp, labels: Record<string, string>) => count(t.app.runtime.metrics.replicaFallbacks, labels);
const routeOf = (t: TestApp) => (t.app.runtime.reads as ReplicaRouter).route();

/** What one read cost: which server answered it (by the node's counters), and the answer. */
async function measured<T>(t: TestApp, read: string, call: () => Promise<T>): Promise<{ answer: T; by: 'replica' | 'primary' }> {
  const before = await served(t, read, 'replica');
  const answer = await call();
  return { answer, by: (await served(t, read, 'replica')) > before ? 'replica' : 'primary' };
}

interface Feed {
  items: { type: string; subject: string }[];
  nextCursor: string;
}
const feed = async (api: Api, after: string): Promise<Feed> => {
  const answer = await api.request({ method: 'GET', url: `/events?after=${after}&limit=1000` });
  expect(answer.status, answer.text).toBe(200);
  return answer.body as Feed;
};
const has = (page: Feed, type: string, subject: string): boolean => page.items.some((e) => e.type === type && e.subject === subject);

/** A stocked item and a pending hold of one unit on it under `reference`. */
async function pendingHold(api: Api, reference: string): Promise<string> {
  const item = newItem('rr');
  await api.stock(item, 10);
  return (await api.hold({ lines: [{ itemId: item, quantity: 1 }], reference })).id;
}

describe('reads served by the replica', () => {
  it('serves ended reservations, listings by reference and the feed; a pending or missing reservation is read from the primary', async () => {
    const api = Api.inject(patient.app);
    const reference = newItem('ref');
    const ended = await pendingHold(api, reference);
    expectReservation(await api.confirm(ended), 200);
    const pending = await pendingHold(api, reference);
    await waitFor('the feed to show the confirm', async () => (has(await feed(Api.inject(strict.app), '0'), 'inventory.reservation.confirmed', ended) ? true : undefined));
    await replica.caughtUp();
    await waitFor('the node to judge the replica fit', async () => (routeOf(patient) === 'replica' ? true : undefined));

    const got = await measured(patient, 'reservation', () => api.get(ended));
    expect({ status: expectReservation(got.answer, 200).status, by: got.by }).toEqual({ status: 'confirmed', by: 'replica' });

    const before = await fallbacks(patient, { read: 'reservation', reason: 'pending' });
    const live = await measured(patient, 'reservation', () => api.get(pending));
    expect({ status: expectReservation(live.answer, 200).status, by: live.by }).toEqual({ status: 'pending', by: 'primary' });
    expect(await fallbacks(patient, { read: 'reservation', reason: 'pending' })).toBe(before + 1);

    const listed = await measured(patient, 'reference', () => api.listByReference({ reference }));
    expect({ ids: expectPage(listed.answer).items.map((r) => r.id), by: listed.by }).toEqual({ ids: [pending, ended], by: 'replica' });

    const events = await measured(patient, 'events', () => feed(api, '0'));
    expect({ confirmed: has(events.answer, 'inventory.reservation.confirmed', ended), by: events.by }).toEqual({ confirmed: true, by: 'replica' });
  });

  it('answers listings and the feed as of a paused replica within the bound, never a stale reservation by id; past the bound the primary answers', async () => {
    const api = Api.inject(patient.app);
    const reference = newItem('ref');
    const first = await pendingHold(api, reference);
    const { nextCursor } = await feed(Api.inject(strict.app), '0');
    await replica.caughtUp();
    await waitFor('both nodes to judge the replica fit', async () => (routeOf(patient) === 'replica' && routeOf(strict) === 'replica' ? true : undefined));

    await replica.pauseReplay();
    try {
      // Written after the pause: the replica has neither.
      expectReservation(await api.confirm(first), 200);
      const second = await pendingHold(api, reference);

      // A reservation by id is the primary's whenever the replica's copy could be stale: its own writes, seen at once.
      const confirmed = await measured(patient, 'reservation', () => api.get(first));
      expect({ status: expectReservation(confirmed.answer, 200).status, by: confirmed.by }).toEqual({ status: 'confirmed', by: 'primary' });
      const created = await measured(patient, 'reservation', () => api.get(second));
      expect({ id: expectReservation(created.answer, 200).id, by: created.by }).toEqual({ id: second, by: 'primary' });
      expect(await fallbacks(patient, { read: 'reservation', reason: 'not_found' })).toBeGreaterThan(0);

      // Within a minute's bound, the listing and the feed are the replica's: as of the pause.
      const stale = await measured(patient, 'reference', () => api.listByReference({ reference }));
      expect({ items: expectPage(stale.answer).items.map((r) => [r.id, r.status]), by: stale.by }).toEqual({ items: [[first, 'pending']], by: 'replica' });
      const staleFeed = await measured(patient, 'events', () => feed(api, nextCursor));
      expect({ created: has(staleFeed.answer, 'inventory.reservation.created', second), by: staleFeed.by }).toEqual({ created: false, by: 'replica' });

      // 300 ms behind is too far for the strict node: the primary answers it, fresh.
      await waitFor('the strict node to find the replica lagging', async () => (routeOf(strict) === 'lagging' ? true : undefined));
      const strictApi = Api.inject(strict.app);
      const lagging = await fallbacks(strict, { reason: 'lagging' });
      const fresh = await measured(strict, 'reference', () => strictApi.listByReference({ reference }));
      expect({ items: expectPage(fresh.answer).items.map((r) => [r.id, r.status]), by: fresh.by }).toEqual({
        items: [
          [second, 'pending'],
          [first, 'confirmed'],
        ],
        by: 'primary',
      });
      await waitFor('the strict node\'s feed to show the new reservation', async () =>
        has(await feed(strictApi, nextCursor), 'inventory.reservation.created', second) ? true : undefined,
      );
      expect(await fallbacks(strict, { reason: 'lagging' })).toBeGreaterThan(lagging);
    } finally {
      await replica.resumeReplay();
    }

    // Caught up, the strict node reads the replica again.
    await waitFor('the strict node to read the replica again', async () => {
      const listed = await measured(strict, 'reference', () => Api.inject(strict.app).listByReference({ reference }));
      return listed.by === 'replica' && expectPage(listed.answer).items.length === 2 ? true : undefined;
    });
  });
});

describe('a replica that fails', () => {
  it('stopped mid-load (reservations, listings and the feed, 16 at a time): not one request fails, and the node stays ready', async () => {
    const api = Api.inject(patient.app);
    const reference = newItem('ref');
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const id = await pendingHold(api, reference);
      if (i % 2 === 0) expectReservation(await api.release(id), 200);
      ids.push(id);
    }
    await replica.caughtUp();
    await waitFor('the node to judge the replica fit', async () => (routeOf(patient) === 'replica' ? true : undefined));

    const requests = [...ids.map((id) => `/reservations/${id}`), `/reservations?reference=${reference}`, '/events?limit=50'];
    const failures: string[] = [];
    let answered = 0;
    let stop = false;
    const worker = async (n: number): Promise<void> => {
      for (let i = n; !stop; i++) {
        const url = requests[i % requests.length]!;
        const res = await patient.app.inject({ method: 'GET', url });
        answered++;
        if (res.statusCode !== 200) failures.push(`${url}: ${res.statusCode} ${res.body}`);
      }
    };
    const replicaReads = () => count(patient.app.runtime.metrics.pgReads, { served_by: 'replica' });
    const workers = Array.from({ length: 16 }, (_, n) => worker(n));
    try {
      const atStart = await replicaReads();
      await waitFor('reads served by the replica under load', async () => ((await replicaReads()) > atStart + 50 ? true : undefined));

      await replica.stop('immediate');
      const atStop = answered;
      await waitFor('reads answered with the replica down', async () => (answered > atStop + 200 ? true : undefined));
      expect(routeOf(patient)).toBe('down');
      expect((await api.ready()).status).toBe(200);

      await replica.start();
      const atRestart = await replicaReads();
      await waitFor('reads served by the replica again', async () => ((await replicaReads()) > atRestart + 50 ? true : undefined), { timeoutMs: 20_000 });
    } finally {
      stop = true;
      await Promise.all(workers);
    }
    expect(failures).toEqual([]);
    expect(await fallbacks(patient, { reason: 'error' })).toBeGreaterThan(0);
    expect(await fallbacks(patient, { reason: 'down' })).toBeGreaterThan(0);
  }, 60_000);

  it('unreachable from the start: the node starts, is ready, and every read is the primary\'s', async () => {
    const t = await startHttpApp({
      DATABASE_URL: urlOf(primary, 'inventory'),
      DATABASE_REPLICA_URL: `postgres://postgres@127.0.0.1:${await freePort()}/inventory`,
      REDIS_KEY_PREFIX: prefix,
    });
    apps.push(t);
    const api = Api.inject(t.app);
    const reference = newItem('ref');
    const id = await pendingHold(api, reference);
    expectReservation(await api.get(id), 200);
    expect(expectPage(await api.listByReference({ reference })).items.map((r) => r.id)).toEqual([id]);
    await feed(api, '0');
    expect(await count(t.app.runtime.metrics.pgReads, { served_by: 'replica' })).toBe(0);
    expect(await fallbacks(t, { reason: 'down' })).toBe(3);
    expect((await api.ready()).status).toBe(200);
  });
});

describe('a read that fails on the replica', () => {
  it('is answered by the primary, and the replica is not asked again until a sample finds it back', async () => {
    const proxy = await startTcpProxy(replica.port);
    const pools = [urlOf(primary, 'inventory'), `postgres://postgres@127.0.0.1:${proxy.port}/inventory`].map((url) =>
      createPool(url, { max: 2, queryTimeoutMs: 5_000 }),
    ) as [pg.Pool, pg.Pool];
    try {
      const metrics = createMetrics();
      // Never started: it samples only when told to.
      const router = new ReplicaRouter({ primary: pools[0], replica: pools[1], metrics, log: pino({ level: 'silent' }) }, { maxLagMs: 60_000 });
      const read = () => router.run('events', async (db) => (await db.query<{ port: number }>("SELECT current_setting('port')::int AS port")).rows[0]!.port);
      await router.sampleOnce();
      expect(await read()).toBe(replica.port);

      proxy.cut();
      expect(await read()).toBe(primary.port);
      expect(await read()).toBe(primary.port);
      const reasons = (await metrics.replicaFallbacks.get()).values.map((v) => [v.labels.reason, v.value]);
      expect(reasons).toEqual([
        ['error', 1],
        ['down', 1],
      ]);

      proxy.restore();
      expect(await read()).toBe(primary.port);
      await router.sampleOnce();
      expect(await read()).toBe(replica.port);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
      await proxy.close();
    }
  });
});

describe('what is taken for a replica', () => {
  /** A router of the primary and `replicaUrl`, sampled once, with what it logged. */
  async function judge(primaryUrl: string, replicaUrl: string): Promise<{ route: string; logged: string }> {
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const pools = [primaryUrl, replicaUrl].map((url) => createPool(url, { max: 2, queryTimeoutMs: 5_000 })) as [pg.Pool, pg.Pool];
    try {
      const router = new ReplicaRouter({ primary: pools[0], replica: pools[1], metrics: createMetrics(), log }, { maxLagMs: 60_000 });
      await router.sampleOnce();
      return { route: router.route(), logged: lines.join('') };
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  }

  it('a standby of the primary\'s cluster, on its database', async () => {
    expect(await judge(urlOf(primary, 'inventory'), urlOf(replica, 'inventory'))).toMatchObject({ route: 'replica', logged: expect.stringContaining('read replica up') });
  });

  it('never the primary itself, nor any server not in recovery', async () => {
    const { route, logged } = await judge(urlOf(primary, 'inventory'), urlOf(primary, 'inventory'));
    expect({ route, logged }).toMatchObject({ route: 'down', logged: expect.stringContaining('not a standby (not in recovery)') });
  });

  it('never a standby of another cluster, even with a database of the same name', async () => {
    // A database of the shared server, and one of the same name on this file's primary, replayed by its replica.
    const other = await createTestDatabase();
    try {
      await ensureDatabase(urlOf(primary, other.name));
      await replica.caughtUp();
      const { route, logged } = await judge(other.url, urlOf(replica, other.name));
      expect({ route, logged }).toMatchObject({ route: 'down', logged: expect.stringContaining("not a replica of DATABASE_URL's server") });
    } finally {
      await other.drop();
    }
  });

  it('never another database of the standby', async () => {
    const { route, logged } = await judge(urlOf(primary, 'inventory'), urlOf(replica, 'postgres'));
    expect({ route, logged }).toMatchObject({ route: 'down', logged: expect.stringContaining('it names the database postgres, DATABASE_URL inventory') });
  });
});
