/**
 * The service under test: one design behind the service's own HTTP layer (buildApp with `services`), on a fresh
 * PostgreSQL database `irs_bench_<design>` and its own Redis key prefix, listening on a free port.
 *
 * Started by bench/run.ts (IPC: it answers `ready`, then `drain` and `close`), or by hand to point another load
 * generator at a design:
 *   npx tsx bench/server.ts --design pg-only --port 8080
 * Any variable of src/config.ts in the environment overrides the bench's defaults; `--design durable-cluster` takes
 * its cluster from REDIS_CLUSTER_NODES.
 */
import { parseArgs } from 'node:util';
import { AllocationCounter } from './allocations.js';
import pg from 'pg';
import { pino } from 'pino';
import { buildApp, type BuildOptions, type Runtime } from '../src/app.js';
import { HELP, integerFlag, parseCommandLine, usageError } from '../src/cli/args.js';
import { loadConfig } from '../src/config.js';
import { migrate } from '../src/store/database.js';
import { PgOnlyDesign } from './baselines/pg-only.js';
import { connectRedis, removePrefix } from './redis.js';
import { RedisOnlyDesign } from './baselines/redis-only.js';
import { designNames, isDurable, onCluster, type ServerCommand, type ServerMessage } from './types.js';

const usage = `npx tsx bench/server.ts [--design D] [--port N] [--host H] [--database NAME] [--prefix P] [--admin-url URL]

One design behind the service's HTTP layer, on a fresh database (dropped and created again) and Redis key prefix.

  --design D        ${designNames.join(', ')} (default durable)
  --port N          port, 0 for any free one (default 0)
  --host H          address to listen on (default 127.0.0.1)
  --database NAME   database, a-z 0-9 _ (default irs_bench_<design>)
  --prefix P        Redis key prefix (default bench:<design>:)
  --admin-url URL   PostgreSQL server to create it on (default BENCH_DATABASE_URL, else the local one)
  --help            this text
`;

const values = parseCommandLine(usage, () =>
  parseArgs({
    options: {
      design: { type: 'string', default: 'durable' },
      port: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      database: { type: 'string' },
      prefix: { type: 'string' },
      'admin-url': { type: 'string', default: process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres' },
      help: HELP,
    },
  }),
);

const design = values.design as (typeof designNames)[number];
if (!designNames.includes(design)) usageError(`unknown design ${values.design}; one of ${designNames.join(', ')}`);
const port = integerFlag('port', values.port, 0, 0);
const dbName = values.database ?? `irs_bench_${design.replace(/-/g, '_')}`;
if (!/^[a-z0-9_]+$/.test(dbName)) usageError(`database name ${dbName}: use a-z 0-9 _`);
const prefix = values.prefix ?? `bench:${design}:`;
const adminUrl = values['admin-url'];
const databaseUrl = new URL(adminUrl);
databaseUrl.pathname = `/${dbName}`;

/** A fresh database: dropped (with any leftover connections) and created again, then migrated. */
async function freshDatabase(): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`);
    await admin.query(`CREATE DATABASE "${dbName}"`);
  } finally {
    await admin.end();
  }
  await migrate(databaseUrl.toString(), pino({ level: 'silent' }));
}

/** The prefix's keys from an earlier run are removed, so the service starts from an empty state. */
async function freshRedisPrefix(redisUrl: string, clusterNodes: string): Promise<void> {
  const redis = await connectRedis(redisUrl, clusterNodes);
  try {
    await removePrefix(redis, prefix);
  } finally {
    redis.quit().catch(() => {});
  }
}

/** The baselines have no use for the service's jobs, and the reconciler would "repair" their state. */
const baselineEnv: Record<string, string> = { SWEEPER_INTERVAL_MS: '2147483647', RECONCILE_INTERVAL_MS: '0' };

const config = loadConfig({
  LOG_LEVEL: 'error',
  DATABASE_POOL_SIZE: '16',
  ...(isDurable(design) ? {} : baselineEnv),
  ...process.env,
  ...(design === 'durable-unbounded' ? { WRITER_MAX_QUEUE: '0' } : {}),
  DATABASE_URL: databaseUrl.toString(),
  REDIS_KEY_PREFIX: prefix,
});

// durable-cluster is durable on a cluster: it needs one, and the others must not run on one by accident.
if (onCluster(design) !== (config.REDIS_CLUSTER_NODES !== '')) {
  usageError(`--design ${design} ${onCluster(design) ? 'needs' : 'runs without'} REDIS_CLUSTER_NODES (npm run bench -- --cluster starts a cluster)`);
}

await freshDatabase();
await freshRedisPrefix(config.REDIS_URL, config.REDIS_CLUSTER_NODES);

let closeDesign: () => Promise<void> = async () => {};
const options: BuildOptions = {};
if (design === 'pg-only') {
  options.services = (r: Runtime) => {
    const d = new PgOnlyDesign(r.db);
    closeDesign = () => d.close();
    return d;
  };
} else if (design === 'redis-only') {
  options.services = (r: Runtime) => new RedisOnlyDesign(r.redis, r.keys, r.decisions, r.lease);
} else if (design === 'durable-no-outbox') {
  // The service as it is, its batch statement without the events: what the outbox costs is the difference.
  options.appendEvents = false;
}

const app = await buildApp(config, options);
app.addHook('onClose', async () => closeDesign());
await app.listen({ host: values.host, port });
const address = app.server.address();
const listening = typeof address === 'object' && address ? address.port : port;

const send = (message: ServerMessage) => process.send?.(message);

if (process.send) {
  let allocations: AllocationCounter | null = null;
  process.on('message', (command: ServerCommand) => {
    if (command.type === 'count-allocations') {
      allocations = new AllocationCounter();
    } else if (command.type === 'allocated') {
      send({ type: 'allocated', bytes: allocations?.stop() ?? null });
      allocations = null;
    } else if (command.type === 'drain') {
      void app.runtime.writer.drain().then(() => send({ type: 'drained' }));
    } else if (command.type === 'close') {
      // process.exit (not a signal) so that --cpu-prof writes its profile.
      void app.close().finally(() => process.exit(0));
    }
  });
  // The orchestrator died: do not linger.
  process.on('disconnect', () => void app.close().finally(() => process.exit(0)));
  send({ type: 'ready', port: listening, pid: process.pid, databaseUrl: databaseUrl.toString(), redisPrefix: prefix });
} else {
  console.log(`${design} listening on http://${values.host}:${listening} (database ${dbName}, Redis prefix ${prefix})`);
  const stop = () => void app.close().finally(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
