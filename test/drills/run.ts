import { parseArgs } from 'node:util';
import { DRILLS, runDrill, type DrillResult } from './harness.js';
import { formatTable } from './report.js';

/**
 * `npm run drill [-- --clients 400 --seconds 20 --only redis-flushall,api-kill9 --seed 42 --keep-logs]`
 * Runs the fault drills outside the test runner and prints the table. Exits 1 if any drill failed.
 */
const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '300' },
    seconds: { type: 'string', default: '15' },
    only: { type: 'string' },
    seed: { type: 'string' },
    'keep-logs': { type: 'boolean', default: false },
  },
});

const clients = Number(values.clients);
const seconds = Number(values.seconds);
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
if (!Number.isInteger(clients) || clients < 1 || !(seconds >= 3) || !Number.isInteger(seed)) {
  console.error('usage: npm run drill -- [--clients N>=1] [--seconds S>=3] [--only name,name] [--seed N] [--keep-logs]');
  process.exit(2);
}
const only = values.only?.split(',').map((s) => s.trim()).filter(Boolean);
const unknown = only?.filter((name) => !DRILLS.some((d) => d.name === name)) ?? [];
if (unknown.length > 0) {
  console.error(`unknown drill(s): ${unknown.join(', ')}; known: ${DRILLS.map((d) => d.name).join(', ')}`);
  process.exit(2);
}
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
