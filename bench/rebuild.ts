/**
 * How long one node takes to rebuild Redis from PostgreSQL (issue 4: "100,000 items with 100,000 live holds
 * takes seconds, not minutes"). `npm run bench:rebuild [-- --items 100000 --holds 100000 --passes 3]`.
 * Seeds its own database and Redis key prefix, times `recovery.ensure()` after the state is wiped, prints the
 * median, and checks the rebuilt Redis against PostgreSQL with a reconciliation dry run.
 */
import { randomBytes } from 'node:crypto';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { pino } from 'pino';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { reconcile } from '../src/jobs/reconcile.js';
import { ensureDatabase, migrate } from '../src/store/database.js';

const { values } = parseArgs({
  options: {
    items: { type: 'string', default: '100000' },
    holds: { type: 'string', default: '100000' },
    passes: { type: 'string', default: '3' },
  },
});
const items = Number(values.items);
const holds = Number(values.holds);
const passes = Number(values.passes);

const databaseUrl = `postgres://postgres@127.0.0.1:5432/irs_bench_rebuild_${randomBytes(3).toString('hex')}`;
await ensureDatabase(databaseUrl);
await migrate(databaseUrl, pino({ level: 'silent' }));
const seed = new pg.Client({ connectionString: databaseUrl });
await seed.connect();
console.log(`seeding ${items} items and ${holds} live holds…`);
await seed.query(
  `INSERT INTO stock (item_id, location, on_hand, reserved)
   SELECT 'sku-' || i, 'default', 1000, 0 FROM generate_series(1, $1) i`,
  [items],
);
await seed.query(
  `WITH r AS (
     INSERT INTO reservations (id, status, expires_at, created_at, updated_at)
     SELECT gen_random_uuid(), 'pending', now() + interval '1 hour', now(), now() FROM generate_series(1, $1)
     RETURNING id)
   INSERT INTO reservation_lines (reservation_id, line_no, item_id, location, quantity)
   SELECT id, 0, 'sku-' || (1 + (row_number() OVER () - 1) % $2), 'default', 1 FROM r`,
  [holds, items],
);
await seed.query(
  `UPDATE stock s SET reserved = h.n FROM (
     SELECT item_id, count(*) AS n FROM reservation_lines GROUP BY item_id) h WHERE s.item_id = h.item_id`,
);

const config = loadConfig({
  DATABASE_URL: databaseUrl,
  REDIS_KEY_PREFIX: `bench-rebuild-${randomBytes(3).toString('hex')}:`,
  LOG_LEVEL: 'warn',
  RECONCILE_INTERVAL_MS: '0',
  SWEEPER_INTERVAL_MS: '60000',
});
const app = await buildApp(config);
await app.ready();
const { redis, keys, recovery } = app.runtime;
const seconds: number[] = [];
try {
  for (let pass = 0; pass < passes; pass++) {
    await redis.del(keys.marker);
    const started = performance.now();
    await recovery.ensure();
    seconds.push((performance.now() - started) / 1000);
  }
  const report = await reconcile(app.runtime.reconcileDeps, {
    heal: false,
    dropOrphans: false,
    rebuildOnDrift: false,
    orphanAfterMs: 60_000,
    settleMs: 0,
  });
  const sorted = [...seconds].sort((a, b) => a - b);
  console.log(
    JSON.stringify(
      {
        items,
        holds,
        passes: seconds.map((s) => Number(s.toFixed(3))),
        medianSeconds: Number(sorted[Math.floor(sorted.length / 2)]!.toFixed(3)),
        checkedItems: report.checkedItems,
        driftAfterRebuild: report.drift.length,
        machine: { cores: cpus().length, cpu: cpus()[0]?.model, node: process.version },
      },
      null,
      2,
    ),
  );
  if (report.drift.length > 0) process.exitCode = 1;
} finally {
  const stream = redis.scanStream({ match: `${keys.prefix}*`, count: 1000 });
  for await (const batch of stream as AsyncIterable<string[]>) if (batch.length) await redis.unlink(...batch);
  await app.close();
  await seed.query('SELECT 1');
  await seed.end();
  const admin = new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:5432/postgres' });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(new URL(databaseUrl).pathname.slice(1))} WITH (FORCE)`);
  await admin.end();
}
