/** What the bench reads off the machine: processes' CPU and memory, Redis and PostgreSQL counters, versions. */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import type { Redis } from 'ioredis';
import pg from 'pg';
import { round } from './stats.js';

let clockTicks: number | undefined;
/** Kernel clock ticks per second (the unit of /proc/<pid>/stat CPU times). */
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** CPU seconds (user + system) a process has used, or null when it is gone. */
export function processCpuSeconds(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces) start at the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
  } catch {
    return null;
  }
}

/** CPU seconds the whole machine spent busy (all cores; /proc/stat), to see load that is not the bench's. */
export function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const [, user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).map(Number) as number[];
  return (user! + nice! + system! + irq! + softirq! + steal!) / ticksPerSecond();
}

/** Resident set size in MiB, or null when the process is gone. */
export function rssMiB(pid: number): number | null {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? round(Number(match[1]) / 1024, 1) : null;
  } catch {
    return null;
  }
}

/** CPU seconds per pid of every process named `name` (e.g. all PostgreSQL backends). */
export function namedCpuSeconds(name: string): Map<number, number> {
  const byPid = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      if (comm !== name) continue;
      const cpu = processCpuSeconds(Number(entry));
      if (cpu !== null) byPid.set(Number(entry), cpu);
    } catch {
      // the process ended while we looked
    }
  }
  return byPid;
}

/**
 * The PostgreSQL processes that work for a bench run: the backends connected to its database, and the server's own
 * (WAL writer, checkpointer…), not other databases' backends (another test suite on the same server).
 */
export async function postgresPidsOf(admin: pg.Client, database: string): Promise<Set<number>> {
  const { rows } = await admin.query<{ pid: number }>(
    "SELECT pid FROM pg_stat_activity WHERE datname = $1 OR (datname IS NULL AND backend_type <> 'client backend')",
    [database],
  );
  return new Set(rows.map((r) => r.pid));
}

/**
 * CPU the processes used between two looks: those alive at the second look, counted from the first look (or
 * from their start). A process that ended in between is missed, so this is a lower bound.
 */
export function cpuBetween(before: Map<number, number>, after: Map<number, number>): number {
  let total = 0;
  for (const [pid, cpu] of after) total += cpu - (before.get(pid) ?? 0);
  return total;
}

export interface RedisCounters {
  /** Summed over the servers asked (a cluster's every node). */
  cpuSeconds: number;
  /** Each server's, in the order asked. */
  cpuSecondsByServer: number[];
  /** command → [calls, total µs], summed over the servers */
  commands: Record<string, [number, number]>;
}

/** CPU and command counters of one Redis, or the sums of a cluster's nodes (each node is a process of its own). */
export async function redisCounters(servers: readonly Redis[]): Promise<RedisCounters> {
  const counters: RedisCounters = { cpuSeconds: 0, cpuSecondsByServer: [], commands: {} };
  for (const redis of servers) {
    const [cpu, stats] = await Promise.all([redis.info('cpu'), redis.info('commandstats')]);
    const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(cpu)?.[1] ?? 0);
    const seconds = field('used_cpu_sys') + field('used_cpu_user');
    counters.cpuSeconds += seconds;
    counters.cpuSecondsByServer.push(seconds);
    for (const [, name, calls, usec] of stats.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
      const [c, u] = counters.commands[name!] ?? [0, 0];
      counters.commands[name!] = [c + Number(calls), u + Number(usec)];
    }
  }
  return counters;
}

export interface RedisCommandDelta {
  command: string;
  calls: number;
  usecPerCall: number;
  perRequest: number;
}

/** The commands Redis ran between two snapshots, busiest first. */
export function redisDelta(before: RedisCounters, after: RedisCounters, requests: number): RedisCommandDelta[] {
  return Object.entries(after.commands)
    .map(([command, [calls, usec]]) => {
      const [c0, u0] = before.commands[command] ?? [0, 0];
      const n = calls - c0;
      return { command, calls: n, usecPerCall: n > 0 ? round((usec - u0) / n, 2) : 0, perRequest: requests > 0 ? round(n / requests, 3) : 0 };
    })
    .filter((d) => d.calls > 0)
    .sort((a, b) => b.calls * b.usecPerCall - a.calls * a.usecPerCall)
    .slice(0, 12);
}

