import type { FastifyBaseLogger } from 'fastify';
import fp from 'fastify-plugin';
import type pg from 'pg';
import type { Config } from '../config.js';
import { createPool } from '../store/database.js';
import { autovacuumSetting } from '../store/health.js';
import { sessionName } from '../store/nodes.js';

declare module 'fastify' {
  interface FastifyInstance {
    db: pg.Pool;
  }
}

/** The PostgreSQL pool every part of the node shares; ended on close. Migrations run before the app is built. */
export const postgresPlugin = fp<{ config: Config; nodeId: string }>(
  async (app, { config, nodeId }) => {
    const db = createPool(config.DATABASE_URL, {
      max: config.DATABASE_POOL_SIZE,
      queryTimeoutMs: config.DATABASE_QUERY_TIMEOUT_MS,
      // Names this node's sessions, so another node can end them once this node's lease has lapsed.
      applicationName: sessionName(nodeId),
    });
    app.decorate('db', db);

    app.addHook('onReady', async () => {
      await warnIfAutovacuumOff(db, app.log);
    });
    app.addHook('onClose', async () => {
      await db.end().catch(() => {});
    });
  },
  { name: 'postgres', fastify: '5.x' },
);

/**
 * Every confirm and release leaves a dead reservation row: without autovacuum the tables and the index of pending
 * reservations keep growing, and the sweeper walks ever more dead entries.
 */
async function warnIfAutovacuumOff(db: pg.Pool, log: FastifyBaseLogger): Promise<void> {
  try {
    if ((await autovacuumSetting(db)) === 'off') log.warn('PostgreSQL runs with autovacuum off: turn it on, or VACUUM ANALYZE on a schedule');
  } catch {
    // PostgreSQL unreachable at start: readiness reports it.
  }
}
