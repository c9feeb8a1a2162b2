/**
 * One node of the service over a scratch database and Redis key prefix of its own, for the bench tools that seed
 * their own data and time one of its jobs (bench:rebuild, bench:reconcile): the database is created and migrated on
 * BENCH_DATABASE_URL's server (default the local PostgreSQL), the node talks to REDIS_URL (default the local Redis)
 * with its periodic jobs out of the way, and `close()` removes both (so does a run cut short: ./interrupt.ts).
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { onInterrupt } from './interrupt.js';
import { connectRedis, removePrefix } from './redis.js';
import { scratchDatabase } from './scratch-database.js';

export interface ScratchNode {
  /** A connection of its own to the scratch database, to seed it. */
  seed: pg.Client;
  /** Builds the node, once the database is seeded. */
  start(): Promise<FastifyInstance>;
  close(): Promise<void>;
}

export async function scratchNode(label: string): Promise<ScratchNode> {
  const database = await scratchDatabase(label);
  const seed = new pg.Client({ connectionString: database.url });
  await seed.connect();
  const config = loadConfig({
    ...(process.env.REDIS_URL ? { REDIS_URL: process.env.REDIS_URL } : {}),
    DATABASE_URL: database.url,
    REDIS_KEY_PREFIX: `bench-${label}-${randomBytes(3).toString('hex')}:`,
    LOG_LEVEL: 'warn',
    RECONCILE_INTERVAL_MS: '0',
    SWEEPER_INTERVAL_MS: '60000',
  });
  let app: FastifyInstance | null = null;
  let closed: Promise<void> | undefined;
  // The node stops before its keys go: a job still running would find its Redis state gone and rebuild it.
  const close = () =>
    (closed ??= (async () => {
      if (app) {
        await app.close();
        const redis = await connectRedis(config.REDIS_URL);
        await removePrefix(redis, config.REDIS_KEY_PREFIX).finally(() => redis.quit());
      }
      await seed.end();
      await database.drop();
    })());
  const forget = onInterrupt(close);
  return {
    seed,
    async start() {
      app = await buildApp(config);
      await app.ready();
      return app;
    },
    async close() {
      forget();
      await close();
    },
  };
}
