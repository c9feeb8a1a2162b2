/**
 * npm run bench [-- options]: see bench/README.md, or `npm run bench -- --help`.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { HELP, integerFlag, parseCommandLine, usageError } from '../src/cli/args.js';
import { defaultOptions, runBench, runSoak, type BenchOptions } from './harness.js';
import { formatProfile } from './profile.js';
import { formatReport, formatSoak, writeResults, writeSoak } from './report.js';
import { designNames, scenarioNames, type Design, type ScenarioName } from './types.js';

const help = `npm run bench -- [options]

  --designs LIST      ${designNames.join(',')} (default: all)
  --scenarios LIST    ${scenarioNames.join(',')} (default: all)
  --duration S        seconds per scenario (default 10)
  --passes N          passes; medians are reported (default 3)
  --warmup S          warm-up load per service start (default 2)
  --cluster           the durable service on a private Redis Cluster (3 masters + 3 replicas, started and torn
                      down by the run: durable-cluster) against durable on the single Redis, in carts and flash64;
                      writes bench/results/cluster/ (--designs, --scenarios and --out still apply)
  --quick             smoke run: 2 s per scenario, 1 pass, 1 s warm-up, 1,000 SKUs; writes quick.json and
                      quick.svg (not committed), never the published latest.*
  --skus N            SKUs of the carts and reads scenarios (default 10000)
  --pool N            DATABASE_POOL_SIZE of every design (default 16)
  --env KEY=VALUE     extra environment for the service under test (repeatable), e.g. WRITER_MAX_BATCH=200
  --url URL           measure a running service instead of starting the designs (invariants over HTTP)
  --header K:V        extra request header (repeatable), e.g. "authorization:Bearer …" for --url
  --profile           run the service under node --cpu-prof; summaries in latest.json and on screen
  --soak S            soak mode: S seconds at a fixed rate, sampling the service's RSS (no scenario matrix)
  --rate N            soak rate, requests/s overall (default 10000)
  --soak-design D     design to soak (default durable)
  --wait-quiet S      before each design, wait up to S s for other work on the machine to stop (default 60; 0: never)
  --out DIR           results directory (default bench/results)
  --keep-db           keep the bench databases afterwards
  --help              this text

Exit 0: the invariants held in every run; 1: one failed; 2: a bad flag.
`;

const values = parseCommandLine(help, () =>
  parseArgs({
    options: {
      designs: { type: 'string' },
      scenarios: { type: 'string' },
      duration: { type: 'string' },
      passes: { type: 'string' },
      warmup: { type: 'string' },
      quick: { type: 'boolean', default: false },
      cluster: { type: 'boolean', default: false },
      skus: { type: 'string' },
      pool: { type: 'string' },
      env: { type: 'string', multiple: true },
      url: { type: 'string' },
      header: { type: 'string', multiple: true },
      profile: { type: 'boolean', default: false },
      soak: { type: 'string' },
      rate: { type: 'string' },
      'soak-design': { type: 'string' },
      out: { type: 'string' },
      'keep-db': { type: 'boolean', default: false },
      'wait-quiet': { type: 'string' },
      help: HELP,
    },
  }),
);

function list<T extends string>(value: string | undefined, allowed: readonly T[], what: string): T[] | undefined {
  if (value === undefined) return undefined;
  const items = value.split(',').map((s) => s.trim()).filter(Boolean);
  for (const item of items) {
    if (!(allowed as readonly string[]).includes(item)) usageError(`unknown ${what} "${item}"; one of ${allowed.join(', ')}`);
  }
  return items as T[];
}

function number(value: string | undefined, what: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) usageError(`--${what} needs a positive number (got "${value}")`);
  return n;
}

function pairs(values: string[] | undefined, separator: string, flag: string): Record<string, string> {
  return Object.fromEntries(
    (values ?? []).map((v) => {
      const i = v.indexOf(separator);
      if (i <= 0) usageError(`--${flag} needs NAME${separator}VALUE (got "${v}")`);
      return [v.slice(0, i).trim(), v.slice(i + 1).trim()];
    }),
  );
}

const o: BenchOptions = defaultOptions();
if (values.quick) Object.assign(o, { durationSeconds: 2, passes: 1, warmupSeconds: 1, skuCount: 1000 });
if (values.cluster) Object.assign(o, { designs: ['durable', 'durable-cluster'], scenarios: ['carts', 'flash64'], outDir: path.join(o.outDir, 'cluster') });
o.designs = list(values.designs, designNames, 'design') ?? o.designs;
o.scenarios = list(values.scenarios, scenarioNames, 'scenario') ?? o.scenarios;
o.durationSeconds = number(values.duration, 'duration') ?? o.durationSeconds;
o.passes = Math.round(number(values.passes, 'passes') ?? o.passes);
o.warmupSeconds = values.warmup === '0' ? 0 : (number(values.warmup, 'warmup') ?? o.warmupSeconds);
o.skuCount = Math.round(number(values.skus, 'skus') ?? o.skuCount);
o.poolSize = Math.round(number(values.pool, 'pool') ?? o.poolSize);
o.serverEnv = pairs(values.env, '=', 'env');
o.headers = pairs(values.header, ':', 'header');
o.url = values.url ?? null;
o.profile = values.profile;
o.keepDatabases = values['keep-db'];
if (values['wait-quiet'] !== undefined) o.waitQuietSeconds = integerFlag('wait-quiet', values['wait-quiet'], 0, 0);
if (values.out) o.outDir = path.resolve(values.out);

if (values.soak) {
  const soak = {
    seconds: number(values.soak, 'soak')!,
    rate: number(values.rate, 'rate') ?? 10_000,
    design: (list(values['soak-design'], designNames, 'design')?.[0] ?? 'durable') as Design,
    connections: 64,
    sampleSeconds: 5,
  };
  const report = await runSoak(o, soak);
  console.log(formatSoak(report));
  console.log(`\nwrote ${writeSoak(o.outDir, report)} (soak)`);
  process.exit(report.invariants.ok ? 0 : 1);
}

const scenarioList: ScenarioName[] = o.scenarios;
console.log(
  `bench: ${o.url ? `external service ${o.url}` : o.designs.join(', ')} × ${scenarioList.join(', ')}; ` +
    `${o.passes} pass(es) × ${o.durationSeconds} s per scenario`,
);
const report = await runBench(o);
console.log(`\n${formatReport(report)}`);
for (const p of report.profiles) console.log(`\n${formatProfile({ ...p, functions: p.functions.slice(0, 15), packages: p.packages.slice(0, 12), owners: p.owners.slice(0, 12) })}`);
// A smoke run's figures are not the published ones: it never replaces latest.*.
const files = await writeResults(o.outDir, report, values.quick ? 'quick' : 'latest');
console.log(`\nwrote ${files.json} and ${files.svg}`);
process.exit(report.invariantsOk ? 0 : 1);
