import { randomBytes } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import type { FastifyInstance } from 'fastify';
import pgClient from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReservationRequest } from '../../src/domain/schemas.js';
import { ensureDatabase } from '../../src/store/database.js';
import { Api, availabilityOf, outcome, problemOf, reservationOf, startHttpApp, useHttpAppOnPrivateRedis, waitReady, type Answer } from '../helpers/api.js';
import { newItem, newKey, type TestApp } from '../helpers/app.js';
import { checkInvariants } from '../helpers/invariants.js';
import { startPostgres, type PrivatePostgres } from '../helpers/postgres.js';
import { ANY_NODE, backendAlive, waitForLockWait } from '../helpers/sessions.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';

/** I6: with Redis or PostgreSQL unreachable, mutations answer 503 and change nothing; they never guess. */

// Low timeouts so an outage turns into a 503 quickly instead of hanging the suite.
const FAST_FAIL = { DATABASE_QUERY_TIMEOUT_MS: 1000, REDIS_COMMAND_TIMEOUT_MS: 1000, WRITER_FATE_WAIT_MS: 1000 };

/** Everything Redis holds about an item, plus one idempotency record: what "unchanged" is judged by. */
async function redisState(app: FastifyInstance, itemId: string, idempotencyKey?: string) {
  const { redis, keys } = app.runtime;
  const k = keys.item(itemId);
  return {
    stock: await redis.hgetall(k.stock),
    holds: await redis.hgetall(k.holds),
    exp: await redis.zrange(k.exp, 0, -1, 'WITHSCORES'),
    idempotency: idempotencyKey ? await redis.get(keys.idempotency('_', idempotencyKey)) : null,
  };
}

/** Everything PostgreSQL holds that a mutation could change. */
async function pgState(app: FastifyInstance) {
  const q = async (sql: string) => (await app.runtime.db.query(sql)).rows;
  return {
    stock: await q('SELECT item_id, location, on_hand, reserved FROM stock ORDER BY 1, 2'),
    reservations: await q('SELECT id, status, updated_at FROM reservations ORDER BY id'),
    lines: await q('SELECT reservation_id, line_no, quantity FROM reservation_lines ORDER BY 1, 2'),
    keys: await q('SELECT key, reservation_id FROM idempotency_keys ORDER BY key'),
    movements: await q('SELECT count(*)::int AS n FROM stock_movements'),
  };
}

function expectUnavailable(a: Answer, what: string): void {
  expect(outcome(a), `${what}: ${a.text}`).toBe('503 unavailable');
  expect(a.headers['content-type'], what).toMatch(/^application\/problem\+json/);
  expect(problemOf(a)).toMatchObject({ type: 'about:blank', status: 503, code: 'unavailable' });
}

