import net from 'node:net';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from './ports.js';
import { createTestDatabase, startPostgres } from './postgres.js';
import { startRedis, type RedisServer } from './redis-server.js';
import { testPostgresUrl } from './servers.js';
import { startTcpProxy } from './tcp-proxy.js';
import { GiveUp, untilTime, waitFor } from './wait.js';

const PG_TIMEOUT_MS = 60_000;

// Resources registered here are torn down even when an assertion fails mid-test.
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
});

async function redisServer(opts?: { appendonly?: boolean }): Promise<RedisServer> {
  const server = await startRedis(opts);
  cleanups.push(() => server.kill9());
  return server;
}

/** Fail-fast client: no offline queue, no retries, no reconnects, so outages surface as rejections. */
async function fragileRedis(port: number): Promise<Redis> {
  const client = new Redis(port, '127.0.0.1', {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 1_000,
  });
  client.on('error', () => undefined); // errors are asserted through rejected promises
  cleanups.push(async () => client.disconnect());
  await client.connect();
  return client;
}

async function pgQuery<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

/** Send a raw RESP PING and report the first reply, or 'timeout' if nothing comes back. */
function rawPing(socket: net.Socket, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      socket.off('data', onData);
      resolve('timeout');
    }, timeoutMs);
    const onData = (chunk: Buffer): void => {
      clearTimeout(timer);
      resolve(chunk.toString('utf8'));
    };
    socket.once('data', onData);
    socket.write('PING\r\n');
  });
}

async function rawConnect(port: number): Promise<net.Socket> {
  const socket = net.connect({ port, host: '127.0.0.1' });
  cleanups.push(async () => void socket.destroy());
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return socket;
}

describe('freePort', () => {
  it('returns a bindable port', async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
});

describe('waitFor and untilTime', () => {
  it('returns the first value the probe gives, asking again after undefined or an error', async () => {
    let asked = 0;
    const value = await waitFor('the third answer', async () => {
      asked++;
      if (asked === 1) throw new Error('not yet');
      return asked === 3 ? 'done' : undefined;
    }, { intervalMs: 1 });
    expect({ value, asked }).toEqual({ value: 'done', asked: 3 });
  });

  it('fails loudly at its deadline, naming what it waited for and the last error', async () => {
    await expect(
      waitFor('a thing that never happens', async () => Promise.reject(new Error('still down')), { timeoutMs: 50, intervalMs: 5 }),
    ).rejects.toThrow(/timed out after 50 ms waiting for a thing that never happens \(last error: still down\)/);
  });

  it('stops at once when the probe gives up', async () => {
    let asked = 0;
    await expect(
      waitFor('a process to serve', async () => {
        asked++;
        throw new GiveUp('it exited');
      }, { timeoutMs: 10_000 }),
    ).rejects.toThrow('gave up waiting for a process to serve: it exited');
    expect(asked).toBe(1);
  });

  it('resolves untilTime no earlier than the moment given, as epoch ms or as an ISO time', async () => {
    const at = Date.now() + 30;
    await untilTime(at);
    expect(Date.now()).toBeGreaterThanOrEqual(at);
    const iso = new Date(Date.now() + 30).toISOString();
    await untilTime(iso);
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(iso));
    await expect(untilTime('not a time')).rejects.toThrow(/not a time/);
  });
});

describe('startRedis', () => {
  it('without AOF, data is lost on kill9 + restart (same port)', async () => {
    const server = await redisServer();
    expect(server.url).toBe(`redis://127.0.0.1:${server.port}`);
    const before = await fragileRedis(server.port);
    await before.set('k', 'v');
    expect(await before.get('k')).toBe('v');

    await server.kill9();
    await expect(before.get('k')).rejects.toThrow();

    await server.restart();
    const after = await fragileRedis(server.port);
    expect(await after.get('k')).toBeNull();
  });

  it('with AOF (fsync always), acknowledged writes survive kill9 + restart', async () => {
    const server = await redisServer({ appendonly: true });
    const before = await fragileRedis(server.port);
    await before.set('durable', '42');
    await server.kill9();

    await server.restart();
    const after = await fragileRedis(server.port);
    expect(await after.get('durable')).toBe('42');
  });

  it('stop() shuts down gracefully and restart() brings it back', async () => {
    const server = await redisServer();
    await server.stop();
    await expect(fragileRedis(server.port)).rejects.toThrow();
    await server.restart();
    expect(await (await fragileRedis(server.port)).ping()).toBe('PONG');
  });
});

