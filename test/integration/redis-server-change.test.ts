import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { Redis } from 'ioredis';
import { serverRunId } from '../../src/redis/server-check.js';
import { Api, availabilityOf, outcome, reservationOf, startHttpApp, useHttpApp, useHttpAppOnPrivateRedis, waitReady } from '../helpers/api.js';
import { newItem, type TestApp } from '../helpers/app.js';
import { startRedis, type RedisServer } from '../helpers/redis-server.js';
import { expectNoSecondSale } from '../helpers/server-change.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';

/**
 * I1 across a single Redis that comes back as another server: one restarted from its files, or a replica promoted
 * behind the same address, may lack holds its predecessor acknowledged. Its stock then reads higher than the truth;
 * served as it is, the next buyer gets a unit already held. The state is dropped and rebuilt from PostgreSQL first.
 */

const FAST_FAIL = { REDIS_COMMAND_TIMEOUT_MS: 1000 };

describe('a single Redis restarted from an older snapshot', () => {
  const { redis, t, api } = useHttpAppOnPrivateRedis(FAST_FAIL);

  it('is rebuilt from PostgreSQL before it decides: the unit held after the snapshot is not sold again', async () => {
    const sku = newItem('snapshot');
    expect(outcome(await api.putStock(sku, { quantity: 1 }))).toBe('200');
    // The snapshot has the unit free; the hold made after it is acknowledged and in PostgreSQL only.
    await t.app.runtime.redis.save();
    const held = await api.reserve({ lines: [{ itemId: sku, quantity: 1 }] });
    expect(outcome(held)).toBe('201');
    const generation = await t.app.runtime.recovery.generation();

    await redis.kill9();
    await redis.restart(); // loads dump.rdb: the marker, and the unit free
    await expectNoSecondSale(t, api, sku);
    expect(await t.app.runtime.recovery.generation()).not.toBe(generation);
    expect(outcome(await api.confirm(reservationOf(held).id))).toBe('200');
  });

  it('a script sent in the same turn the new connection turns ready waits for the check: it is never served from the snapshot', async () => {
    const sku = newItem('snapshot-race');
    expect(outcome(await api.putStock(sku, { quantity: 1 }))).toBe('200');
    await t.app.runtime.redis.save();
    expect(outcome(await api.reserve({ lines: [{ itemId: sku, quantity: 1 }] }))).toBe('201');

    // ioredis marks the connection ready inside a promise callback; a request's continuation queued right behind it
    // runs before any 'ready' listener. Reproduced here: an availability read sent from the microtask after that.
    const client = t.app.runtime.redis as unknown as { setStatus(status: string, arg?: unknown): void };
    const setStatus = client.setStatus.bind(client);
    const raced = new Promise<unknown>((resolve) => {
      client.setStatus = (status, arg) => {
        setStatus(status, arg);
        if (status !== 'ready') return;
        client.setStatus = setStatus;
        queueMicrotask(() => resolve(t.app.runtime.decisions.availability(sku).catch((err: unknown) => err)));
      };
    });
    await redis.kill9();
    await redis.restart();
    // The snapshot's figures (the unit free) must not be served: the state is dropped first, so the read finds none.
    const answer = await raced;
    expect(answer).toBeInstanceOf(Error);
    expect((answer as Error).message).toMatch(/rebuilt|no state|unavailable/i);
    await waitReady(t.app, 20_000);
    expect(availabilityOf(await api.availability(sku))).toMatchObject({ onHand: 1, reserved: 1, available: 0 });
  });

  it('a restart that kept everything is rebuilt all the same (its files cannot say), and a reconnect to the same server is not', async () => {
    const before = await t.app.runtime.recovery.generation();
    // The same server: the connection cut and made again.
    t.app.runtime.redis.disconnect(true);
    await waitFor('the client to reconnect', async () => t.app.runtime.redis.status === 'ready' || undefined, { timeoutMs: 10_000 });
    await waitReady(t.app, 20_000);
    expect(await t.app.runtime.recovery.generation()).toBe(before);

    await t.app.runtime.redis.save();
    await redis.kill9();
    await redis.restart();
    await waitFor('a rebuild', async () => ((await t.app.runtime.recovery.generation().catch(() => null)) ?? before) !== before || undefined, {
      timeoutMs: 20_000,
    });
  });
});

