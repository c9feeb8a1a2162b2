import { Redis } from 'ioredis';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestApp } from './app.js';
import { startPostgres } from './postgres.js';
import { startReplica } from './postgres-replica.js';
import { startRedis } from './redis-server.js';
import { testPostgresUrl, testRedisUrl } from './servers.js';
import { startTcpProxy } from './tcp-proxy.js';
import { waitFor } from './wait.js';

// The suite runs against the servers DATABASE_URL and REDIS_URL name (the service's own variables), not always the
// local defaults.

describe('test/helpers/servers.ts', () => {
  it('reads REDIS_URL and DATABASE_URL, else the local servers', () => {
    expect(testRedisUrl({})).toBe('redis://127.0.0.1:6379');
    expect(testRedisUrl({ REDIS_URL: 'redis://cache:6380' })).toBe('redis://cache:6380');
    expect(testPostgresUrl({})).toBe('postgres://postgres@127.0.0.1:5432/postgres');
    // The server and credentials of DATABASE_URL; its own database is never the one tests create or drop.
    expect(testPostgresUrl({ DATABASE_URL: 'postgres://app:pw@db:6543/inventory?sslmode=require' })).toBe(
      'postgres://app:pw@db:6543/postgres?sslmode=require',
    );
  });
});

describe('startTestApp', () => {
  const saved = { REDIS_URL: process.env.REDIS_URL, DATABASE_URL: process.env.DATABASE_URL };
  afterEach(() => {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });

  it('puts its keys on the Redis REDIS_URL names and its database on the server DATABASE_URL names', async () => {
    const redis = await startRedis();
    // The local PostgreSQL reached through another port: only a helper that reads DATABASE_URL goes this way.
    const proxy = await startTcpProxy(5432);
    try {
      process.env.REDIS_URL = redis.url;
      process.env.DATABASE_URL = `postgres://postgres@127.0.0.1:${proxy.port}/inventory`;
      const t = await startTestApp();
      try {
        expect(t.config.REDIS_URL).toBe(redis.url);
        expect(new URL(t.databaseUrl).port).toBe(String(proxy.port));
        await t.app.runtime.recovery.ensure();
        const direct = new Redis(redis.url);
        try {
          expect(await direct.get(t.app.runtime.keys.marker)).toEqual(expect.any(String));
        } finally {
          direct.disconnect();
        }
      } finally {
        await t.close();
      }
    } finally {
      await proxy.close();
      await redis.stop();
    }
  });
});

describe('startReplica', () => {
  /** One statement on a fresh connection (a stopped server refuses it). */
  async function sql<T extends pg.QueryResultRow>(url: string, text: string): Promise<T[]> {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      return (await client.query<T>(text)).rows;
    } finally {
      await client.end();
    }
  }
  const values = async (url: string) => (await sql<{ x: number }>(url, 'SELECT x FROM t ORDER BY x')).map((r) => r.x);

  it('streams the primary to a hot standby whose replay pauses, resumes, stops and starts', async () => {
    const primary = await startPostgres();
    try {
      const replica = await startReplica(primary);
      expect(replica.port).not.toBe(primary.port);
      expect(await sql(replica.url, 'SELECT pg_is_in_recovery() AS standby')).toEqual([{ standby: true }]);

      await sql(primary.url, 'CREATE TABLE t (x int); INSERT INTO t VALUES (1)');
      await replica.caughtUp();
      expect(await values(replica.url)).toEqual([1]);

      // Paused, it receives the WAL but answers as of the pause; resumed, it catches up.
      await replica.pauseReplay();
      await sql(primary.url, 'INSERT INTO t VALUES (2)');
      const [{ lsn }] = (await sql<{ lsn: string }>(primary.url, 'SELECT pg_current_wal_lsn()::text AS lsn')) as [{ lsn: string }];
      await waitFor('the replica to receive the insert', async () => {
        const [row] = await sql<{ received: boolean }>(replica.url, `SELECT pg_last_wal_receive_lsn() >= '${lsn}' AS received`);
        return row?.received ? true : undefined;
      });
      expect(await sql(replica.url, `SELECT pg_last_wal_replay_lsn() < '${lsn}' AS behind`)).toEqual([{ behind: true }]);
      expect(await values(replica.url)).toEqual([1]);
      await replica.resumeReplay();
      await replica.caughtUp();
      expect(await values(replica.url)).toEqual([1, 2]);

      // Stopped, it refuses connections; started, it streams what it missed.
      await replica.stop();
      await expect(sql(replica.url, 'SELECT 1')).rejects.toThrow();
      await sql(primary.url, 'INSERT INTO t VALUES (3)');
      await replica.start();
      await replica.caughtUp();
      expect(await values(replica.url)).toEqual([1, 2, 3]);

      await replica.destroy();
      await expect(sql(replica.url, 'SELECT 1')).rejects.toThrow();
    } finally {
      await primary.destroy();
    }
  }, 60_000);
});
