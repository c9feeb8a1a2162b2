/**
 * The orchestrator: for each pass and design, starts the service under test (bench/server.ts, its own process,
 * database and Redis prefix), seeds stock over HTTP, warms it up, runs each scenario's load from a separate
 * generator process (bench/load.ts), samples CPU and RSS meanwhile, then checks the invariants. Designs take
 * turns within a pass (rotating the order each pass), so the ratios compare numbers taken minutes apart at most.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Redis, type Cluster } from 'ioredis';
import pg from 'pg';
import type { RedisClient } from '../src/redis/client.js';
import { startRedisCluster, type RedisClusterServer } from '../test/helpers/redis-cluster.js';
import { audit, auditOverHttp, type AuditResult } from './audit.js';
import {
  autovacuumIsOff,
  cpuBetween,
  machine,
  machineBusySeconds,
  namedCpuSeconds,
  pgCounters,
  postgresPidsOf,
  processCpuSeconds,
  redisCounters,
  redisDelta,
  rssMiB,
  serviceDelta,
  serviceMetrics,
  vacuumAnalyze,
  type Machine,
  type ServiceDelta,
  type ServiceMetrics,
  type PgCounters,
  type RedisCommandDelta,
  type RedisCounters,
} from './probes.js';
import { summarizeProfile, type ProfileSummary } from './profile.js';
import { connectRedis, removePrefix } from './redis.js';
import { median, round, slope } from './stats.js';
import {
  ALLOCATED_SKU_UNITS,
  CART_SKU_UNITS,
  FLASH_UNITS,
  addSupply,
  onCluster,
  scenarios,
  scenariosOf,
  standardDesigns,
  type Acked,
  type Design,
  type LoadMessage,
  type LoadResult,
  type LoadSpec,
  type Percentiles,
  type ScenarioName,
  type ServerCommand,
  type ServerMessage,
  type Supply,
  type TimelinePoint,
} from './types.js';

export const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const benchDir = path.join(repoRoot, 'bench');

export interface SoakOptions {
  seconds: number;
  /** Requests per second, overall (autocannon overallRate). */
  rate: number;
  design: Design;
  connections: number;
  sampleSeconds: number;
}

export interface BenchOptions {
  /** Target a running service instead of starting the designs (design "external"). */
  url: string | null;
  designs: Design[];
  scenarios: ScenarioName[];
  durationSeconds: number;
  warmupSeconds: number;
  passes: number;
  skuCount: number;
  /** DATABASE_POOL_SIZE for every design. */
  poolSize: number;
  /** Run the service under node --cpu-prof and summarise the profiles. */
  profile: boolean;
  outDir: string;
  keepDatabases: boolean;
  /** Admin URL of the PostgreSQL server (the bench creates its databases there). */
  databaseUrl: string;
  redisUrl: string;
  /** Distinguishes concurrent runs: database names and Redis prefixes carry it. */
  tag: string;
  /** Extra environment for the service under test (any variable of src/config.ts). */
  serverEnv: Record<string, string>;
  /** Extra request headers (e.g. Authorization for a --url service with API keys). */
  headers: Record<string, string>;
  soak: SoakOptions | null;
  /** Before each design's run, wait up to this long for the machine to be quiet (other work under 25 % of a core). */
  waitQuietSeconds: number;
  log: (line: string) => void;
}

export function defaultOptions(): BenchOptions {
  return {
    url: null,
    designs: ['durable', 'durable-no-outbox', 'durable-unbounded', 'pg-only', 'redis-only'],
    scenarios: ['reserve64', 'reserve16', 'reserve4', 'flash', 'flash64', 'carts', 'carts-allocated', 'reads', 'overload'],
    durationSeconds: 10,
    warmupSeconds: 2,
    passes: 3,
    skuCount: 10_000,
    poolSize: 16,
    profile: false,
    outDir: path.join(benchDir, 'results'),
    keepDatabases: false,
    databaseUrl: process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
    redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    tag: '',
    serverEnv: {},
    headers: {},
    soak: null,
    waitQuietSeconds: 60,
    log: (line) => console.log(line),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------------------------

/** node with tsx's loader: the child's pid is the process that runs the code (what RSS and CPU are read from). */
function spawnTs(script: string, args: string[], nodeArgs: string[], env: NodeJS.ProcessEnv): ChildProcess {
  return spawn(process.execPath, [...nodeArgs, '--import', 'tsx', path.join(benchDir, script), ...args], {
    cwd: repoRoot,
    env,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
}

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

export interface Server {
  design: Design;
  url: string;
  pid: number | null;
  databaseUrl: string | null;
  databaseName: string | null;
  redisPrefix: string;
  drain(): Promise<void>;
  stop(): Promise<void>;
  /** Starts counting the service's heap allocations (bench/allocations.ts); `allocated()` ends it. */
  countAllocations(): void;
  /** Bytes allocated since `countAllocations()`; null for a service the bench did not start. */
  allocated(): Promise<number | null>;
}

const profileDir = (o: BenchOptions, design: Design, label: string) => path.join(o.outDir, 'profiles', `${design}-${label}`);

/** `clusterNodes`: the cluster `durable-cluster` runs on (REDIS_CLUSTER_NODES); every other design runs on REDIS_URL. */
export async function startServer(design: Design, o: BenchOptions, label: string, clusterNodes = ''): Promise<Server> {
  const dbName = `irs_bench_${design.replace(/-/g, '_')}${o.tag ? `_${o.tag}` : ''}`;
  const prefix = `bench:${o.tag ? `${o.tag}:` : ''}${design}:`;
  // One directory per service run: node writes one profile per thread (tsx's loader runs in a worker).
  const nodeArgs = o.profile ? ['--cpu-prof', `--cpu-prof-dir=${profileDir(o, design, label)}`] : [];
  const child = spawnTs('server.ts', ['--design', design, '--database', dbName, '--prefix', prefix, '--admin-url', o.databaseUrl], nodeArgs, {
    ...process.env,
    NODE_ENV: 'production',
    REDIS_URL: o.redisUrl,
    DATABASE_POOL_SIZE: String(o.poolSize),
    ...o.serverEnv,
    REDIS_CLUSTER_NODES: clusterNodes,
  });
  const ready = await new Promise<Extract<ServerMessage, { type: 'ready' }>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${design}: service did not start within 60 s`)), 60_000);
    child.on('message', (m: ServerMessage) => {
      if (m.type === 'ready') {
        clearTimeout(timer);
        resolve(m);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${design}: service exited with code ${code} before it was ready`));
    });
  });
  const command = (c: ServerCommand) => child.send(c);
  return {
    design,
    url: `http://127.0.0.1:${ready.port}`,
    pid: ready.pid,
    databaseUrl: ready.databaseUrl,
    databaseName: dbName,
    redisPrefix: ready.redisPrefix,
    drain: () =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 10_000);
        const onMessage = (m: ServerMessage) => {
          if (m.type !== 'drained') return;
          clearTimeout(timer);
          child.off('message', onMessage);
          resolve();
        };
        child.on('message', onMessage);
        command({ type: 'drain' });
      }),
    countAllocations: () => command({ type: 'count-allocations' }),
    allocated: () =>
      new Promise<number | null>((resolve) => {
        const timer = setTimeout(() => resolve(null), 10_000);
        const onMessage = (m: ServerMessage) => {
          if (m.type !== 'allocated') return;
          clearTimeout(timer);
          child.off('message', onMessage);
          resolve(m.bytes);
        };
        child.on('message', onMessage);
        command({ type: 'allocated' });
      }),
    stop: async () => {
      if (child.exitCode !== null) return;
      command({ type: 'close' });
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited(child);
      clearTimeout(timer);
    },
  };
}

