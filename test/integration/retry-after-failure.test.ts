import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReservationRequest } from '../../src/domain/schemas.js';
import { ANONYMOUS } from '../../src/http/access.js';
import { reconcile } from '../../src/jobs/reconcile.js';
import { formatRecord, parseRecord, recordPrefix, recordSuffix } from '../../src/redis/layout.js';
import { requestHash } from '../../src/service/idempotency.js';
import { sessionName } from '../../src/store/nodes.js';
import { Api, availabilityOf, outcome, problemOf, reservationOf, startHttpApp, type Answer } from '../helpers/api.js';
import { newItem, newKey, type TestApp } from '../helpers/app.js';
import { checkInvariants } from '../helpers/invariants.js';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres.js';
import { startRedis, type RedisServer } from '../helpers/redis-server.js';
import { waitForLockWait } from '../helpers/sessions.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Issue 10: after a request with an Idempotency-Key failed (503) or its process died, a retry with the same key and
 * body gets a definitive answer (201 or a 4xx) within 5 s: a failed request frees its claim before it answers, and a
 * claim whose process died is freed at once. Never 409 "in use" for a request that has already answered; never
 * "nothing was reserved" for an attempt that may yet commit; never two reservations for one key.
 */

// Low timeouts so an outage turns into a 503 quickly; a lost batch's fate is waited for 1 s, then "unknown".
const FAST_FAIL = { DATABASE_QUERY_TIMEOUT_MS: 1000, REDIS_COMMAND_TIMEOUT_MS: 1000, WRITER_FATE_WAIT_MS: 1000 };
const DEFINITIVE_WITHIN_MS = 5_000;

let database: TestDatabase;
let proxy: TcpProxy;
let t: TestApp;
let api: Api;
/** The same database, not through the proxy. */
let direct: pg.Pool;

beforeAll(async () => {
  database = await createTestDatabase();
  const base = new URL(database.url);
  proxy = await startTcpProxy(Number(base.port || 5432), base.hostname);
  const viaProxy = new URL(database.url);
  viaProxy.port = String(proxy.port);
  t = await startHttpApp({ ...FAST_FAIL, RECONCILE_INTERVAL_MS: 0, DATABASE_URL: viaProxy.toString() });
  api = Api.inject(t.app);
  direct = new pg.Pool({ connectionString: database.url, max: 3 });
  // As the service's pools do (src/store/database.ts): an idle connection ended by the server (57P01) must not
  // crash the test process. One did in a clean-clone run, when the writer's fate lookup still ended a lost batch's
  // backend by process id alone, and the id had been reused (writer.test.ts: "never ends another session").
  direct.on('error', () => {});
}, 60_000);
afterAll(async () => {
  await t?.close();
  await direct?.end();
  await proxy?.close();
  await database?.drop();
});

async function stocked(quantity: number): Promise<string> {
  const item = newItem('retry');
  await api.stock(item, quantity);
  return item;
}

const recordOf = (key: string) => t.app.runtime.redis.get(t.app.runtime.keys.idempotency(ANONYMOUS, key));

/** The idempotency rows PostgreSQL has for `key` (the unique key allows one). */
async function boundTo(key: string): Promise<string[]> {
  const { rows } = await direct.query<{ id: string }>('SELECT reservation_id AS id FROM idempotency_keys WHERE key = $1', [key]);
  return rows.map((r) => r.id);
}

/** Waits out the pool noticing an outage (see fail-closed.test.ts: a dead idle client must not be checked out). */
const poolDrained = () =>
  waitFor('the pools to drop their dead connections', async () =>
    t.app.runtime.db.totalCount === 0 && t.app.runtime.writer.pool.totalCount === 0 ? true : undefined,
  );

/**
 * Leaves idle connections in the writer's pool, so that a batch sent next goes out on one of them (and its answer can
 * be lost) rather than waiting for a new connection (which fails before anything is sent).
 */
async function warmPool(): Promise<void> {
  const clients = await Promise.all([1, 2, 3].map(() => t.app.runtime.writer.pool.connect()));
  // Answered after what the writer asks of a new connection (its backend), so nothing of that is still in flight.
  await Promise.all(clients.map((c) => c.query('SELECT 1')));
  for (const c of clients) c.release();
}

