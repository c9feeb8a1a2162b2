import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { runner } from 'node-pg-migrate';
import type { FastifyBaseLogger as Logger } from 'fastify';

const migrationsDir = fileURLToPath(new URL('../../migrations/', import.meta.url));

// bigint columns (counts, generation) come back as JS numbers: every value they hold fits in 2^53.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

/**
 * The group-commit writer's sessions (src/store/writer.ts) plan its batch statement once per connection, a generic
 * plan: planning it per batch cost PostgreSQL about a quarter of its CPU in a flash sale. A generic plan made while
 * the tables were small (a new database) would scan them whole for as long as the connection lives, so these
 * sessions may not scan a table or hash-join it: every row the statement touches is reached through its index, the
 * one plan that stays right at any size (test/store/batch-plan.test.ts). The writer runs nothing else. No JIT: a
 * scan the planner may not choose but must (the one-row state_generation) costs it 10^10, past JIT's thresholds,
 * and compiling the statement took 2 s a batch.
 */
const GROUP_COMMIT_PLANNING = ['plan_cache_mode=force_generic_plan', 'enable_seqscan=off', 'enable_hashjoin=off', 'enable_mergejoin=off', 'jit=off'];

/**
 * `applicationName` names the node's sessions (src/store/nodes.ts: `sessionName`). `groupCommit`: the writer's own
 * pool (GROUP_COMMIT_PLANNING); the others plan each query for its values.
 */
export function createPool(
  url: string,
  options: { max: number; queryTimeoutMs: number; applicationName?: string; groupCommit?: boolean },
): pg.Pool {
  const planning = options.groupCommit ? GROUP_COMMIT_PLANNING : ['plan_cache_mode=force_custom_plan'];
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max,
    connectionTimeoutMillis: options.queryTimeoutMs,
    query_timeout: options.queryTimeoutMs,
    // The client-side timeout alone would leave the server's side of a dead connection running, holding its
    // locks (and the rebuild fence): the server gives up on its own too, and TCP keepalive notices dead peers.
    statement_timeout: options.queryTimeoutMs,
    idle_in_transaction_session_timeout: 2 * options.queryTimeoutMs,
    keepAlive: true,
    application_name: options.applicationName ?? 'inventory-reservation-service',
    // Named statements outside the writer (none today) are planned for their values. PGOPTIONS still applies;
    // `options` in DATABASE_URL replaces this.
    options: [process.env.PGOPTIONS, ...planning.map((o) => `-c ${o}`)].filter(Boolean).join(' '),
  });
  // An idle client losing its connection (PostgreSQL restarted) must not crash the process; the pool replaces it.
  pool.on('error', () => {});
  return pool;
}

/**
 * Checks a client out with an 'error' listener attached: node-postgres emits 'error' on a checked-out client whose
 * connection dies, and an unheard 'error' would crash the process instead of failing the query in hand.
 */
export async function checkOut(pool: pg.Pool): Promise<pg.PoolClient> {
  const client = await pool.connect();
  const ignore = () => {};
  client.on('error', ignore);
  const release = client.release.bind(client);
  client.release = (err?: Error | boolean) => {
    // A client going back to the pool sheds the listener (the pool listens to idle clients itself); a destroyed
    // one keeps it, since its dying connection may still report.
    if (!err) client.off('error', ignore);
    release(err);
  };
  return client;
}

/** Creates the database named in `url` if it does not exist yet (nodes starting at once may race: fine). */
export async function ensureDatabase(url: string): Promise<void> {
  const target = new URL(url);
  const name = decodeURIComponent(target.pathname.slice(1));
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (rowCount === 0) {
      await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`).catch((err: { code?: string }) => {
        if (err.code !== '42P04' && err.code !== '23505') throw err; // another node created it first
      });
    }
  } finally {
    await client.end();
  }
}

/** Applies pending migrations under node-pg-migrate's advisory lock; concurrent starters wait their turn. */
export async function migrate(url: string, logger: Logger): Promise<void> {
  await runner({
    databaseUrl: url,
    dir: migrationsDir,
    direction: 'up',
    migrationsTable: 'schema_migrations',
    advisoryLockMode: 'wait',
    checkOrder: true,
    logger: { debug: () => {}, info: (msg) => logger.debug(msg), warn: (msg) => logger.warn(msg), error: (msg) => logger.error(msg) },
  });
}