function externalServer(url: string): Server {
  return {
    design: 'external',
    url: url.replace(/\/$/, ''),
    pid: null,
    databaseUrl: null,
    databaseName: null,
    redisPrefix: '',
    drain: async () => {},
    stop: async () => {},
    countAllocations: () => {},
    allocated: async () => null,
  };
}

/** Runs a load in its own process; `onSoldOut` is called the moment the generator says the flash SKU sold out. */
async function runLoad(spec: LoadSpec, onSoldOut?: () => void): Promise<LoadResult> {
  const child = spawnTs('load.ts', [JSON.stringify(spec)], [], process.env);
  let result: LoadResult | undefined;
  child.on('message', (m: LoadMessage) => {
    if (m.type === 'sold-out') onSoldOut?.();
    else result = m.result;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), (spec.durationSeconds + 60) * 1000);
  const code = await exited(child);
  clearTimeout(timer);
  if (!result) throw new Error(`load generator exited with code ${code} without a result`);
  return result;
}

/**
 * PUT every item's stock over HTTP (the design's own path), 64 at a time, and add it to `supplied`. An item is
 * `[id, units]` at the default location or `[id, units per location]`.
 */
async function seed(
  url: string,
  items: [string, number | Readonly<Record<string, number>>][],
  headers: Record<string, string>,
  supplied: Supply,
): Promise<void> {
  const puts = items.flatMap(([item, units]) =>
    typeof units === 'number' ? [{ item, location: 'default', quantity: units }] : Object.entries(units).map(([location, quantity]) => ({ item, location, quantity })),
  );
  let next = 0;
  const worker = async () => {
    while (next < puts.length) {
      const { item, location, quantity } = puts[next++]!;
      const response = await fetch(`${url}/items/${encodeURIComponent(item)}/stock`, {
        method: 'PUT',
        headers: { ...headers, 'content-type': 'application/json' },
        body: JSON.stringify(location === 'default' ? { quantity } : { quantity, location }),
      });
      await response.arrayBuffer();
      if (response.status !== 200) throw new Error(`seeding ${item}@${location}: ${response.status}`);
      addSupply(supplied, item, location, quantity);
    }
  };
  await Promise.all(Array.from({ length: Math.min(64, puts.length) }, worker));
}

// ---------------------------------------------------------------------------------------------------------------
// One design, one pass
// ---------------------------------------------------------------------------------------------------------------

export interface RunResult {
  pass: number;
  design: Design;
  scenario: ScenarioName;
  connections: number;
  load: Omit<LoadResult, 'acked'>;
  /**
   * CPU while the load ran, % of one core (the machine has `cores` × 100); `other`: the machine's busy time
   * that none of the four used (another tenant, a test suite: a run with much of it is suspect).
   */
  cpuPercent: { service: number | null; redis: number | null; postgres: number | null; generator: number; other: number | null };
  /** CPU each process spent per acknowledged write (201 + 200), µs. */
  cpuMicrosPerWrite: PerProcess;
  /**
   * The same costs over the sale alone (until the flash SKU sold out; the whole run where it did not): after a
   * sell-out, the 409s Redis answers alone would be counted against the writes made before it.
   */
  sale: { writes: number; cpuMicrosPerWrite: PerProcess; walBytesPerWrite: number | null };
  rssMiB: { start: number | null; max: number | null; end: number | null };
  /** The service's JavaScript heap allocations while the load ran, KiB per answer (bench/allocations.ts). */
  allocatedKiBPerRequest: number | null;
  /** On a cluster, each node's CPU while the load ran (% of one core); `cpuPercent.redis` is their sum. */
  redisNodes?: RedisNodeCpu[];
  redisCommands: RedisCommandDelta[];
  /**
   * PostgreSQL transactions (reads included), WAL flushes (fsyncs) and WAL bytes per acknowledged write. WAL is the
   * server's (pg_stat_wal): other databases' writes on a shared server count too.
   */
  postgres: {
    transactions: number;
    walSyncs: number;
    walBytes: number;
    /** Checkpoints the server started during the run (its p99 pays for them). */
    checkpoints: number;
    transactionsPerWrite: number;
    walSyncsPerWrite: number;
    walBytesPerWrite: number;
  } | null;
  /** The service's own view (its /metrics): group-commit batch size and time, Lua round trips. */
  service: ServiceDelta | null;
  invariants: AuditResult;
}

/** A figure for each process the bench measures (null where it cannot see it: a service at --url). */
export interface PerProcess {
  service: number | null;
  redis: number | null;
  postgres: number | null;
}

export interface RedisNodeCpu {
  port: number;
  /** Its role when the cluster was created. */
  role: 'master' | 'replica';
  cpuPercent: number;
}

/** The private Redis Cluster `durable-cluster` runs on: started with the run when that design is in it. */
export interface ClusterUnderTest {
  server: RedisClusterServer;
  /** For the invariants and the cleanup (keys in every slot). */
  client: Cluster;
  /** One client per node (each a process of its own), to read its CPU and commands. */
  nodes: { redis: Redis; port: number; role: RedisNodeCpu['role'] }[];
}

export interface Shared {
  runTag: string;
  redis: Redis | null;
  cluster: ClusterUnderTest | null;
  admin: pg.Client | null;
  /** PostgreSQL runs without autovacuum: the bench vacuums the design's database itself (probes.ts). */
  vacuum: boolean;
}

interface Snapshot {
  at: number;
  machine: number;
  service: number | null;
  postgresCpu: Map<number, number> | null;
  /** PostgreSQL's processes that work for this run: the design database's backends and the server's own. */
  postgresPids: Set<number> | null;
  redis: RedisCounters | null;
  pg: PgCounters | null;
  metrics: ServiceMetrics | null;
}

