/**
 * One node of the service over a scratch database and Redis key prefix of its own, for the bench tools that seed
 * their own data and time one of its jobs (bench:rebuild, bench:reconcile): the database is created and migrated on
 * BENCH_DATABASE_URL's server (default the local PostgreSQL), the node talks to REDIS_URL (default the local Redis)
 * with its periodic jobs out of the way, and `close()` removes both.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { pino } from 'pino';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { ensureDatabase, migrate } from '../src/store/database.js';
import { removePrefix } from './redis.js';

export interface ScratchNode {
  /** A connection of its own to the scratch database, to seed it. */
  seed: pg.Client;
  /** Builds the node, once the database is seeded. */
  start(): Promise<FastifyInstance>;
  close(): Promise<void>;
}

export async function scratchNode(label: string): Promise<ScratchNode> {
  const adminUrl = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const suffix = randomBytes(3).toString('hex');
  const target = new URL(adminUrl);
  target.pathname = `/irs_bench_${label}_${suffix}`;
  const databaseUrl = target.toString();
  await ensureDatabase(databaseUrl);
  await migrate(databaseUrl, pino({ level: 'silent' }));
  const seed = new pg.Client({ connectionString: databaseUrl });
  await seed.connect();
  let app: FastifyInstance | null = null;
  return {
    seed,
    async start() {
      const config = loadConfig({
        ...(process.env.REDIS_URL ? { REDIS_URL: process.env.REDIS_URL } : {}),
        DATABASE_URL: databaseUrl,
        REDIS_KEY_PREFIX: `bench-${label}-${suffix}:`,
        LOG_LEVEL: 'warn',
        RECONCILE_INTERVAL_MS: '0',
        SWEEPER_INTERVAL_MS: '60000',
      });
      app = await buildApp(config);
      await app.ready();
      return app;
    },
    async close() {
      if (app) {
        await removePrefix(app.runtime.redis, app.runtime.keys.prefix);
        await app.close();
      }
      await seed.end();
      const admin = new pg.Client({ connectionString: adminUrl });
      await admin.connect();
      await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(target.pathname.slice(1))} WITH (FORCE)`);
      await admin.end();
    },
  };
}
