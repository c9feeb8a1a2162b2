import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestApp } from './app.js';
import { startRedis } from './redis-server.js';
import { testPostgresUrl, testRedisUrl } from './servers.js';
import { startTcpProxy } from './tcp-proxy.js';

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