/**
 * The counters of every process now. The CPU times are read first, synchronously; the service's /metrics last, and
 * only if asked (`metrics: false` mid-load, where its answer would wait behind the load).
 */
async function snapshot(server: Server, shared: Shared, headers: Record<string, string>, { metrics = true } = {}): Promise<Snapshot> {
  return {
    at: performance.now(),
    machine: machineBusySeconds(),
    service: server.pid ? processCpuSeconds(server.pid) : null,
    postgresCpu: server.pid ? namedCpuSeconds('postgres') : null,
    postgresPids: shared.admin && server.databaseName ? await postgresPidsOf(shared.admin, server.databaseName) : null,
    redis: server.pid && redisServersOf(server, shared).length > 0 ? await redisCounters(redisServersOf(server, shared)) : null,
    pg: shared.admin && server.databaseName ? await pgCounters(shared.admin, server.databaseName) : null,
    metrics: metrics ? await serviceMetrics(server.url, headers) : null,
  };
}

/** The Redis a design's service uses: the cluster's client for durable-cluster, else the single Redis. */
const redisOf = (server: Server, shared: Shared): RedisClient | null => (onCluster(server.design) ? (shared.cluster?.client ?? null) : shared.redis);

/** The Redis processes a design's service uses: each node of the cluster, or the single Redis. */
const redisServersOf = (server: Server, shared: Shared): Redis[] =>
  onCluster(server.design) ? (shared.cluster?.nodes.map((n) => n.redis) ?? []) : shared.redis ? [shared.redis] : [];

/** CPU seconds each process used between two snapshots (PostgreSQL's: the processes working for the run at `b`). */
function cpuSecondsBetween(a: Snapshot, b: Snapshot): PerProcess {
  return {
    service: a.service !== null && b.service !== null ? b.service - a.service : null,
    redis: a.redis && b.redis ? b.redis.cpuSeconds - a.redis.cpuSeconds : null,
    postgres: a.postgresCpu && b.postgresCpu ? cpuBetween(a.postgresCpu, ofPids(b.postgresCpu, b.postgresPids)) : null,
  };
}

/** What each process spent per acknowledged write between two snapshots: CPU µs, and the server's WAL bytes. */
function costPerWrite(a: Snapshot, b: Snapshot, writes: number): { cpuMicrosPerWrite: PerProcess; walBytesPerWrite: number | null } {
  const cpu = cpuSecondsBetween(a, b);
  const per = (seconds: number | null) => (seconds === null || writes === 0 ? null : round((seconds * 1e6) / writes, 1));
  return {
    cpuMicrosPerWrite: { service: per(cpu.service), redis: per(cpu.redis), postgres: per(cpu.postgres) },
    walBytesPerWrite: a.pg && b.pg && writes > 0 ? round((b.pg.walBytes - a.pg.walBytes) / writes, 0) : null,
  };
}

const percentOf = (a: number | null, b: number | null, seconds: number) => (a === null || b === null ? null : round(((b - a) / seconds) * 100, 1));

/** The entries of `cpu` whose pid is in `pids` (all of them without a set). */
const ofPids = (cpu: Map<number, number>, pids: Set<number> | null) => (pids ? new Map([...cpu].filter(([pid]) => pids.has(pid))) : cpu);

function mergeAcked(into: Record<string, Acked>, from: Record<string, Acked>): void {
  for (const [item, a] of Object.entries(from)) {
    const t = (into[item] ??= { reserved: 0, confirmed: 0, released: 0 });
    t.reserved += a.reserved;
    t.confirmed += a.confirmed;
    t.released += a.released;
  }
}

/** Checks the invariants; a durable node's in-flight work may still be landing, so it looks again for a while. */
async function checkInvariants(server: Server, shared: Shared, supplied: Supply, acked: Record<string, Acked>, ackedReservations: number, o: BenchOptions): Promise<AuditResult> {
  if (server.design === 'external') return auditOverHttp(server.url, supplied, acked, o.headers);
  const db = server.databaseUrl ? new pg.Client({ connectionString: server.databaseUrl }) : null;
  await db?.connect();
  try {
    let result: AuditResult | undefined;
    for (let attempt = 0; attempt < 20; attempt++) {
      result = await audit({
        design: server.design,
        supplied,
        acked,
        ackedReservations,
        db,
        redis: redisOf(server, shared),
        cluster: onCluster(server.design),
        redisPrefix: server.redisPrefix,
      });
      if (result.ok) break;
      await sleep(500);
    }
    return result!;
  } finally {
    await db?.end();
  }
}

/** Waits (bounded) until nothing else keeps the machine busy: another test suite would skew every number. */
async function waitQuiet(o: BenchOptions): Promise<void> {
  const deadline = performance.now() + o.waitQuietSeconds * 1000;
  for (let warned = false; ; warned = true) {
    const before = machineBusySeconds();
    await sleep(1000);
    const busy = (machineBusySeconds() - before) * 100;
    if (busy < 25) return;
    if (performance.now() >= deadline) {
      o.log(`  the machine is busy with other work (${Math.round(busy)} % of a core); measuring anyway (see cpu "other")`);
      return;
    }
    if (!warned) o.log(`  the machine is busy with other work (${Math.round(busy)} % of a core); waiting up to ${o.waitQuietSeconds} s`);
  }
}