/** Retries `key` with `body` until a definitive answer (not 5xx, not 409 in use); returns it and every answer. */
async function retryUntilDefinitive(key: string, body: ReservationRequest): Promise<{ last: Answer; answers: string[]; tookMs: number }> {
  const started = Date.now();
  const answers: string[] = [];
  const last = await waitFor(
    `a definitive answer for ${key}`,
    async () => {
      const a = await api.reserve(body, key);
      answers.push(outcome(a));
      return a.status < 500 && outcome(a) !== '409 idempotency_key_in_use' ? a : undefined;
    },
    { timeoutMs: 3 * DEFINITIVE_WITHIN_MS, intervalMs: 100 },
  );
  return { last, answers, tookMs: Date.now() - started };
}

describe('a request whose record failed frees its claim before it answers 503', () => {
  it('PostgreSQL cut: 503, an immediate retry 503 again (never 409), and 201 once PostgreSQL is back', async () => {
    const item = await stocked(10);
    const key = newKey();
    const body: ReservationRequest = { lines: [{ itemId: item, quantity: 3 }] };
    proxy.cut();
    try {
      await poolDrained();
      expect(outcome(await api.reserve(body, key))).toBe('503 unavailable');
      expect(await recordOf(key)).toBeNull();
      expect(outcome(await api.reserve(body, key))).toBe('503 unavailable');
    } finally {
      proxy.restore();
    }
    const { last, answers } = await retryUntilDefinitive(key, body);
    expect(outcome(last), answers.join(', ')).toBe('201');
    expect(answers).not.toContain('409 idempotency_key_in_use');
    expect(await boundTo(key)).toEqual([reservationOf(last).id]);
  });

  it('a batch fenced out by a rebuild (stale) answers 503 and frees its claim: the retry is created once Redis is rebuilt', async () => {
    const item = await stocked(10);
    const key = newKey();
    const body: ReservationRequest = { lines: [{ itemId: item, quantity: 2 }] };
    const { redis, keys, recovery } = t.app.runtime;
    // A rebuild's first step: bump the generation row (and hold it), so the batch below waits on the fence.
    const rebuild = await direct.connect();
    try {
      await rebuild.query('BEGIN');
      await rebuild.query('UPDATE state_generation SET generation = generation + 1');
      const answer = api.reserve(body, key);
      await waitForLockWait(direct, 'the batch to wait on the fence');
      await rebuild.query('COMMIT');
      const fenced = await answer;
      expect(outcome(fenced)).toBe('503 unavailable');
      expect(problemOf(fenced).detail).toMatch(/rebuilt/);
      // Freed before the answer (a rebuild leaves idempotency records in place).
      expect(await recordOf(key)).toBeNull();
    } finally {
      await rebuild.query('ROLLBACK').catch(() => undefined);
      rebuild.release();
      // The rest of that rebuild: Redis refilled under the new generation.
      await redis.del(keys.marker);
      await recovery.ensure();
    }
    const retry = await api.reserve(body, key);
    expect(outcome(retry), retry.text).toBe('201');
    expect(await boundTo(key)).toEqual([reservationOf(retry).id]);
  });
});

