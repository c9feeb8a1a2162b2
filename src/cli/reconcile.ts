import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { buildApp } from '../app.js';
import { addressOf, loadConfig } from '../config.js';
import { logOptions } from '../log.js';
import { reconcile, type ReconcileReport } from '../jobs/reconcile.js';
import { migrate } from '../store/database.js';
import { HELP, parseCommandLine } from './args.js';

const usage = `npm run reconcile -- [--repair] [--json]
  (in production: node dist/src/cli/reconcile.js [--repair] [--json])

Compares Redis with PostgreSQL (the source of truth) per item and location, and lists orphaned holds (granted in
Redis, never recorded) and stranded stock changes (decided in Redis by a node that died before settling them). The
nodes heal these by themselves every RECONCILE_INTERVAL_MS; this shows them, or heals now. Exit 0: they agree (or
were repaired); 1: they differ (a dry run), or it failed; 2: a bad flag.

  --repair    heal now: settle stranded stock changes as the ledger says, drop orphaned holds, correct drift in
              place (no 503 window); rebuild Redis from PostgreSQL only if drift remains after that (mutations
              answer 503 for the seconds the rebuild takes)
  --json      print the report as JSON
  --help      this text

Reads the service's environment (DATABASE_URL, REDIS_URL, REDIS_KEY_PREFIX, …; see the README).
`;

const values = parseCommandLine(usage, () =>
  parseArgs({ options: { repair: { type: 'boolean', default: false }, json: { type: 'boolean', default: false }, help: HELP } }),
);
let config;
try {
  config = loadConfig({ ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn', RECONCILE_INTERVAL_MS: '0' });
} catch (err) {
  // loadConfig's messages name the variable and mask every secret.
  console.error(`Invalid configuration: ${(err as Error).message}`);
  process.exit(1);
}
try {
  // Quiet: a failure is reported below, in one line.
  await migrate(config.DATABASE_URL, pino(logOptions('fatal')));
} catch (err) {
  console.error(`cannot prepare PostgreSQL at ${addressOf(config.DATABASE_URL)}: ${(err as Error).message}`);
  process.exit(1);
}
const app = await buildApp(config);
try {
  await app.runtime.recovery.ensure();
  const report = await reconcile(app.runtime.reconcileDeps, {
    heal: values.repair,
    dropOrphans: values.repair,
    rebuildOnDrift: values.repair,
    orphanAfterMs: config.ORPHAN_HOLD_AFTER_MS,
    settleMs: 1000,
  });
  console.log(values.json ? JSON.stringify(report, null, 2) : format(report, values.repair));
  // A dry run that finds drift fails, so scripts and cron jobs notice.
  process.exitCode = !values.repair && (report.drift.length > 0 || report.orphanHolds.length > 0 || report.strandedIntents.length > 0) ? 1 : 0;
} finally {
  await app.close();
}

function format(report: ReconcileReport, repair: boolean): string {
  const out = [
    `checked ${report.checkedItems} items: ${report.drift.length} rows differ, ${report.orphanHolds.length} orphaned holds, ` +
      `${report.strandedIntents.length} stranded stock intents`,
  ];
  for (const s of report.strandedIntents) {
    out.push(
      `stranded ${s.kind} ${s.delta > 0 ? '+' : ''}${s.delta} at ${s.itemId}@${s.location} (op ${s.opId}, node ${s.nodeId || '?'} ` +
        `${s.ownerAlive ? 'alive' : 'gone'}, ${Math.round(s.ageMs / 1000)} s old, ledger: ${s.ledger}): ${s.action === 'finish' ? 'finish' : 'take back'}`,
    );
  }
  if (report.drift.length > 0) {
    out.push('');
    out.push(['item', 'location', 'onHand redis/pg', 'reserved redis/pg', 'holds redis/pg', 'safetyStock redis/pg'].join('\t'));
    for (const r of report.drift) {
      out.push(
        [
          r.itemId,
          r.location,
          `${r.redis.onHand}/${r.postgres.onHand}`,
          `${r.redis.reserved}/${r.postgres.reserved}`,
          `${r.redis.holds}/${r.postgres.holds}`,
          `${r.redis.safetyStock}/${r.postgres.safetyStock}`,
        ].join('\t'),
      );
    }
  }
  for (const o of report.orphanHolds) out.push(`orphaned hold ${o.field} on ${o.itemId} (${Math.round(o.ageMs / 1000)} s old)`);
  const r = report.repair;
  if (r) {
    out.push(
      '',
      `repaired: ${r.intentsFinished} stranded intents finished, ${r.intentsTakenBack} taken back, ${r.orphansDropped} orphaned holds dropped, ` +
        `${r.corrected.length} rows corrected in place${r.rebuilt ? ', Redis rebuilt from PostgreSQL' : ''}`,
    );
    for (const c of r.corrected) {
      out.push(
        `corrected ${c.itemId}@${c.location}: Redis on-hand/reserved/pending/safety ` +
          `${c.before.onHand}/${c.before.reserved}/${c.before.pending}/${c.before.safety} → ` +
          `${c.after.onHand}/${c.after.reserved}/${c.after.pending}/${c.after.safety} ` +
          `(PostgreSQL on-hand ${c.postgres.onHand}, safety stock ${c.postgres.safetyStock})`,
      );
    }
    for (const u of r.unhealed) {
      out.push(`${r.rebuilt ? 'rebuilt' : 'not corrected (in flight, or left for --repair)'}: ${u.itemId}@${u.location}`);
    }
  } else if (report.drift.length > 0 || report.orphanHolds.length > 0 || report.strandedIntents.length > 0) {
    out.push('', 'dry run: the service heals this by itself (RECONCILE_INTERVAL_MS); --repair heals now, and rebuilds if drift remains');
  }
  return out.join('\n');
}