async function measureDesign(design: Design, pass: number, o: BenchOptions, shared: Shared, profiles: ProfileSummary[]): Promise<RunResult[]> {
  const label = `p${pass}`;
  const scenarioList = scenariosOf(design, o.scenarios);
  if (scenarioList.length === 0) return [];
  if (!o.url && o.waitQuietSeconds > 0) await waitQuiet(o);
  const server = o.url ? externalServer(o.url) : await startServer(design, o, label, onCluster(design) ? clusterSeeds(shared) : '');
  const results: RunResult[] = [];
  const supplied: Supply = new Map();
  const acked: Record<string, Acked> = {};
  let ackedReservations = 0;
  const prefix = `${shared.runTag}-${design}-${label}`;
  const skuPrefix = `${prefix}-sku-`;
  // Allocated carts get SKUs of their own, stocked at several locations (the other scenarios' SKUs keep one).
  const allocatedSkuPrefix = `${prefix}-asku-`;
  try {
    if (scenarioList.some((s) => scenarios[s].kind !== 'flash' && !scenarios[s].allocation)) {
      const started = performance.now();
      const items = Array.from({ length: o.skuCount }, (_, i): [string, number] => [`${skuPrefix}${i}`, CART_SKU_UNITS]);
      await seed(server.url, items, o.headers, supplied);
      o.log(`  ${design}: seeded ${o.skuCount} SKUs in ${round((performance.now() - started) / 1000, 1)} s`);
    }
    if (scenarioList.some((s) => scenarios[s].allocation)) {
      const started = performance.now();
      const items = Array.from({ length: o.skuCount }, (_, i): [string, Record<string, number>] => [`${allocatedSkuPrefix}${i}`, { ...ALLOCATED_SKU_UNITS }]);
      await seed(server.url, items, o.headers, supplied);
      o.log(`  ${design}: seeded ${o.skuCount} SKUs at ${Object.keys(ALLOCATED_SKU_UNITS).length} locations in ${round((performance.now() - started) / 1000, 1)} s`);
    }
    const baseSpec = {
      url: server.url,
      skuPrefix,
      skuCount: o.skuCount,
      ttlSeconds: 600,
      ...(Object.keys(o.headers).length > 0 ? { headers: o.headers } : {}),
    };
    if (o.warmupSeconds > 0) {
      const warmItem = `${prefix}-warm`;
      await seed(server.url, [[warmItem, 1_000_000_000]], o.headers, supplied);
      const warm = await runLoad({
        ...baseSpec,
        kind: 'flash',
        connections: 64,
        durationSeconds: o.warmupSeconds,
        flashItem: warmItem,
        keyPrefix: `${prefix}-warm-`,
        seed: pass,
      });
      mergeAcked(acked, warm.acked);
      ackedReservations += warm.ackedReservations;
    }

    for (const name of scenarioList) {
      const scenario = scenarios[name];
      const flashItem = `${prefix}-${name}`;
      if (scenario.kind === 'flash') {
        const units = scenario.units ?? FLASH_UNITS;
        await seed(server.url, [[flashItem, units]], o.headers, supplied);
      }
      if (shared.vacuum && server.databaseUrl) await vacuumAnalyze(server.databaseUrl);
      const before = await snapshot(server, shared, o.headers);
      const rss: number[] = [];
      const sample = () => {
        const r = server.pid ? rssMiB(server.pid) : null;
        if (r !== null) rss.push(r);
      };
      sample();
      const sampler = setInterval(sample, 1000);
      server.countAllocations();
      let soldOut: Promise<Snapshot> | undefined;
      const { acked: loadAcked, ...load } = await runLoad(
        {
          ...baseSpec,
          kind: scenario.kind,
          connections: scenario.connections,
          ...(scenario.allocation ? { allocation: scenario.allocation, skuPrefix: allocatedSkuPrefix } : {}),
          ...(scenario.reserveOnly ? { reserveOnly: true } : {}),
          durationSeconds: o.durationSeconds,
          flashItem,
          keyPrefix: `${prefix}-${name}-`,
          seed: 1000 * pass + o.scenarios.indexOf(name),
        },
        () => (soldOut ??= snapshot(server, shared, o.headers, { metrics: false })),
      );
      clearInterval(sampler);
      sample();
      const allocated = await server.allocated();
      const after = await snapshot(server, shared, o.headers);
      const saleEnd = (await soldOut) ?? after;
      mergeAcked(acked, loadAcked);
      ackedReservations += load.ackedReservations;

      await sleep(500); // requests the generator dropped at its deadline are still finishing in the service
      await server.drain();
      const invariants = await checkInvariants(server, shared, supplied, acked, ackedReservations, o);
      const seconds = (after.at - before.at) / 1000;
      const writes = load.writesPerSecond * load.elapsedSeconds;
      const used = cpuSecondsBetween(before, after);
      const cpu = {
        service: percentOf(0, used.service, seconds),
        redis: percentOf(0, used.redis, seconds),
        postgres: percentOf(0, used.postgres, seconds),
        generator: load.generatorCpuPercent,
      };
      const whole = costPerWrite(before, after, writes);
      const machineBusy = percentOf(before.machine, after.machine, seconds)!;
      const ours = (cpu.service ?? 0) + (cpu.redis ?? 0) + (cpu.postgres ?? 0) + cpu.generator;
      const result: RunResult = {
        pass,
        design,
        scenario: name,
        connections: scenario.connections,
        load,
        cpuPercent: { ...cpu, other: server.pid ? round(Math.max(0, machineBusy - ours), 1) : null },
        cpuMicrosPerWrite: whole.cpuMicrosPerWrite,
        sale: { writes: load.sale.writes, ...costPerWrite(before, saleEnd, load.sale.writes) },
        rssMiB: { start: rss[0] ?? null, max: rss.length ? Math.max(...rss) : null, end: rss.at(-1) ?? null },
        allocatedKiBPerRequest: allocated !== null && load.responses > 0 ? round(allocated / load.responses / 1024, 1) : null,
        ...(onCluster(design) && before.redis && after.redis && shared.cluster
          ? {
              redisNodes: shared.cluster.nodes.map(({ port, role }, i) => ({
                port,
                role,
                cpuPercent: percentOf(before.redis!.cpuSecondsByServer[i]!, after.redis!.cpuSecondsByServer[i]!, seconds)!,
              })),
            }
          : {}),
        redisCommands: before.redis && after.redis ? redisDelta(before.redis, after.redis, load.responses) : [],
        postgres:
          before.pg && after.pg
            ? {
                transactions: after.pg.commits - before.pg.commits,
                walSyncs: after.pg.walSyncs - before.pg.walSyncs,
                walBytes: after.pg.walBytes - before.pg.walBytes,
                checkpoints: after.pg.checkpoints - before.pg.checkpoints,
                transactionsPerWrite: writes > 0 ? round((after.pg.commits - before.pg.commits) / writes, 3) : 0,
                walSyncsPerWrite: writes > 0 ? round((after.pg.walSyncs - before.pg.walSyncs) / writes, 3) : 0,
                walBytesPerWrite: whole.walBytesPerWrite ?? 0,
              }
            : null,
        service: serviceDelta(before.metrics, after.metrics),
        invariants,
      };
      results.push(result);
      o.log(`  ${formatRunLine(result)}`);
      if (!invariants.ok) for (const f of invariants.failures) o.log(`    INVARIANT FAILED: ${f}`);
      if (load.otherSamples.length > 0) o.log(`    other outcomes, e.g.: ${load.otherSamples.slice(0, 3).join(' | ')}`);
    }
  } finally {
    await server.stop();
    await cleanup(server, shared, o);
  }
  if (o.profile && server.pid) {
    // The main thread's profile: CPU.<date>.<time>.<pid>.<thread id 0>.<seq>.cpuprofile
    const dir = profileDir(o, design, label);
    const file = readdirSync(dir).find((f) => f.includes(`.${server.pid}.0.`));
    if (file) profiles.push(summarizeProfile(path.join(dir, file)));
  }
  return results;
}

