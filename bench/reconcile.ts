/**
 * What one periodic reconciliation pass costs the node that runs it, and what live requests feel meanwhile:
 * `npm run bench:reconcile [-- --items 10000 --holds 16000 --passes 3 --duty 100,25]`. Seeds its own database and
 * Redis key prefix (N items, the holds all on one hot item, as a flash sale leaves them), then runs passes as the
 * periodic reconciler does (healing, orphans dropped, two looks) at each duty percent, and prints per pass its wall
 * time, the node's CPU, what it allocated, and the event loop's delay meanwhile (what a request arriving then waits
 * before it is even read). Exit 0: no drift found; 1: drift (the seed is consistent: a bug); 2: a bad flag.
 */
import { cpus } from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { HELP, integerFlag, parseCommandLine, usageError } from '../src/cli/args.js';
import { Pacer } from '../src/jobs/pacer.js';
import { reconcile } from '../src/jobs/reconcile.js';
import { AllocationCounter } from './allocations.js';
import { scratchNode } from './scratch-node.js';
import { median, round } from './stats.js';

const usage = `npm run bench:reconcile -- [--items N] [--holds N] [--passes N] [--duty LIST]

Seeds a fresh database (on BENCH_DATABASE_URL's server, default the local PostgreSQL) and Redis key prefix (REDIS_URL)
with N items and N live holds on one of them, then times reconciliation passes as the periodic reconciler runs them.

  --items N     stocked items (default 10000)
  --holds N     live holds, all on one item (default 16000)
  --passes N    passes per duty percent; medians are reported (default 3)
  --duty LIST   RECONCILE_DUTY_PERCENT values to run, comma-separated (default 100,25)
  --help        this text
`;

const values = parseCommandLine(usage, () =>
  parseArgs({ options: { items: { type: 'string' }, holds: { type: 'string' }, passes: { type: 'string' }, duty: { type: 'string' }, help: HELP } }),
);
const items = integerFlag('items', values.items, 10_000);
const holds = integerFlag('holds', values.holds, 16_000, 0);
const passes = integerFlag('passes', values.passes, 3);
const duties = (values.duty ?? '100,25').split(',').map(Number);
if (duties.some((d) => !Number.isInteger(d) || d < 1 || d > 100)) usageError(`--duty ${values.duty}: whole percents, 1 to 100`);

const node = await scratchNode('reconcile');
const { seed } = node;
console.log(`seeding ${items} items and ${holds} live holds on one of them…`);
await seed.query(`INSERT INTO stock (item_id, location, on_hand, reserved) SELECT 'sku-' || i, 'default', 1000000, 0 FROM generate_series(1, $1) i`, [items]);
await seed.query(
  `WITH r AS (
     INSERT INTO reservations (id, status, expires_at, created_at, updated_at)
     SELECT gen_random_uuid(), 'pending', now() + interval '1 hour', now(), now() FROM generate_series(1, $1)
     RETURNING id)
   INSERT INTO reservation_lines (reservation_id, line_no, item_id, location, quantity) SELECT id, 0, 'sku-1', 'default', 1 FROM r`,
  [holds],
);
await seed.query(`UPDATE stock SET reserved = $1 WHERE item_id = 'sku-1'`, [holds]);

const app = await node.start();
const { recovery } = app.runtime;
let drift = 0;
try {
  await recovery.ensure(); // Redis built from the seed
  const results = [];
  for (const duty of duties) {
    const runs: { wallMs: number; cpuMs: number; allocatedMiB: number; loopDelayP99Ms: number; loopDelayMaxMs: number }[] = [];
    for (let pass = 0; pass < passes; pass++) {
      const delay = monitorEventLoopDelay({ resolution: 1 });
      const cpu = process.cpuUsage();
      const allocations = new AllocationCounter();
      const started = performance.now();
      delay.enable();
      const report = await reconcile(app.runtime.reconcileDeps, {
        heal: true,
        dropOrphans: true,
        rebuildOnDrift: false,
        orphanAfterMs: 60_000,
        settleMs: 1000,
        pacer: new Pacer(duty),
      });
      delay.disable();
      const wallMs = performance.now() - started;
      const used = process.cpuUsage(cpu);
      drift += report.drift.length;
      runs.push({
        wallMs: round(wallMs, 0),
        cpuMs: round((used.user + used.system) / 1000, 0),
        allocatedMiB: round((allocations.stop() ?? 0) / 2 ** 20, 0),
        loopDelayP99Ms: round(delay.percentile(99) / 1e6, 1),
        loopDelayMaxMs: round(delay.max / 1e6, 1),
      });
      console.log(`  duty ${duty} %, pass ${pass + 1}: ${JSON.stringify(runs.at(-1))}`);
    }
    const med = (k: keyof (typeof runs)[number]) => median(runs.map((r) => r[k]));
    results.push({
      dutyPercent: duty,
      wallMs: med('wallMs'),
      cpuMs: med('cpuMs'),
      cpuUsPerItem: round((1000 * med('cpuMs')) / items, 0),
      allocatedKiBPerItem: round((1024 * med('allocatedMiB')) / items, 1),
      loopDelayP99Ms: med('loopDelayP99Ms'),
    });
  }
  console.log(JSON.stringify({ items, holds, passes, results, drift, machine: { cores: cpus().length, cpu: cpus()[0]?.model, node: process.version } }, null, 2));
  if (drift > 0) process.exitCode = 1;
} finally {
  await node.close();
}