describe('PostgreSQL unreachable (I6)', () => {
  let pg: PrivatePostgres;
  let proxy: TcpProxy;
  let t: TestApp;
  let api: Api;
  let directUrl: string; // the same database, not through the proxy
  const items: string[] = [];

  beforeAll(async () => {
    pg = await startPostgres();
    proxy = await startTcpProxy(pg.port);
    const database = `irs_fail_closed_${randomBytes(4).toString('hex')}`;
    const url = `postgres://postgres@127.0.0.1:${proxy.port}/${database}`;
    directUrl = `postgres://postgres@127.0.0.1:${pg.port}/${database}`;
    await ensureDatabase(url);
    t = await startHttpApp({ ...FAST_FAIL, DATABASE_URL: url });
    api = Api.inject(t.app);
  }, 60_000);
  afterAll(async () => {
    await t?.close();
    await proxy?.close();
    await pg?.destroy();
  });

  /**
   * Waits until the pools have dropped every connection the outage killed. Without this, the next request can check
   * out an idle client whose socket died a moment ago, and that client's 'error' event has no listener (the bug
   * reproduced on its own below), which would make these tests flaky rather than test what they name.
   */
  const poolNoticed = () =>
    waitFor('the pools to drop their dead connections', async () =>
      t.app.runtime.db.totalCount === 0 && t.app.runtime.writer.pool.totalCount === 0 ? true : undefined,
    );

  /** An item with stock 10 and one pending reservation of 2 on it. */
  async function seed(): Promise<{ sku: string; held: string }> {
    const sku = newItem('pg-down');
    items.push(sku);
    await api.stock(sku, 10);
    const held = await api.reserve({ lines: [{ itemId: sku, quantity: 2 }] });
    expect(outcome(held)).toBe('201');
    return { sku, held: reservationOf(held).id };
  }

  /** Every mutation answers 503 and leaves Redis exactly as it was; availability (Redis only) still answers. */
  async function expectFailsClosed(sku: string, held: string, key: string, body: ReservationRequest): Promise<void> {
    const before = await redisState(t.app, sku, key);
    expect(before.idempotency).toBeNull();

    expectUnavailable(await api.reserve(body, key), 'reserve');
    expect(await redisState(t.app, sku, key)).toEqual(before);
    expect(availabilityOf(await api.availability(sku))).toMatchObject({ onHand: 10, reserved: 2, available: 8 });

    expectUnavailable(await api.confirm(held), 'confirm');
    expectUnavailable(await api.release(held), 'release');
    expectUnavailable(await api.putStock(sku, { quantity: 25 }), 'stock PUT');
    expectUnavailable(await api.adjust(sku, { delta: -3 }), 'stock adjustment');
    expect(await redisState(t.app, sku, key)).toEqual(before);
    expect(availabilityOf(await api.availability(sku))).toMatchObject({ onHand: 10, reserved: 2, available: 8 });

    const ready = await api.ready();
    expect(ready.status).toBe(503);
    expect(problemOf(ready).checks).toMatchObject({ postgres: 'unreachable' });
  }

  /** Back up: the very request that failed succeeds with the same key, as a new reservation (201, not a replay). */
  async function expectRecovers(sku: string, held: string, key: string, body: ReservationRequest): Promise<void> {
    await waitReady(t.app);
    const retry = await api.reserve(body, key);
    expect(outcome(retry), retry.text).toBe('201');
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    expect(availabilityOf(await api.availability(sku))).toMatchObject({ onHand: 10, reserved: 5, available: 5 });
    expect(outcome(await api.confirm(held))).toBe('200');
    expect(availabilityOf(await api.availability(sku))).toMatchObject({ onHand: 8, reserved: 3, available: 5 });
    await checkInvariants(t.app, items);
  }

  it('connection cut: mutations answer 503 and change nothing; after restore the same key succeeds', async () => {
    const { sku, held } = await seed();
    const key = newKey();
    const body: ReservationRequest = { lines: [{ itemId: sku, quantity: 3 }] };
    proxy.cut();
    try {
      await poolNoticed();
      await expectFailsClosed(sku, held, key, body);
    } finally {
      proxy.restore();
    }
    await expectRecovers(sku, held, key, body);
  });

  it('server stopped: mutations answer 503 and change nothing; after a restart the same key succeeds', async () => {
    const { sku, held } = await seed();
    const key = newKey();
    const body: ReservationRequest = { lines: [{ itemId: sku, quantity: 3 }] };
    await pg.stop('fast');
    try {
      await poolNoticed();
      await expectFailsClosed(sku, held, key, body);
    } finally {
      await pg.start();
    }
    await expectRecovers(sku, held, key, body);
  });

  it('silent partition (packets dropped): mutations answer 503; once PostgreSQL answers, every decision is taken back', async () => {
    const { sku, held } = await seed();
    const key = newKey();
    const body: ReservationRequest = { lines: [{ itemId: sku, quantity: 3 }] };
    const before = await redisState(t.app, sku, key);
    const pgBefore = await pgState(t.app);
    proxy.blackhole();
    try {
      // A statement sent into the partition may yet commit, so its decision stays in Redis (holding units, never
      // offering extra ones) until the writer can ask PostgreSQL.
      expectUnavailable(await api.reserve(body, key), 'reserve');
      expectUnavailable(await api.confirm(held), 'confirm');
      expectUnavailable(await api.release(held), 'release');
      expectUnavailable(await api.adjust(sku, { delta: -3 }), 'stock adjustment');
      expect(availabilityOf(await api.availability(sku)).available).toBeLessThanOrEqual(8);
      const ready = await api.ready();
      expect(ready.status).toBe(503);
      expect(problemOf(ready).checks).toMatchObject({ postgres: 'unreachable' });
    } finally {
      proxy.restore();
    }
    // PostgreSQL never received those statements: the writer learns it, and each decision is undone.
    await waitFor('the undecided decisions to be taken back', async () =>
      isDeepStrictEqual(await redisState(t.app, sku, key), before) ? true : undefined,
    { timeoutMs: 30_000, intervalMs: 100 });
    expect(await pgState(t.app)).toEqual(pgBefore);
    await expectRecovers(sku, held, key, body);
  });

  it('a stock increase that committed while its answer was lost is made available once PostgreSQL can say so', async () => {
    const { sku } = await seed();
    const direct = new pgClient.Client({ connectionString: directUrl });
    await direct.connect();
    const onHandInPostgres = async () =>
      (await direct.query<{ on_hand: number }>('SELECT on_hand FROM stock WHERE item_id = $1', [sku])).rows[0]?.on_hand;
    proxy.loseReplies();
    try {
      // The batch commits, its answer is lost, and PostgreSQL cannot be asked for longer than WRITER_FATE_WAIT_MS.
      const adjusted = await api.adjust(sku, { delta: 5 });
      expectUnavailable(adjusted, 'increase whose answer was lost');
      expect(problemOf(adjusted).detail).toMatch(/could not be asked/);
      expect(await onHandInPostgres()).toBe(15);
      // Until the writer learns the batch's fate, the increase is held back: Redis never offers unrecorded units.
      expect(availabilityOf(await api.availability(sku))).toMatchObject({ onHand: 10, reserved: 2, available: 8 });
    } finally {
      proxy.restore();
      await direct.end();
    }
    await waitFor('the recorded increase to be applied in Redis', async () =>
      availabilityOf(await api.availability(sku)).onHand === 15 ? true : undefined,
    { timeoutMs: 15_000, intervalMs: 100 });
    expect(availabilityOf(await api.availability(sku))).toMatchObject({ onHand: 15, reserved: 2, available: 13 });
    await waitReady(t.app);
    await checkInvariants(t.app, items);
  });

  it('a stock PUT creating a new item during an outage leaves nothing behind', async () => {
    const sku = newItem('pg-down-new');
    proxy.cut();
    try {
      await poolNoticed();
      expectUnavailable(await api.putStock(sku, { quantity: 7 }), 'stock PUT of a new item');
    } finally {
      proxy.restore();
    }
    await waitReady(t.app);
    expect(outcome(await api.availability(sku))).toBe('404 item_not_found');
    expect(await t.app.runtime.redis.exists(t.app.runtime.keys.item(sku).stock)).toBe(0);
  });

  it('PostgreSQL going away while a batch is committing answers 503 and does not crash the process', async () => {
    const sku = newItem('pg-down-mid-commit');
    items.push(sku);
    await api.stock(sku, 10);
    const before = await redisState(t.app, sku);

    // Hold the stock row so the next batch blocks inside its transaction, on a checked-out client.
    const locker = new pgClient.Client({ connectionString: directUrl });
    const watcher = new pgClient.Client({ connectionString: directUrl });
    await locker.connect();
    await watcher.connect();
    const saved = process.listeners('uncaughtException');
    const uncaught: unknown[] = [];
    try {
      await locker.query('BEGIN');
      await locker.query('SELECT * FROM stock WHERE item_id = $1 FOR UPDATE', [sku]);
      const adjusted = api.adjust(sku, { delta: 1 });
      const [batch] = await waitForLockWait(watcher, 'the batch to block on the row lock', { applicationName: ANY_NODE });

      process.removeAllListeners('uncaughtException');
      process.on('uncaughtException', (err) => uncaught.push(err));
      proxy.cut();
      expectUnavailable(await adjusted, 'adjustment whose commit lost its connection');
      // Every connection the cut killed has been dropped, so its socket's events (the ones that could go unheard)
      // have run while the uncaught-exception listener above is in place.
      await poolNoticed();
      // The statement is still waiting inside PostgreSQL: the writer's lookup must end it before it can commit,
      // and then take the adjustment back out of Redis.
      expect(await backendAlive(watcher, batch!)).toBe(true);
      proxy.restore();
      await waitFor('the adjustment to be taken back', async () =>
        isDeepStrictEqual(await redisState(t.app, sku), before) ? true : undefined,
      { timeoutMs: 30_000, intervalMs: 100 });
      // Ended, not merely abandoned: the row is still locked, and the backend that ran the batch is gone, so nothing
      // is left that could commit the adjustment once the lock is released.
      expect(await backendAlive(watcher, batch!)).toBe(false);
    } finally {
      process.removeAllListeners('uncaughtException');
      for (const listener of saved) process.on('uncaughtException', listener);
      proxy.restore();
      await locker.query('ROLLBACK').catch(() => undefined);
      await Promise.all([locker.end(), watcher.end()]);
    }
    expect(await redisState(t.app, sku)).toEqual(before);
    const { rows } = await t.app.runtime.db.query('SELECT on_hand FROM stock WHERE item_id = $1', [sku]);
    expect(rows).toEqual([{ on_hand: 10 }]);
    expect(uncaught.map((e) => String(e))).toEqual([]);
  });
});