export async function cleanup(server: Server, shared: Shared, o: BenchOptions): Promise<void> {
  if (server.design === 'external') return;
  const redis = redisOf(server, shared);
  if (redis) await removePrefix(redis, server.redisPrefix);
  if (!o.keepDatabases && shared.admin && server.databaseName) {
    await shared.admin.query(`DROP DATABASE IF EXISTS "${server.databaseName}" WITH (FORCE)`);
  }
}

function formatRunLine(r: RunResult): string {
  const l = r.load;
  return (
    `${r.scenario.padEnd(8)} ${r.design.padEnd(17)} ${String(Math.round(l.throughput)).padStart(6)} req/s  ` +
    `p50 ${l.latencyMs.p50} p99 ${l.latencyMs.p99} max ${l.latencyMs.max} ms  ` +
    `201 ${l.outcomes.created} 200 ${l.outcomes.ok} 409 ${l.outcomes.insufficient} other ${l.outcomes.other}  ` +
    (l.soldOutAtSeconds !== null ? `sale ${Math.round(l.sale.throughput)} req/s p99 ${l.sale.latencyMs.p99} ms, sold out at ${l.soldOutAtSeconds} s  ` : '') +
    `cpu svc ${r.cpuPercent.service ?? '-'}% redis ${r.cpuPercent.redis ?? '-'}%${r.redisNodes ? ` (${r.redisNodes.map((n) => Math.round(n.cpuPercent)).join('/')})` : ''} pg ${r.cpuPercent.postgres ?? '-'}% gen ${r.cpuPercent.generator}% other ${r.cpuPercent.other ?? '-'}%  ` +
    (r.service?.pgBatchOperationsMean ? `batch ${r.service.pgBatchOperationsMean} ops/${r.service.pgBatchMsMean} ms  ` : '') +
    `sale per write: cpu µs ${r.sale.cpuMicrosPerWrite.service ?? '-'}/${r.sale.cpuMicrosPerWrite.redis ?? '-'}/${r.sale.cpuMicrosPerWrite.postgres ?? '-'} WAL ${r.sale.walBytesPerWrite ?? '-'} B  ` +
    `alloc ${r.allocatedKiBPerRequest ?? '-'} KiB/req  ` +
    (r.postgres?.checkpoints ? `checkpoints ${r.postgres.checkpoints}  ` : '') +
    `invariants ${r.invariants.ok ? 'ok' : 'FAILED'}`
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------------------------------

export interface SummaryRow {
  scenario: ScenarioName;
  design: Design;
  connections: number;
  passes: number;
  /** Medians over passes. The sale: until the flash SKU sold out (the whole run where it did not). */
  sale: { throughput: number; p50: number; p99: number };
  throughput: number;
  writesPerSecond: number;
  latencyMs: Omit<Percentiles, 'count' | 'mean'>;
  reserveLatencyMs: { p50: number; p99: number } | null;
  /** Sums over passes. */
  outcomes: { created: number; ok: number; insufficient: number; shed: number; other: number };
  soldOutAtSeconds: number | null;
  cpuPercent: { service: number | null; redis: number | null; postgres: number | null; generator: number; other: number | null };
  /** On a cluster, each node's CPU %, median over passes. */
  redisNodes?: RedisNodeCpu[];
  /** Medians over passes, as the rest: reservations created per second; p99 of 2xx and of shed answers. */
  createdPerSecond: number;
  answeredP99Ms: { ok: number; shed: number | null };
  /** Shed answers as a share of all answers, %. */
  shedPercent: number;
  cpuMicrosPerWrite: PerProcess;
  /** Medians over passes of the sale's costs per acknowledged write (RunResult.sale), and events appended per write. */
  saleCost: { cpuMicrosPerWrite: PerProcess; walBytesPerWrite: number | null; eventsPerWrite: number | null };
  /** Median over passes of RunResult.allocatedKiBPerRequest. */
  allocatedKiBPerRequest: number | null;
  /** The service's own mean time to answer 2xx and 503 (from reading the request), ms: ServiceDelta.httpMsMean. */
  serviceMsMean: { ok: number | null; unavailable: number | null };
  invariantsOk: boolean;
}

export interface RatioRow {
  scenario: ScenarioName;
  /** Medians over passes of the ratio measured within each pass, on the sale (see SummaryRow.sale). */
  durableOverPgOnly: number | null;
  pgOnlyP99OverDurableP99: number | null;
  durableOverRedisOnly: number | null;
}

/** Beyond saturation (the overload scenario): the bound on against off, medians of the ratios within each pass. */
export interface SaturationRatios {
  scenario: ScenarioName;
  /** Reservations created per second, WRITER_MAX_QUEUE on / off (about 1: throughput holds). */
  createdBoundedOverUnbounded: number | null;
  /** p99 of acknowledged answers, off / on (above 1: the bound keeps the answered fast). */
  okP99UnboundedOverBounded: number | null;
  /** The service's own mean time to answer a 2xx, off / on. */
  serviceOkMeanUnboundedOverBounded: number | null;
  /** Service CPU per acknowledged write, on / off (what shedding costs the node). */
  serviceCpuBoundedOverUnbounded: number | null;
}

export function saturationRatios(runs: RunResult[]): SaturationRatios[] {
  const out: SaturationRatios[] = [];
  for (const scenario of new Set(runs.filter((r) => r.design === 'durable-unbounded').map((r) => r.scenario))) {
    const pairs = [...new Set(runs.map((r) => r.pass))].flatMap((pass) => {
      const on = runs.find((r) => r.scenario === scenario && r.pass === pass && r.design === 'durable');
      const off = runs.find((r) => r.scenario === scenario && r.pass === pass && r.design === 'durable-unbounded');
      return on && off ? [{ on, off }] : [];
    });
    const ratio = (f: (p: { on: RunResult; off: RunResult }) => number | null) => {
      const values = pairs.map(f).filter((v): v is number => v !== null && Number.isFinite(v));
      return values.length ? round(median(values), 2) : null;
    };
    out.push({
      scenario,
      createdBoundedOverUnbounded: ratio(({ on, off }) => on.load.createdPerSecond / off.load.createdPerSecond),
      okP99UnboundedOverBounded: ratio(({ on, off }) => off.load.answeredMs.ok.p99 / on.load.answeredMs.ok.p99),
      serviceOkMeanUnboundedOverBounded: ratio(({ on, off }) =>
        on.service?.httpMsMean.ok && off.service?.httpMsMean.ok ? off.service.httpMsMean.ok / on.service.httpMsMean.ok : null,
      ),
      serviceCpuBoundedOverUnbounded: ratio(({ on, off }) =>
        on.cpuMicrosPerWrite.service !== null && off.cpuMicrosPerWrite.service ? on.cpuMicrosPerWrite.service / off.cpuMicrosPerWrite.service : null,
      ),
    });
  }
  return out;
}

/**
 * One design's costs over another's on the sale, medians over passes of the ratio within each pass: above 1 for
 * the costs (p99, CPU and WAL per write), `design` costs that much more; below 1 for throughput.
 * What the outbox costs: `durable` (events appended in the batch statement) over `durable-no-outbox` (the same
 * statement without them). What deciding slot by slot costs: `durable-cluster` over `durable` on one Redis.
 */
export interface CostRatio {
  scenario: ScenarioName;
  throughput: number | null;
  p99: number | null;
  cpuMicrosPerWrite: PerProcess;
  walBytesPerWrite: number | null;
}

export function costRatios(runs: RunResult[], design: Design, against: Design): CostRatio[] {
  const out: CostRatio[] = [];
  const scenariosOfBoth = [...new Set(runs.filter((r) => r.design === design).map((r) => r.scenario))].filter((s) =>
    runs.some((r) => r.scenario === s && r.design === against),
  );
  for (const scenario of scenariosOfBoth) {
    const pairs = [...new Set(runs.map((r) => r.pass))].flatMap((pass) => {
      const on = runs.find((r) => r.scenario === scenario && r.pass === pass && r.design === design);
      const off = runs.find((r) => r.scenario === scenario && r.pass === pass && r.design === against);
      return on && off ? [{ on, off }] : [];
    });
    const ratio = (f: (r: RunResult) => number | null) => {
      const values = pairs.flatMap(({ on, off }) => {
        const [a, b] = [f(on), f(off)];
        return a !== null && b ? [a / b] : [];
      });
      return values.length ? round(median(values), 2) : null;
    };
    out.push({
      scenario,
      throughput: ratio((r) => r.load.sale.throughput),
      p99: ratio((r) => r.load.sale.latencyMs.p99),
      cpuMicrosPerWrite: {
        service: ratio((r) => r.sale.cpuMicrosPerWrite.service),
        redis: ratio((r) => r.sale.cpuMicrosPerWrite.redis),
        postgres: ratio((r) => r.sale.cpuMicrosPerWrite.postgres),
      },
      walBytesPerWrite: ratio((r) => r.sale.walBytesPerWrite),
    });
  }
  return out;
}

export interface TargetCheck {
  target: string;
  measured: string;
  met: boolean;
}

export interface BenchReport {
  kind: 'irs-bench';
  version: 1;
  startedAt: string;
  finishedAt: string;
  options: Omit<BenchOptions, 'log' | 'soak'>;
  machine: Machine;
  summary: SummaryRow[];
  ratios: RatioRow[];
  saturation: SaturationRatios[];
  /** durable / durable-no-outbox */
  outbox: CostRatio[];
  /** durable-cluster / durable: the cluster against one Redis */
  cluster: CostRatio[];
  targets: TargetCheck[];
  invariantsOk: boolean;
  runs: RunResult[];
  profiles: ProfileSummary[];
  soak?: SoakReport;
}

const medianOrNull = (values: (number | null)[]): number | null => {
  const v = values.filter((x): x is number => x !== null);
  return v.length ? round(median(v), 2) : null;
};

/** Events appended per acknowledged write over the whole run (a 409 appends none), per the service's own counter. */
function eventsPerWrite(r: RunResult): number | null {
  const writes = r.load.writesPerSecond * r.load.elapsedSeconds;
  return r.service && writes > 0 ? round(r.service.eventsAppended / writes, 2) : null;
}

export function summarize(runs: RunResult[]): SummaryRow[] {
  const groups = new Map<string, RunResult[]>();
  for (const r of runs) {
    const key = `${r.scenario}\u0000${r.design}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  return [...groups.values()].map((g) => {
    const first = g[0]!;
    const m = (f: (r: RunResult) => number) => round(median(g.map(f)), 2);
    const reserve = g.map((r) => r.load.ops.reserve?.latencyMs).filter((x): x is Percentiles => !!x);
    const sum = (f: (r: RunResult) => number) => g.reduce((t, r) => t + f(r), 0);
    return {
      scenario: first.scenario,
      design: first.design,
      connections: first.connections,
      passes: g.length,
      sale: { throughput: m((r) => r.load.sale.throughput), p50: m((r) => r.load.sale.latencyMs.p50), p99: m((r) => r.load.sale.latencyMs.p99) },
      throughput: m((r) => r.load.throughput),
      writesPerSecond: m((r) => r.load.writesPerSecond),
      latencyMs: {
        p50: m((r) => r.load.latencyMs.p50),
        p95: m((r) => r.load.latencyMs.p95),
        p99: m((r) => r.load.latencyMs.p99),
        max: m((r) => r.load.latencyMs.max),
      },
      reserveLatencyMs: reserve.length ? { p50: round(median(reserve.map((p) => p.p50)), 2), p99: round(median(reserve.map((p) => p.p99)), 2) } : null,
      outcomes: {
        created: sum((r) => r.load.outcomes.created),
        ok: sum((r) => r.load.outcomes.ok),
        insufficient: sum((r) => r.load.outcomes.insufficient),
        shed: sum((r) => r.load.outcomes.shed),
        other: sum((r) => r.load.outcomes.other),
      },
      createdPerSecond: m((r) => r.load.createdPerSecond),
      answeredP99Ms: {
        ok: m((r) => r.load.answeredMs.ok.p99),
        shed: medianOrNull(g.map((r) => (r.load.answeredMs.shed.count > 0 ? r.load.answeredMs.shed.p99 : null))),
      },
      shedPercent: m((r) => (r.load.responses > 0 ? (100 * r.load.outcomes.shed) / r.load.responses : 0)),
      cpuMicrosPerWrite: {
        service: medianOrNull(g.map((r) => r.cpuMicrosPerWrite.service)),
        redis: medianOrNull(g.map((r) => r.cpuMicrosPerWrite.redis)),
        postgres: medianOrNull(g.map((r) => r.cpuMicrosPerWrite.postgres)),
      },
      saleCost: {
        cpuMicrosPerWrite: {
          service: medianOrNull(g.map((r) => r.sale.cpuMicrosPerWrite.service)),
          redis: medianOrNull(g.map((r) => r.sale.cpuMicrosPerWrite.redis)),
          postgres: medianOrNull(g.map((r) => r.sale.cpuMicrosPerWrite.postgres)),
        },
        walBytesPerWrite: medianOrNull(g.map((r) => r.sale.walBytesPerWrite)),
        eventsPerWrite: medianOrNull(g.map(eventsPerWrite)),
      },
      allocatedKiBPerRequest: medianOrNull(g.map((r) => r.allocatedKiBPerRequest ?? null)),
      serviceMsMean: {
        ok: medianOrNull(g.map((r) => r.service?.httpMsMean.ok ?? null)),
        unavailable: medianOrNull(g.map((r) => r.service?.httpMsMean.unavailable ?? null)),
      },
      soldOutAtSeconds: medianOrNull(g.map((r) => r.load.soldOutAtSeconds)),
      cpuPercent: {
        service: medianOrNull(g.map((r) => r.cpuPercent.service)),
        redis: medianOrNull(g.map((r) => r.cpuPercent.redis)),
        postgres: medianOrNull(g.map((r) => r.cpuPercent.postgres)),
        generator: m((r) => r.cpuPercent.generator),
        other: medianOrNull(g.map((r) => r.cpuPercent.other)),
      },
      ...(first.redisNodes
        ? { redisNodes: first.redisNodes.map((n, i) => ({ ...n, cpuPercent: round(median(g.map((r) => r.redisNodes?.[i]?.cpuPercent ?? 0)), 1) })) }
        : {}),
      invariantsOk: g.every((r) => r.invariants.ok),
    };
  });
}

export function ratios(runs: RunResult[], scenarioList: ScenarioName[]): RatioRow[] {
  const find = (s: ScenarioName, d: Design, pass: number) => runs.find((r) => r.scenario === s && r.design === d && r.pass === pass);
  const passes = [...new Set(runs.map((r) => r.pass))];
  const ratio = (s: ScenarioName, f: (d: RunResult, other: RunResult) => number, other: Design) => {
    const values = passes.flatMap((p) => {
      const d = find(s, 'durable', p);
      const b = find(s, other, p);
      return d && b ? [f(d, b)] : [];
    });
    return values.length ? round(median(values), 2) : null;
  };
  return scenarioList.map((s) => ({
    scenario: s,
    durableOverPgOnly: ratio(s, (d, b) => d.load.sale.throughput / b.load.sale.throughput, 'pg-only'),
    pgOnlyP99OverDurableP99: ratio(s, (d, b) => b.load.sale.latencyMs.p99 / Math.max(d.load.sale.latencyMs.p99, 0.001), 'pg-only'),
    durableOverRedisOnly: ratio(s, (d, b) => d.load.sale.throughput / b.load.sale.throughput, 'redis-only'),
  }));
}

/** Issue 3's targets for the flash sale at 64 connections (reported, never asserted). */
export function targets(summary: SummaryRow[], ratioRows: RatioRow[]): TargetCheck[] {
  const d = summary.find((r) => r.scenario === 'flash64' && r.design === 'durable');
  const p = summary.find((r) => r.scenario === 'flash64' && r.design === 'pg-only');
  const ratio = ratioRows.find((r) => r.scenario === 'flash64');
  if (!d) return [];
  // Until the SKU sold out every answer is an acknowledged write (reservation 201, confirm/release 200).
  const checks: TargetCheck[] = [
    { target: 'flash64 durable >= 10,000 req/s (sale)', measured: `${Math.round(d.sale.throughput)} req/s`, met: d.sale.throughput >= 10_000 },
    { target: 'flash64 durable p99 <= 10 ms (sale)', measured: `${d.sale.p99} ms`, met: d.sale.p99 <= 10 },
    { target: 'flash64 durable: no errors but insufficient_stock', measured: `${d.outcomes.other} other`, met: d.outcomes.other === 0 },
  ];
  if (p && ratio?.durableOverPgOnly != null) {
    checks.push({
      target: 'flash64 durable >= 5x pg-only, at lower p99',
      measured: `${ratio.durableOverPgOnly}x, p99 ${d.sale.p99} vs ${p.sale.p99} ms`,
      met: ratio.durableOverPgOnly >= 5 && d.sale.p99 < p.sale.p99,
    });
  }
  if (ratio?.durableOverRedisOnly != null) {
    checks.push({ target: 'flash64 durable >= 50% of redis-only', measured: `${round(ratio.durableOverRedisOnly * 100, 0)}%`, met: ratio.durableOverRedisOnly >= 0.5 });
  }
  return checks;
}

// ---------------------------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------------------------

export async function connectShared(o: BenchOptions): Promise<Shared> {
  const runTag = `b${randomBytes(3).toString('hex')}`;
  if (o.url) return { runTag, redis: null, cluster: null, admin: null, vacuum: false };
  const redis = new Redis(o.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  const admin = new pg.Client({ connectionString: o.databaseUrl });
  await admin.connect();
  const cluster = o.designs.some(onCluster) ? await startCluster(o) : null;
  return { runTag, redis, cluster, admin, vacuum: await autovacuumIsOff(admin) };
}

/**
 * A private Redis Cluster of 3 masters + 3 replicas (the tests' own: test/helpers/redis-cluster.ts), with Redis'
 * default node timeout: a node slowed by the load must not be failed over mid-run.
 */
async function startCluster(o: BenchOptions): Promise<ClusterUnderTest> {
  const started = performance.now();
  const server = await startRedisCluster(3, { nodeTimeoutMs: 15_000 });
  const nodes = await Promise.all(
    server.servers.map(async ({ port }) => {
      const redis = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 });
      await redis.connect();
      const role: RedisNodeCpu['role'] = /^role:master/m.test(await redis.info('replication')) ? 'master' : 'replica';
      return { redis, port, role };
    }),
  );
  const client = (await connectRedis(o.redisUrl, server.seeds)) as Cluster;
  const masters = nodes.filter((n) => n.role === 'master').length;
  o.log(`Redis Cluster: ${masters} masters + ${nodes.length - masters} replicas (${server.seeds}), up in ${round((performance.now() - started) / 1000, 1)} s`);
  return { server, client, nodes };
}

const clusterSeeds = (shared: Shared): string => {
  if (!shared.cluster) throw new Error('durable-cluster needs the private Redis Cluster (connectShared starts it when the design is asked for)');
  return shared.cluster.server.seeds;
};

/** Closes the clients; the cluster, if one was started, is torn down. */
export async function closeShared(shared: Shared): Promise<void> {
  const cluster = shared.cluster;
  await Promise.allSettled([shared.redis?.quit(), shared.admin?.end(), cluster?.client.quit(), ...(cluster?.nodes.map((n) => n.redis.quit()) ?? [])]);
  await cluster?.server.stop();
}

export async function runBench(o: BenchOptions): Promise<BenchReport> {
  const startedAt = new Date().toISOString();
  const shared = await connectShared(o);
  const designs: Design[] = o.url ? ['external'] : o.designs;
  const runs: RunResult[] = [];
  const profiles: ProfileSummary[] = [];
  try {
    const host = await machine(shared.redis, shared.admin, repoRoot);
    for (let pass = 1; pass <= o.passes; pass++) {
      // Rotate the order, so no design always runs first (cold disk cache) or last (fullest WAL).
      const order = designs.map((_, i) => designs[(i + pass - 1) % designs.length]!);
      o.log(`pass ${pass}/${o.passes}: ${order.join(', ')}`);
      for (const design of order) runs.push(...(await measureDesign(design, pass, o, shared, profiles)));
    }
    const summary = summarize(runs);
    // durable is compared with the baselines in the scenarios that run at least one of them (not overload's pair).
    const withBaseline = (s: ScenarioName) => (scenarios[s].designs ?? standardDesigns).some((d) => d === 'pg-only' || d === 'redis-only');
    const ratioRows = ratios(runs, o.scenarios.filter(withBaseline));
    const { log: _log, soak: _soak, ...options } = o;
    return {
      kind: 'irs-bench',
      version: 1,
      startedAt,
      finishedAt: new Date().toISOString(),
      options,
      machine: host,
      summary,
      ratios: ratioRows,
      saturation: saturationRatios(runs),
      outbox: costRatios(runs, 'durable', 'durable-no-outbox'),
      cluster: costRatios(runs, 'durable-cluster', 'durable'),
      targets: targets(summary, ratioRows),
      invariantsOk: runs.every((r) => r.invariants.ok),
      runs,
      profiles,
    };
  } finally {
    await closeShared(shared);
  }
}

export interface SoakReport {
  design: Design;
  seconds: number;
  targetRate: number;
  connections: number;
  achievedThroughput: number;
  latencyMs: Percentiles;
  outcomes: LoadResult['outcomes'];
  rssMiB: {
    samples: { t: number; rss: number }[];
    start: number | null;
    median: number | null;
    max: number | null;
    end: number | null;
    /** Least-squares growth after the first minute (warm-up of pools and JIT), MiB per minute. */
    slopeMiBPerMinute: number;
  };
  timeline: TimelinePoint[];
  /** Redis used_memory before and after (the idempotency records and hold tombstones the run left). */
  redisUsedMemoryMiB: { start: number | null; end: number | null };
  invariants: AuditResult;
  machine: Machine;
  startedAt: string;
}

async function redisUsedMiB(redis: Redis | null): Promise<number | null> {
  if (!redis) return null;
  const info = await redis.info('memory');
  const bytes = Number(/^used_memory:(\d+)/m.exec(info)?.[1] ?? NaN);
  return Number.isFinite(bytes) ? round(bytes / 2 ** 20, 1) : null;
}

/** A fixed-rate flash sale (stock that never runs out) for `seconds`, sampling the service's RSS. */
export async function runSoak(o: BenchOptions, soak: SoakOptions): Promise<SoakReport> {
  const startedAt = new Date().toISOString();
  const shared = await connectShared(o);
  const server = o.url ? externalServer(o.url) : await startServer(soak.design, o, 'soak');
  try {
    const host = await machine(shared.redis, shared.admin, repoRoot);
    const item = `${shared.runTag}-soak`;
    const units = Math.min(1_000_000_000, Math.ceil(soak.rate * (soak.seconds + o.warmupSeconds + 10)));
    const supplied: Supply = new Map();
    await seed(server.url, [[item, units]], o.headers, supplied);
    const spec = {
      url: server.url,
      kind: 'flash' as const,
      connections: soak.connections,
      overallRate: soak.rate,
      flashItem: item,
      skuPrefix: '',
      skuCount: 0,
      ttlSeconds: 600,
      ...(Object.keys(o.headers).length > 0 ? { headers: o.headers } : {}),
    };
    const acked: Record<string, Acked> = {};
    let ackedReservations = 0;
    if (o.warmupSeconds > 0) {
      const warm = await runLoad({ ...spec, durationSeconds: o.warmupSeconds, keyPrefix: `${shared.runTag}-soakwarm-`, seed: 7 });
      mergeAcked(acked, warm.acked);
      ackedReservations += warm.ackedReservations;
    }
    const redisStart = await redisUsedMiB(shared.redis);
    const samples: { t: number; rss: number }[] = [];
    const t0 = performance.now();
    const sample = () => {
      const r = server.pid ? rssMiB(server.pid) : null;
      if (r !== null) samples.push({ t: round((performance.now() - t0) / 1000, 1), rss: r });
    };
    sample();
    const sampler = setInterval(sample, soak.sampleSeconds * 1000);
    const databaseUrl = server.databaseUrl;
    const vacuumer = shared.vacuum && databaseUrl ? setInterval(() => void vacuumAnalyze(databaseUrl).catch(() => {}), 30_000) : null;
    o.log(`soak: ${soak.design} at ${soak.rate} req/s for ${soak.seconds} s, RSS every ${soak.sampleSeconds} s`);
    const load = await runLoad({ ...spec, durationSeconds: soak.seconds, keyPrefix: `${shared.runTag}-soak-`, seed: 11, timelineSeconds: 10 });
    clearInterval(sampler);
    if (vacuumer) clearInterval(vacuumer);
    sample();
    mergeAcked(acked, load.acked);
    ackedReservations += load.ackedReservations;
    await sleep(500);
    await server.drain();
    const redisEnd = await redisUsedMiB(shared.redis);
    const invariants = await checkInvariants(server, shared, supplied, acked, ackedReservations, o);
    const rss = samples.map((s) => s.rss);
    const settled = samples.filter((s) => s.t >= Math.min(60, soak.seconds / 5));
    return {
      design: server.design,
      seconds: soak.seconds,
      targetRate: soak.rate,
      connections: soak.connections,
      achievedThroughput: load.throughput,
      latencyMs: load.latencyMs,
      outcomes: load.outcomes,
      rssMiB: {
        samples,
        start: rss[0] ?? null,
        median: rss.length ? round(median(rss), 1) : null,
        max: rss.length ? Math.max(...rss) : null,
        end: rss.at(-1) ?? null,
        slopeMiBPerMinute: round(slope(settled.map((s) => ({ x: s.t / 60, y: s.rss }))), 2),
      },
      timeline: load.timeline ?? [],
      redisUsedMemoryMiB: { start: redisStart, end: redisEnd },
      invariants,
      machine: host,
      startedAt,
    };
  } finally {
    await server.stop();
    await cleanup(server, shared, o);
    await closeShared(shared);
  }
}