describe('a request that answered 503 without learning whether its batch committed', () => {
  it('not committed (packets dropped): retries get 503 while PostgreSQL is away, then a new reservation, never 409', async () => {
    const item = await stocked(10);
    const key = newKey();
    const body: ReservationRequest = { lines: [{ itemId: item, quantity: 3 }] };
    proxy.blackhole();
    let restored = 0;
    try {
      const first = await api.reserve(body, key);
      expect(outcome(first)).toBe('503 unavailable');
      expect(problemOf(first).detail).toMatch(/could not be asked/);
      expect(parseRecord((await recordOf(key))!)).toMatchObject({ nodeId: t.app.runtime.lease.nodeId, outcomeUnknown: true });
      expect(outcome(await api.reserve(body, key))).toBe('503 unavailable');
    } finally {
      proxy.restore();
      restored = Date.now();
    }
    const { last, answers } = await retryUntilDefinitive(key, body);
    expect(outcome(last), answers.join(', ')).toBe('201');
    expect(last.headers['idempotent-replayed']).toBeUndefined();
    expect(answers).not.toContain('409 idempotency_key_in_use');
    expect(Date.now() - restored).toBeLessThan(DEFINITIVE_WITHIN_MS);
    expect(await boundTo(key)).toEqual([reservationOf(last).id]);
    // The first attempt's hold was taken back once its fate was learned: only the retry's 3 units are held.
    await waitFor('the first attempt to be undone', async () => {
      const a = await api.availability(item);
      return (a.body as { reserved: number }).reserved === 3 ? true : undefined;
    });
  });

  it('committed (its answer lost): a retry is never told "insufficient" while PostgreSQL is away, and replays the first reservation after', async () => {
    // The first attempt takes every unit: a retry deciding in Redis alone would find none left.
    const item = await stocked(3);
    const key = newKey();
    const body: ReservationRequest = { lines: [{ itemId: item, quantity: 3 }] };
    await warmPool();
    proxy.loseReplies();
    let restored = 0;
    try {
      const first = await api.reserve(body, key);
      expect(outcome(first)).toBe('503 unavailable');
      expect(await boundTo(key)).toHaveLength(1); // committed: only its answer was lost
      expect(outcome(await api.reserve(body, key))).toBe('503 unavailable');
    } finally {
      proxy.restore();
      restored = Date.now();
    }
    const { last, answers } = await retryUntilDefinitive(key, body);
    expect(outcome(last), answers.join(', ')).toBe('201');
    expect(last.headers['idempotent-replayed']).toBe('true');
    expect(Date.now() - restored).toBeLessThan(DEFINITIVE_WITHIN_MS);
    expect(await boundTo(key)).toEqual([reservationOf(last).id]);
    expect((await api.availability(item)).body).toMatchObject({ onHand: 3, reserved: 3, available: 0 });
  });
});

describe('a request that answered 503 while its batch committed with the key refused (another attempt had it)', () => {
  it('gives its hold and its claim back once it learns so, and retries replay the first reservation', async () => {
    const item = await stocked(10);
    const key = newKey();
    const body: ReservationRequest = { lines: [{ itemId: item, quantity: 2 }] };
    const first = await api.reserve(body, key);
    expect(outcome(first)).toBe('201');
    // Redis lost the key's record: the next attempt decides (holds 2 more) and its batch finds the key taken.
    await t.app.runtime.redis.del(t.app.runtime.keys.idempotency(ANONYMOUS, key));
    await warmPool();
    proxy.loseReplies();
    try {
      const lost = await api.reserve(body, key);
      expect(outcome(lost)).toBe('503 unavailable');
      expect(problemOf(lost).detail).toMatch(/could not be asked/);
      expect((await api.availability(item)).body).toMatchObject({ reserved: 4 });
    } finally {
      proxy.restore();
    }
    await waitFor('the refused attempt\'s hold and claim to be given back', async () => {
      const a = await api.availability(item);
      return (a.body as { reserved: number }).reserved === 2 && (await recordOf(key)) === null ? true : undefined;
    });
    const retry = await api.reserve(body, key);
    expect(outcome(retry)).toBe('201');
    expect(retry.text).toBe(first.text);
    expect(await boundTo(key)).toEqual([reservationOf(first).id]);
  });
});

