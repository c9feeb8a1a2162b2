import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { Cluster, Redis } from 'ioredis';
import { pino } from 'pino';
import { inject } from 'vitest';
import type {} from './cluster-setup.js';
import { buildApp } from '../../src/app.js';
import { loadConfig, parseClusterNodes, type Config } from '../../src/config.js';
import { scanTargets, type RedisClient } from '../../src/redis/client.js';
import { migrate } from '../../src/store/database.js';
import { createTestDatabase, type TestDatabase } from './postgres.js';
import { testRedisUrl } from './servers.js';

export interface TestApp {
  app: FastifyInstance;
  config: Config;
  /** The database this app owns (dropped on close unless it was passed in). */
  databaseUrl: string;
  close(): Promise<void>;
}

/**
 * A fully wired app on its own PostgreSQL database and its own Redis key prefix, on the servers DATABASE_URL and
 * REDIS_URL name (test/helpers/servers.ts; `overrides` win), migrated and ready; `close()` removes both.
 */
export async function startTestApp(overrides: Record<string, string | number> = {}): Promise<TestApp> {
  let database: TestDatabase | undefined;
  let databaseUrl = overrides.DATABASE_URL as string | undefined;
  if (!databaseUrl) {
    database = await createTestDatabase();
    databaseUrl = database.url;
  }
  const env: Record<string, string> = {
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    REDIS_URL: testRedisUrl(),
    // The `cluster` project runs chosen files against a private Redis Cluster (test/helpers/cluster-setup.ts).
    ...(clusterNodes() ? { REDIS_CLUSTER_NODES: clusterNodes()! } : {}),
    REDIS_KEY_PREFIX: `t${randomBytes(4).toString('hex')}:`,
    SWEEPER_INTERVAL_MS: '100',
    ...Object.fromEntries(Object.entries(overrides).map(([k, v]) => [k, String(v)])),
    DATABASE_URL: databaseUrl,
  };
  const config = loadConfig(env);
  await migrate(databaseUrl, pino({ level: 'silent' }));
  const app = await buildApp(config);
  await app.ready();
  return {
    app,
    config,
    databaseUrl,
    async close() {
      // The app first, so nothing it still runs (a rebuild in flight) writes keys after the clean-up.
      await app.close();
      const redis = redisClient(config);
      redis.on('error', () => {}); // Redis stopped, or credentials it refuses: the catch below says why nothing is left
      try {
        await redis.connect();
        for (const server of scanTargets(redis)) {
          const stream = server.scanStream({ match: `${config.REDIS_KEY_PREFIX}*`, count: 1000 });
          // One key a command: on a cluster a batch's keys lie in many slots.
          for await (const batch of stream as AsyncIterable<string[]>) await Promise.all(batch.map((key) => redis.unlink(key)));
        }
      } catch {
        // A test may have stopped this Redis; nothing of this prefix is left to clean then.
      } finally {
        redis.disconnect();
      }
      await database?.drop();
    },
  };
}

/** The private cluster of the `cluster` project (test/helpers/cluster-setup.ts), or undefined in other projects. */
const clusterNodes = (): string | undefined => inject('redisClusterNodes');

/** A client of the test app's Redis: its cluster (REDIS_CLUSTER_NODES) or its single Redis, not yet connected. */
export function redisClient(config: Config): RedisClient {
  const options = { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 };
  const { nodes, nodeOptions } = parseClusterNodes(config.REDIS_CLUSTER_NODES);
  return nodes.length > 0 ? new Cluster(nodes, { lazyConnect: true, redisOptions: { ...options, ...nodeOptions } }) : new Redis(config.REDIS_URL, options);
}

let keyCounter = 0;
/** A fresh Idempotency-Key. */
export const newKey = (): string => `key-${process.pid}-${Date.now()}-${keyCounter++}`;
/** A fresh item id, so tests never collide even on a shared prefix. */
export const newItem = (label = 'sku'): string => `${label}-${randomBytes(5).toString('hex')}`;