describe('Redis unreachable (I6) and rebuilt from PostgreSQL', () => {
  const { redis, t, api } = useHttpAppOnPrivateRedis(FAST_FAIL);

  it('killed: mutations and availability answer 503 and PostgreSQL is unchanged; restarted empty, it rebuilds and answers from PostgreSQL', async () => {
    const sku = newItem('redis-down');
    const other = newItem('redis-down');
    await api.stock(sku, 10);
    await api.stock(other, 4, 'wh-9');
    const firstKey = newKey();
    const firstBody: ReservationRequest = { lines: [{ itemId: sku, quantity: 2 }, { itemId: other, location: 'wh-9', quantity: 1 }] };
    const first = await api.reserve(firstBody, firstKey);
    expect(outcome(first)).toBe('201');
    const held = reservationOf(first);
    const sold = await api.reserve({ lines: [{ itemId: sku, quantity: 1 }] });
    expect(outcome(await api.confirm(reservationOf(sold).id))).toBe('200');
    await t.app.runtime.writer.drain();
    const before = await pgState(t.app);

    await redis.kill9();
    const key = newKey();
    const body: ReservationRequest = { lines: [{ itemId: sku, quantity: 3 }] };
    expectUnavailable(await api.reserve(body, key), 'reserve');
    expectUnavailable(await api.availability(sku), 'availability');
    expectUnavailable(await api.confirm(held.id), 'confirm');
    expectUnavailable(await api.release(held.id), 'release');
    expectUnavailable(await api.putStock(sku, { quantity: 50 }), 'stock PUT');
    expectUnavailable(await api.adjust(sku, { delta: 5 }), 'stock adjustment');
    const ready = await api.ready();
    expect(ready.status).toBe(503);
    expect(problemOf(ready).checks).toMatchObject({ redis: 'unreachable' });
    await t.app.runtime.writer.drain();
    expect(await pgState(t.app)).toEqual(before);

    // Back, but empty: no generation marker. The service rebuilds from PostgreSQL before it serves again.
    await redis.restart();
    await waitReady(t.app, 20_000);
    expect(await t.app.runtime.redis.get(t.app.runtime.keys.marker)).not.toBeNull();
    expect(availabilityOf(await api.availability(sku))).toMatchObject({ onHand: 9, reserved: 2, available: 7 });
    expect(availabilityOf(await api.availability(other)).locations).toEqual([{ location: 'wh-9', onHand: 4, reserved: 1, safetyStock: 0, available: 3, availableHighPriority: 3 }]);
    await checkInvariants(t.app, [sku, other]);

    // The reservation made before the outage replays (same id) and holds nothing more.
    const replay = await api.reserve(firstBody, firstKey);
    expect(outcome(replay), replay.text).toBe('201');
    expect(replay.body).toEqual(first.body);
    // The request refused during the outage bound nothing: it now succeeds.
    expect(outcome(await api.reserve(body, key))).toBe('201');
    expect(outcome(await api.confirm(held.id))).toBe('200');
    expect(availabilityOf(await api.availability(sku))).toMatchObject({ onHand: 7, reserved: 3, available: 4 });
    await checkInvariants(t.app, [sku, other]);
    expect((await pgState(t.app)).reservations).toHaveLength(before.reservations.length + 1);
  });

  it('unreachable while an app is waiting on it: readiness recovers without a restart of the app', async () => {
    await redis.kill9();
    expect((await api.ready()).status).toBe(503);
    await redis.restart();
    await waitReady(t.app, 20_000);
  });
});