describe('createTestDatabase', () => {
  it(
    'creates an isolated database and drops it',
    async () => {
      const db = await createTestDatabase();
      cleanups.push(() => db.drop());
      expect(db.name).toMatch(/^irs_test_[0-9a-f]+$/);
      expect(new URL(db.url).pathname).toBe(`/${db.name}`);

      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      await client.query('CREATE TABLE items (sku text PRIMARY KEY, qty int NOT NULL)');
      await client.query("INSERT INTO items VALUES ('a', 3)");
      const { rows } = await client.query<{ sku: string; qty: number }>('SELECT sku, qty FROM items');
      expect(rows).toEqual([{ sku: 'a', qty: 3 }]);
      // Left open on purpose: drop() must still succeed thanks to WITH (FORCE).
      client.on('error', () => undefined);

      await db.drop();
      const base = testPostgresUrl();
      const left = await pgQuery<{ n: string }>(
        base,
        `SELECT count(*) AS n FROM pg_database WHERE datname = '${db.name}'`,
      );
      expect(left[0]?.n).toBe('0');
      await client.end().catch(() => undefined);
    },
    PG_TIMEOUT_MS,
  );
});

describe('startPostgres', () => {
  it(
    'runs a private instance that survives restart and crash recovery',
    async () => {
      const instance = await startPostgres();
      cleanups.push(() => instance.destroy());
      expect(instance.url).toBe(`postgres://postgres@127.0.0.1:${instance.port}/postgres`);

      await pgQuery(instance.url, 'CREATE TABLE t (x int); INSERT INTO t VALUES (1)');
      await instance.restart();
      expect(await pgQuery<{ x: number }>(instance.url, 'SELECT x FROM t')).toEqual([{ x: 1 }]);

      await instance.stop('immediate');
      await expect(pgQuery(instance.url, 'SELECT 1')).rejects.toThrow();
      await instance.start();
      expect(await pgQuery<{ x: number }>(instance.url, 'SELECT x FROM t')).toEqual([{ x: 1 }]);

      await instance.destroy();
      await expect(pgQuery(instance.url, 'SELECT 1')).rejects.toThrow();
    },
    PG_TIMEOUT_MS,
  );
});

describe('startTcpProxy', () => {
  it('forwards, cut() kills and refuses connections, restore() recovers', async () => {
    const server = await redisServer();
    const proxy = await startTcpProxy(server.port);
    cleanups.push(() => proxy.close());

    const client = await fragileRedis(proxy.port);
    await client.set('via', 'proxy');
    expect(await client.get('via')).toBe('proxy');

    proxy.cut();
    await expect(client.get('via')).rejects.toThrow();
    await expect(fragileRedis(proxy.port)).rejects.toThrow();

    proxy.restore();
    const fresh = await fragileRedis(proxy.port);
    expect(await fresh.get('via')).toBe('proxy');
  });

  it('blackhole() silently drops bytes on existing and new connections', async () => {
    const server = await redisServer();
    const proxy = await startTcpProxy(server.port);
    cleanups.push(() => proxy.close());

    const existing = await rawConnect(proxy.port);
    expect(await rawPing(existing, 1_000)).toBe('+PONG\r\n');

    proxy.blackhole();
    expect(await rawPing(existing, 300)).toBe('timeout');
    const during = await rawConnect(proxy.port); // still accepted
    expect(await rawPing(during, 300)).toBe('timeout');

    proxy.restore();
    const fresh = await rawConnect(proxy.port);
    expect(await rawPing(fresh, 1_000)).toBe('+PONG\r\n');
  });
});
