/**
 * The flash sale at 64 connections measured with wrk (C, one thread) instead of autocannon: a cross-check that the
 * figures of `npm run bench` are not an artefact of one load generator. Each design runs behind the same
 * bench/server.ts as in `npm run bench`; the designs take turns within each pass; medians over passes.
 *
 *   npm run bench:wrk [-- --passes 3 --duration 10 --designs durable,pg-only,redis-only]
 *
 * Needs wrk on the PATH (Debian: `apt-get install wrk`). Stock never runs out here (10 million units), so every
 * reservation takes the full path; the outcome counts must be 201s and 200s only.
 */
import { execFileSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { HELP, integerFlag, parseCommandLine, usageError } from '../../src/cli/args.js';
import { cleanup, closeShared, connectShared, defaultOptions, repoRoot, startServer } from '../harness.js';
import { median, round } from '../stats.js';
import { designNames, standardDesigns, type Design } from '../types.js';

const usage = `npm run bench:wrk -- [--passes N] [--duration S] [--designs LIST] [--connections N]

The flash sale measured with wrk (needs wrk on the PATH) against each design, behind bench/server.ts as in
\`npm run bench\`; medians over passes, written to bench/results/wrk.json. Exit 2: a bad flag, or no wrk.

  --passes N        passes; the designs take turns within each (default 3)
  --duration S      seconds of load per design and pass (default 10)
  --designs LIST    ${standardDesigns.join(',')} (default: all)
  --connections N   wrk connections (default 64)
  --help            this text
`;

const values = parseCommandLine(usage, () =>
  parseArgs({
    options: {
      passes: { type: 'string' },
      duration: { type: 'string' },
      designs: { type: 'string', default: standardDesigns.join(',') },
      connections: { type: 'string' },
      help: HELP,
    },
  }),
);
const passes = integerFlag('passes', values.passes, 3);
const duration = integerFlag('duration', values.duration, 10);
const connections = integerFlag('connections', values.connections, 64);
const designs = values.designs.split(',').map((d) => d.trim()) as Design[];
for (const d of designs) if (!(designNames as readonly string[]).includes(d)) usageError(`unknown design "${d}"; one of ${designNames.join(', ')}`);
const SKU = 'wrk-flash';
const script = path.join(repoRoot, 'bench/wrk/flash.lua');

interface WrkRun {
  design: Design;
  pass: number;
  rps: number;
  p50: number;
  p99: number;
  max: number;
  errors: number;
  outcomes: Record<string, number>;
}

function wrkVersion(): string {
  try {
    return execFileSync('wrk', ['-v'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).split('\n')[0]!.trim();
  } catch (err) {
    // wrk -v exits 1 after printing its version.
    const out = String((err as { stdout?: string }).stdout ?? '');
    if (out.startsWith('wrk')) return out.split('\n')[0]!.trim();
    console.error('wrk is not installed (Debian: apt-get install wrk)');
    process.exit(2);
  }
}

/** One wrk run; its Lua done() prints the `outcomes` and `summary` lines parsed here. */
function wrk(url: string, seconds: number): Promise<Omit<WrkRun, 'design' | 'pass'>> {
  return new Promise((resolve, reject) => {
    const child = spawn('wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', '-s', script, url], {
      env: { ...process.env, SKU },
    });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.on('exit', (code) => {
      const summary = /summary req\/s=(\S+) p50_ms=(\S+) p99_ms=(\S+) max_ms=(\S+) errors=(\d+)/.exec(out);
      const outcomes = /outcomes (.*)/.exec(out);
      if (code !== 0 || !summary || !outcomes) return reject(new Error(`wrk failed (${code}):\n${out}`));
      const [rps, p50, p99, max, errors] = summary.slice(1).map(Number) as [number, number, number, number, number];
      const counts = Object.fromEntries(outcomes[1]!.split(' ').filter(Boolean).map((kv) => {
        const at = kv.lastIndexOf('=');
        return [kv.slice(0, at), Number(kv.slice(at + 1))];
      }));
      resolve({ rps, p50, p99, max, errors, outcomes: counts });
    });
  });
}

const o = { ...defaultOptions(), tag: 'wrk' };
const version = wrkVersion();
console.log(`bench:wrk: ${designs.join(', ')} × flash sale, ${connections} connections; ${passes} pass(es) × ${duration} s; ${version}`);
const shared = await connectShared(o);
const runs: WrkRun[] = [];
for (let pass = 1; pass <= passes; pass++) {
  const order = designs.map((_, i) => designs[(i + pass - 1) % designs.length]!);
  for (const design of order) {
    const server = await startServer(design, o, `wrk-p${pass}`);
    try {
      const seeded = await fetch(`${server.url}/items/${SKU}/stock`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ quantity: 10_000_000 }),
      });
      if (seeded.status !== 200) throw new Error(`${design}: seeding answered ${seeded.status}`);
      await wrk(server.url, 2); // warm-up
      const run = { design, pass, ...(await wrk(server.url, duration)) };
      runs.push(run);
      const outcomes = Object.entries(run.outcomes).map(([k, v]) => `${k} ${v}`).join(', ');
      console.log(`  pass ${pass}  ${design.padEnd(10)} ${Math.round(run.rps)} req/s  p50 ${run.p50} p99 ${run.p99} max ${run.max} ms  ${outcomes}  socket errors ${run.errors}`);
    } finally {
      await server.stop();
      await cleanup(server, shared, o); // the design's database and Redis keys
    }
  }
}
await closeShared(shared);

const rows = designs.map((design) => {
  const mine = runs.filter((r) => r.design === design);
  const other = mine.reduce((n, r) => n + r.errors + Object.entries(r.outcomes).filter(([k]) => k !== '200' && k !== '201').reduce((s, [, v]) => s + v, 0), 0);
  return { design, rps: Math.round(median(mine.map((r) => r.rps))), p50: median(mine.map((r) => r.p50)), p99: median(mine.map((r) => r.p99)), other };
});
const ratio = (a: Design, b: Design) => {
  const per = runs.filter((r) => r.design === a).map((r) => r.rps / (runs.find((s) => s.design === b && s.pass === r.pass)?.rps ?? NaN));
  return round(median(per.filter(Number.isFinite)), 2);
};
console.log('\n| design | req/s | p50 ms | p99 ms | other outcomes |\n|---|--:|--:|--:|--:|');
for (const r of rows) console.log(`| ${r.design} | ${r.rps} | ${r.p50} | ${r.p99} | ${r.other} |`);
const ratios = {
  durableOverPgOnly: designs.includes('pg-only') && designs.includes('durable') ? ratio('durable', 'pg-only') : null,
  durableOverRedisOnly: designs.includes('redis-only') && designs.includes('durable') ? ratio('durable', 'redis-only') : null,
};
console.log(`\nratios (median over passes of the ratio within a pass): durable / pg-only ${ratios.durableOverPgOnly}, durable / redis-only ${ratios.durableOverRedisOnly}`);
const file = path.join(o.outDir, 'wrk.json');
writeFileSync(file, JSON.stringify({ at: new Date().toISOString(), wrk: version, connections, passes, durationSeconds: duration, rows, ratios, runs }, null, 2));
console.log(`wrote ${path.relative(repoRoot, file)}`);
