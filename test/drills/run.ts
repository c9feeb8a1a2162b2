import { parseArgs } from 'node:util';
import { HELP, integerFlag, parseCommandLine, usageError } from '../../src/cli/args.js';
import { DRILLS, runDrill, type DrillResult } from './harness.js';
import { formatTable } from './report.js';

/**
 * `npm run drill [-- --clients 400 --seconds 20 --only redis-flushall,api-kill9 --seed 42 --keep-logs]`
 * Runs the fault drills outside the test runner and prints the table. Exits 1 if any drill failed.
 */
const usage = `npm run drill -- [--clients N] [--seconds S] [--only NAME,NAME] [--seed N] [--keep-logs]

Runs the fault drills (real Redis, PostgreSQL and API processes killed, cut and restarted under load) and prints
the table.
Exit 0: every drill passed; 1: one failed; 2: a bad flag.

  --clients N     concurrent clients of the load (default 300)
  --seconds S     seconds of load per drill, at least 3 (default 15)
  --only LIST     run only these drills: ${DRILLS.map((d) => d.name).join(', ')}
  --seed N        the load's random seed (default: random, printed)
  --keep-logs     keep each drill's process logs
  --help          this text
`;

const values = parseCommandLine(usage, () =>
  parseArgs({
    options: {
      clients: { type: 'string' },
      seconds: { type: 'string' },
      only: { type: 'string' },
      seed: { type: 'string' },
      'keep-logs': { type: 'boolean', default: false },
      help: HELP,
    },
  }),
);

const clients = integerFlag('clients', values.clients, 300);
const seconds = integerFlag('seconds', values.seconds, 15, 3);
const seed = integerFlag('seed', values.seed, Math.floor(Math.random() * 2 ** 31), 0);
const only = values.only?.split(',').map((s) => s.trim()).filter(Boolean);
const unknown = only?.filter((name) => !DRILLS.some((d) => d.name === name)) ?? [];
if (unknown.length > 0) usageError(`unknown drill(s): ${unknown.join(', ')}; known: ${DRILLS.map((d) => d.name).join(', ')}`);
const selected = DRILLS.filter((d) => !only || only.includes(d.name));

console.log(`fault drills: ${selected.length} drills, ${clients} clients, ${seconds} s of load each, seed ${seed}`);
const results: DrillResult[] = [];
for (const drill of selected) {
  process.stdout.write(`  ${drill.name}: ${drill.title} … `);
  const result = await runDrill(drill, { clients, seconds, seed, keepLogs: values['keep-logs'] });
  results.push(result);
  console.log(result.ok ? 'pass' : 'FAIL');
}
console.log(`\n${formatTable(results)}`);
// Exit explicitly: a drill that failed half-way may leave a reconnecting client behind.
process.exit(results.every((r) => r.ok) ? 0 : 1);