describe('a rebuild', () => {
  const { t } = useHttpApp();

  it('that began writing to another server sets no marker: a failover mid-rebuild may have lost part of what it wrote', async () => {
    const { redis, keys, decisions } = t.app.runtime;
    const marker = await redis.get(keys.marker);
    const server = await serverRunId(redis as Redis);
    await redis.set(keys.rebuildingOf(0), 'token-1');
    expect(await decisions.finishRebuild('token-1', '999', new Map([[redis as Redis, 'f'.repeat(40)]]))).toBe(false);
    expect(await redis.get(keys.marker)).toBe(marker);
    expect(await decisions.finishRebuild('token-1', marker!, new Map([[redis as Redis, server]]))).toBe(true);
    expect(await redis.get(keys.server)).toBe(server);
  });
});

describe('a Redis user that may not run INFO (an ACL without @dangerous)', () => {
  const { t, api } = useHttpAppOnPrivateRedis(FAST_FAIL, async (redis) => {
    const admin = new Redis(redis.url);
    await admin.acl('SETUSER', 'irs', 'on', '>secret', '~*', '&*', '+@all', '-info');
    await admin.quit();
    return `redis://irs:secret@127.0.0.1:${redis.port}`;
  });

  it('is served as before (a server change then goes unseen, and the log says so), not refused', async () => {
    const sku = newItem('no-info');
    expect(outcome(await api.putStock(sku, { quantity: 1 }))).toBe('200');
    expect(outcome(await api.reserve({ lines: [{ itemId: sku, quantity: 1 }] }))).toBe('201');
    expect(await t.app.runtime.redis.get(t.app.runtime.keys.server)).toBeNull();
    // A rebuild finishes too.
    await t.app.runtime.recovery.dropState();
    await waitReady(t.app, 20_000);
    expect(availabilityOf(await api.availability(sku))).toMatchObject({ onHand: 1, reserved: 1, available: 0 });
  });
});

describe('a replica promoted behind the same address', () => {
  let master: RedisServer;
  let replica: RedisServer;
  let proxy: TcpProxy;
  let t: TestApp;
  let api: Api;

  beforeAll(async () => {
    // A replica's first sync starts at once (Redis waits 5 s for more replicas by default).
    master = await startRedis({ extraArgs: ['--repl-diskless-sync-delay', '0'] });
    replica = await startRedis({ extraArgs: ['--replicaof', '127.0.0.1', String(master.port)] });
    proxy = await startTcpProxy(master.port);
    t = await startHttpApp({ ...FAST_FAIL, REDIS_URL: `redis://127.0.0.1:${proxy.port}` });
    api = Api.inject(t.app);
  }, 60_000);
  afterAll(async () => {
    await t?.close();
    await proxy?.close();
    await master?.kill9();
    await replica?.kill9();
  });

  it('is rebuilt from PostgreSQL before it decides: the hold it never received is not sold again', async () => {
    const sku = newItem('failover');
    expect(outcome(await api.putStock(sku, { quantity: 1 }))).toBe('200');
    const direct = t.app.runtime.redis;
    // The replica has the stock, then stops following: the hold below never reaches it (replication is asynchronous).
    const onReplica = (...args: string[]) => execFileSync('redis-cli', ['-p', String(replica.port), ...args], { encoding: 'utf8' });
    await waitFor('the replica to have the stock', async () => onReplica('HGETALL', t.app.runtime.keys.item(sku).stock).trim() !== '' || undefined, {
      timeoutMs: 10_000,
    });
    onReplica('REPLICAOF', 'NO', 'ONE');
    const held = await api.reserve({ lines: [{ itemId: sku, quantity: 1 }] });
    expect(outcome(held)).toBe('201');
    expect(await direct.hgetall(t.app.runtime.keys.item(sku).holds)).not.toEqual({});

    proxy.redirect(replica.port);
    await master.kill9();
    await expectNoSecondSale(t, api, sku);
  });
});