export interface PgCounters {
  commits: number;
  rollbacks: number;
  walRecords: number;
  walBytes: number;
  walSyncs: number;
  /**
   * Checkpoints the server started (timed or requested). One writes every dirty buffer and makes each page's next
   * change log a full image: the first suspect when a run's p99 jumps.
   */
  checkpoints: number;
}

export async function pgCounters(db: pg.Client, database: string): Promise<PgCounters> {
  const { rows } = await db.query<{
    commits: string;
    rollbacks: string;
    wal_records: string;
    wal_bytes: string;
    wal_sync: string;
    checkpoints: string;
  }>(
    `SELECT d.xact_commit AS commits, d.xact_rollback AS rollbacks, w.wal_records, w.wal_bytes, w.wal_sync,
       b.checkpoints_timed + b.checkpoints_req AS checkpoints
     FROM pg_stat_database d, pg_stat_wal w, pg_stat_bgwriter b WHERE d.datname = $1`,
    [database],
  );
  const r = rows[0];
  return {
    commits: Number(r?.commits ?? 0),
    rollbacks: Number(r?.rollbacks ?? 0),
    walRecords: Number(r?.wal_records ?? 0),
    walBytes: Number(r?.wal_bytes ?? 0),
    walSyncs: Number(r?.wal_sync ?? 0),
    checkpoints: Number(r?.checkpoints ?? 0),
  };
}

export interface Machine {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  redis: { version: string; appendonly: string; save: string };
  postgres: { version: string; settings: Record<string, string> };
  autocannon: string;
  git: { commit: string; dirty: boolean } | null;
}

/** The machine and the servers' durability settings (the numbers mean little without them). */
export async function machine(redis: Redis | null, db: pg.Client | null, repoDir: string): Promise<Machine> {
  const cpus = os.cpus();
  let redisInfo: Machine['redis'] = { version: 'unknown', appendonly: 'unknown', save: 'unknown' };
  if (redis) {
    const server = await redis.info('server');
    const persistence = await redis.info('persistence');
    const config = async (name: string) => {
      try {
        const reply = (await redis.call('CONFIG', 'GET', name)) as string[];
        return reply[1] ?? 'unknown';
      } catch {
        return 'unknown';
      }
    };
    redisInfo = {
      version: /redis_version:(\S+)/.exec(server)?.[1] ?? 'unknown',
      appendonly: /aof_enabled:(\d)/.exec(persistence)?.[1] === '1' ? 'yes' : await config('appendonly'),
      save: await config('save'),
    };
  }
  let postgres: Machine['postgres'] = { version: 'unknown', settings: {} };
  if (db) {
    const version = (await db.query<{ v: string }>('SELECT current_setting($$server_version$$) AS v')).rows[0]?.v ?? 'unknown';
    const names = ['fsync', 'synchronous_commit', 'wal_sync_method', 'full_page_writes', 'commit_delay', 'shared_buffers', 'max_connections', 'wal_level', 'autovacuum'];
    const { rows } = await db.query<{ name: string; setting: string; unit: string | null }>(
      'SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1)',
      [names],
    );
    postgres = { version, settings: Object.fromEntries(rows.map((r) => [r.name, r.unit ? `${r.setting} ${r.unit}` : r.setting])) };
  }
  let git: Machine['git'] = null;
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: repoDir, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'migrations'], { cwd: repoDir, encoding: 'utf8' }).trim() !== '';
    git = { commit, dirty };
  } catch {
    // not a git checkout
  }
  let autocannonVersion = 'unknown';
  try {
    autocannonVersion = (JSON.parse(readFileSync(new URL('../node_modules/autocannon/package.json', import.meta.url), 'utf8')) as { version: string })
      .version;
  } catch {
    // installed elsewhere
  }
  return {
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memoryGiB: round(os.totalmem() / 2 ** 30, 1),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    redis: redisInfo,
    postgres,
    autocannon: autocannonVersion,
    git,
  };
}

/**
 * Sums and counts of the service's own histograms (GET /metrics), to read its side of a run; a counter's value
 * (`<name>_total`) is kept as the sum of `<name>`.
 */
export type ServiceMetrics = Record<string, { sum: number; count: number }>;

