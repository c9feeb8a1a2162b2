/**
 * How long one node takes to rebuild Redis from PostgreSQL (issue 4: "100,000 items with 100,000 live holds
 * takes seconds, not minutes"). `npm run bench:rebuild [-- --items 100000 --holds 100000 --passes 3]`.
 * Seeds its own database and Redis key prefix, times `recovery.ensure()` after the state is wiped, prints the
 * median, and checks the rebuilt Redis against PostgreSQL with a reconciliation dry run.
 */
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { HELP, integerFlag, parseCommandLine } from '../src/cli/args.js';
import { reconcile } from '../src/jobs/reconcile.js';
import { scratchNode } from './scratch-node.js';

const usage = `npm run bench:rebuild -- [--items N] [--holds N] [--passes N]

Seeds a fresh database (on BENCH_DATABASE_URL's server, default the local PostgreSQL) with N items and N live holds,
wipes the Redis state (REDIS_URL) and times one node's rebuild of it from PostgreSQL; prints the median as JSON and
checks the rebuilt Redis against PostgreSQL. Exit 0: no drift; 1: drift after the rebuild; 2: a bad flag.

  --items N    stocked items (default 100000)
  --holds N    live holds over them (default 100000)
  --passes N   rebuilds timed; the median is reported (default 3)
  --help       this text
`;

const values = parseCommandLine(usage, () =>
  parseArgs({ options: { items: { type: 'string' }, holds: { type: 'string' }, passes: { type: 'string' }, help: HELP } }),
);
const items = integerFlag('items', values.items, 100_000);
const holds = integerFlag('holds', values.holds, 100_000, 0);
const passes = integerFlag('passes', values.passes, 3);

const node = await scratchNode('rebuild');
const { seed } = node;
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

const app = await node.start();
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
  await node.close();
}