describe('a claim whose node died', () => {
  const DEAD = 'deadbeef0001';

  it('is freed only once nothing that node sent can commit: a statement it left running in PostgreSQL is ended first', async () => {
    // The dead node's attempt took every unit, and its batch is still in PostgreSQL, blocked on a lock: once the
    // lock goes it would record the key. A retry must not say "insufficient" (nothing reserved) and then see it commit.
    const item = await stocked(2);
    const key = newKey();
    const body: ReservationRequest = { lines: [{ itemId: item, quantity: 2 }] };
    const hash = requestHash(body);
    const deadId = '01900000-0000-7000-8000-00000000dead';
    const { decisions, keys, lease } = t.app.runtime;
    const lines = [{ itemId: item, location: 'default', quantity: 2 }];
    const held = await decisions.reserve({
      reservationId: deadId,
      lines,
      ttlMs: 60_000,
      idempotencyKey: keys.idempotency(ANONYMOUS, key),
      recordPrefix: recordPrefix(hash, deadId),
      recordSuffix: recordSuffix(DEAD),
      recordTtlMs: 60_000,
      header: { reference: null, metadata: {}, tenant: 'default', allocation: null },
      lease: { key: lease.key, ttlMs: lease.ttlMs }, // this node's lease: DEAD has none
    });
    expect(held.kind).toBe('held');

    const lock = await direct.connect();
    const deadSession = new pg.Client({ connectionString: database.url, application_name: sessionName(DEAD) });
    deadSession.on('error', () => {});
    await deadSession.connect();
    try {
      await lock.query('BEGIN');
      await lock.query('SELECT pg_advisory_xact_lock(4201)');
      const stuck = deadSession
        .query(
          `WITH l AS (SELECT pg_advisory_xact_lock(4201))
           INSERT INTO idempotency_keys (scope, key, request_hash, reservation_id, status_code, response)
           SELECT $1, $2, $3, $4, 201, '{}' FROM l`,
          [ANONYMOUS, key, hash, deadId],
        )
        .then(
          () => 'committed',
          () => 'ended',
        );
      await waitForLockWait(direct, "the dead node's statement to wait on the lock", { applicationName: sessionName(DEAD) });

      const retry = await api.reserve(body, key);
      // Definitive and true: nothing is reserved for this key, and nothing will be.
      expect(outcome(retry), retry.text).toBe('409 insufficient_stock');
      await lock.query('COMMIT');
      expect(await stuck).toBe('ended');
      expect(await boundTo(key)).toEqual([]);
    } finally {
      await lock.query('ROLLBACK').catch(() => undefined);
      lock.release();
      await deadSession.end().catch(() => undefined);
    }
  });

  it('committed before it died: the retry replays its answer', async () => {
    const item = await stocked(5);
    const key = newKey();
    const body: ReservationRequest = { lines: [{ itemId: item, quantity: 1 }] };
    const first = await api.reserve(body, key);
    expect(outcome(first)).toBe('201');
    // Its record as the dead node left it (PostgreSQL has the commit).
    const { redis, keys } = t.app.runtime;
    await redis.set(
      keys.idempotency(ANONYMOUS, key),
      formatRecord({ hash: requestHash(body), reservationId: reservationOf(first).id, claimedAtMs: Date.now(), nodeId: DEAD, outcomeUnknown: false }),
    );
    const retry = await api.reserve(body, key);
    expect(outcome(retry)).toBe('201');
    expect(retry.text).toBe(first.text);
    expect(retry.headers['idempotent-replayed']).toBe('true');
  });
});

describe('Redis ran the reserve script after the request had given up on it (its answer lost)', () => {
  let redis: RedisServer;
  let late: TestApp;
  let lateApi: Api;
  beforeAll(async () => {
    redis = await startRedis();
    late = await startHttpApp({ ...FAST_FAIL, REDIS_COMMAND_TIMEOUT_MS: 300, RECONCILE_INTERVAL_MS: 0, REDIS_URL: redis.url });
    lateApi = Api.inject(late.app);
  }, 60_000);
  afterAll(async () => {
    await late?.close();
    await redis?.kill9();
  });

  it('the claim it left is let go once Redis answers: a retry is created within 5 s, not told "in use" for the record\'s life', async () => {
    const item = newItem('late-script');
    await lateApi.stock(item, 5);
    const key = newKey();
    const body: ReservationRequest = { lines: [{ itemId: item, quantity: 1 }] };
    // Scripts wait while writes are paused; the request times out (503) and its script runs when the pause ends.
    const admin = new Redis(redis.url);
    try {
      await admin.client('PAUSE', 1_200, 'WRITE');
      const first = await lateApi.reserve(body, key);
      expect(outcome(first)).toBe('503 unavailable');
      await waitFor('the paused script to hold its unit', async () =>
        availabilityOf(await lateApi.availability(item)).reserved === 1 || undefined,
      );
    } finally {
      admin.disconnect();
    }

    const started = Date.now();
    const last = await waitFor(
      `a definitive answer for ${key}`,
      async () => {
        const a = await lateApi.reserve(body, key);
        return a.status < 500 && outcome(a) !== '409 idempotency_key_in_use' ? a : undefined;
      },
      { timeoutMs: 3 * DEFINITIVE_WITHIN_MS, intervalMs: 100 },
    );
    expect(outcome(last)).toBe('201');
    expect(Date.now() - started).toBeLessThan(DEFINITIVE_WITHIN_MS);

    // The late script's hold has no record: reconciliation drops it, and then Redis and PostgreSQL agree.
    const report = await reconcile(late.app.runtime.reconcileDeps, {
      heal: false, dropOrphans: true, rebuildOnDrift: false, orphanAfterMs: 0, settleMs: 0,
    });
    expect(report.orphanHolds).toHaveLength(1);
    await checkInvariants(late.app, [item]);
  });
});