export async function serviceMetrics(url: string, headers: Record<string, string>): Promise<ServiceMetrics | null> {
  try {
    const response = await fetch(`${url}/metrics`, { headers });
    if (response.status !== 200) return null;
    const text = await response.text();
    const out: ServiceMetrics = {};
    for (const m of text.matchAll(/^(irs_\w+?|http_request_duration_seconds)_(sum|count|total)(\{[^}]*\})? ([\d.e+-]+)$/gm)) {
      const [, name, kind, labels = '', value] = m as unknown as [string, string, string, string | undefined, string];
      // Lua by script; HTTP also by kind of answer (2xx, 503, other); everything else summed over its labels.
      const script = /script="([^"]+)"/.exec(labels)?.[1];
      const status = /status_code="(\d+)"/.exec(labels)?.[1];
      const answer = status === undefined ? undefined : status.startsWith('2') ? '2xx' : status === '503' ? '503' : 'other';
      const key = script ? `${name}{${script}}` : answer ? `${name}{${answer}}` : name;
      const entry = (out[key] ??= { sum: 0, count: 0 });
      entry[kind === 'count' ? 'count' : 'sum'] += Number(value);
    }
    return out;
  } catch {
    return null;
  }
}

export interface ServiceDelta {
  /** Group commit: operations per PostgreSQL transaction, and how long one took. */
  pgBatches: number;
  pgBatchOperationsMean: number | null;
  pgBatchMsMean: number | null;
  /** Lua script round trips (client side, queueing in ioredis included), mean ms by script. */
  luaMsMean: Record<string, number>;
  /**
   * Mean time the service took to answer, as it measures it (from reading the request to answering: not the time
   * a request waited to be accepted or read), for 2xx answers and for 503s; ms.
   */
  httpMsMean: { ok: number | null; unavailable: number | null };
  /** Events the batch statements appended (irs_events_appended_total, every type). */
  eventsAppended: number;
}

export function serviceDelta(before: ServiceMetrics | null, after: ServiceMetrics | null): ServiceDelta | null {
  if (!before || !after) return null;
  const d = (key: string) => {
    const a = after[key] ?? { sum: 0, count: 0 };
    const b = before[key] ?? { sum: 0, count: 0 };
    return { sum: a.sum - b.sum, count: a.count - b.count };
  };
  const batchSize = d('irs_pg_batch_operations');
  const batchTime = d('irs_pg_batch_duration_seconds');
  const luaMsMean: Record<string, number> = {};
  for (const key of Object.keys(after)) {
    const script = /^irs_lua_duration_seconds\{(.+)\}$/.exec(key)?.[1];
    if (!script) continue;
    const x = d(key);
    if (x.count > 0) luaMsMean[script] = round((x.sum / x.count) * 1000, 2);
  }
  const httpMean = (answer: string) => {
    const x = d(`http_request_duration_seconds{${answer}}`);
    return x.count > 0 ? round((x.sum / x.count) * 1000, 2) : null;
  };
  return {
    httpMsMean: { ok: httpMean('2xx'), unavailable: httpMean('503') },
    pgBatches: batchSize.count,
    pgBatchOperationsMean: batchSize.count > 0 ? round(batchSize.sum / batchSize.count, 1) : null,
    pgBatchMsMean: batchTime.count > 0 ? round((batchTime.sum / batchTime.count) * 1000, 2) : null,
    luaMsMean,
    eventsAppended: d('irs_events_appended').sum,
  };
}

/**
 * Some machines run PostgreSQL with autovacuum off. Then every table keeps its dead rows and has no statistics,
 * and a write-heavy run slows down minute by minute (measured: the durable flash sale fell from 4,580 to 2,100
 * req/s in 2 minutes, and one VACUUM ANALYZE brought it back). Production runs autovacuum, so the bench stands in
 * for it: one VACUUM ANALYZE of the design's database before each scenario, and every 30 s of a soak.
 */
export async function autovacuumIsOff(admin: pg.Client | null): Promise<boolean> {
  if (!admin) return false;
  const { rows } = await admin.query<{ on: string }>("SELECT current_setting('autovacuum') AS on");
  return rows[0]?.on === 'off';
}

export async function vacuumAnalyze(databaseUrl: string): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query('VACUUM (ANALYZE)');
  } finally {
    await client.end();
  }
}
