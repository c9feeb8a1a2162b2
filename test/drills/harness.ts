import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import pg from 'pg';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { reconcile, type ReconcileOptions, type ReconcileReport } from '../../src/jobs/reconcile.js';
import { Keys } from '../../src/redis/keys.js';
import { freePort } from '../helpers/ports.js';
import { createTestDatabase, startPostgres, type PrivatePostgres, type TestDatabase } from '../helpers/postgres.js';
import { startRedis, type RedisServer } from '../helpers/redis-server.js';
import { ANY_NODE, waitForLockWait } from '../helpers/sessions.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';
import { ApiProcess } from './api-process.js';
import {
  checkInvariants,
  retryResolution,
  takeSnapshot,
  unresolvedKeys,
  waitForExpiriesRecorded,
  type InvariantResult,
  type RetryResolution,
} from './checks.js';
import { ClientLog, runLoad, seedStock, type Sku } from './load.js';
import { Monitor } from './monitor.js';

/** Timings the API processes run with: fast jobs and short timeouts, so a drill of seconds sees them all act. */
const ORPHAN_HOLD_AFTER_MS = 3_000;
const API_ENV = {
  LOG_LEVEL: 'warn',
  SWEEPER_INTERVAL_MS: '200',
  RECONCILE_INTERVAL_MS: '2000',
  ORPHAN_HOLD_AFTER_MS: String(ORPHAN_HOLD_AFTER_MS),
  UNRECORDED_GRACE_MS: '3000',
  REDIS_COMMAND_TIMEOUT_MS: '1000',
  DATABASE_QUERY_TIMEOUT_MS: '1500',
  SHUTDOWN_GRACE_MS: '1000',
};
const INITIAL_STOCK = 200;
/** Units of every other SKU that only high-priority reservations may take (the load sends both priorities). */
const SAFETY_STOCK = 15;
/** How long the API nodes' sweepers get to record every overdue expiry (TTLs ≤ 5 s, 3 s grace, slack). */
const EXPIRY_RECORD_TIMEOUT_MS = 15_000;
const READY_TIMEOUT_MS = 30_000;
/**
 * How long the API nodes' own reconcilers get to heal Redis (every RECONCILE_INTERVAL_MS; a stranded stock intent is
 * judged DATABASE_QUERY_TIMEOUT_MS + 4 s after its decision).
 */
const HEAL_TIMEOUT_MS = 30_000;

async function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export interface TopologyOptions {
  apis: 1 | 2;
  /** Redis with `appendonly yes` (appendfsync always). */
  redisAof?: boolean;
  /** The API processes reach PostgreSQL through a TCP proxy the drill can cut. */
  pgProxy?: boolean;
}

/**
 * Everything one drill runs: a private redis-server, a private PostgreSQL (its database created fresh), an
 * optional TCP proxy in front of PostgreSQL, and 1–2 API processes; plus direct clients for the checks. All on
 * loopback. `dispose()` kills every process it started, whatever state the drill left them in.
 */
export class DrillEnv {
  redis!: RedisServer;
  postgres!: PrivatePostgres;
  database!: TestDatabase;
  proxy: TcpProxy | null = null;
  readonly apis: ApiProcess[] = [];
  /** Straight to Redis and PostgreSQL (never through the proxy): the checks' own view. */
  directRedis!: Redis;
  directDb!: pg.Pool;
  readonly prefix = `drill${randomBytes(3).toString('hex')}:`;
  readonly keys = new Keys(this.prefix);
  readonly logDir: string;
  private readonly cleanups: (() => Promise<unknown>)[] = [];

  private constructor(readonly name: string) {
    this.logDir = mkdtempSync(path.join(os.tmpdir(), `irs-drill-${name}-`));
  }

  static async start(name: string, topology: TopologyOptions): Promise<DrillEnv> {
    const env = new DrillEnv(name);
    try {
      await env.setUp(topology);
    } catch (err) {
      await env.dispose();
      throw err;
    }
    return env;
  }

  private async setUp(t: TopologyOptions): Promise<void> {
    this.redis = await startRedis({ appendonly: t.redisAof ?? false });
    this.cleanups.push(() => this.redis.kill9());
    this.postgres = await startPostgres();
    this.cleanups.push(() => this.postgres.destroy());
    this.database = await createTestDatabase(this.postgres.url);
    let apiDatabaseUrl = this.database.url;
    if (t.pgProxy) {
      const proxy = await startTcpProxy(this.postgres.port);
      this.proxy = proxy;
      this.cleanups.push(() => proxy.close());
      const viaProxy = new URL(this.database.url);
      viaProxy.port = String(proxy.port);
      apiDatabaseUrl = viaProxy.toString();
    }
    this.directRedis = new Redis(this.redis.url, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: 1_000,
      retryStrategy: () => 100,
    });
    this.directRedis.on('error', () => {});
    this.cleanups.push(async () => this.directRedis.disconnect());
    this.directDb = new pg.Pool({ connectionString: this.database.url, max: 4, connectionTimeoutMillis: 2_000, query_timeout: 10_000 });
    this.directDb.on('error', () => {});
    this.cleanups.push(() => this.directDb.end());

    for (let n = 0; n < t.apis; n++) {
      const api = new ApiProcess(`api-${n}`, await freePort(), {
        ...API_ENV,
        DATABASE_URL: apiDatabaseUrl,
        REDIS_URL: this.redis.url,
        REDIS_KEY_PREFIX: this.prefix,
      }, path.join(this.logDir, `api-${n}.log`));
      this.apis.push(api);
      this.cleanups.push(() => api.kill9());
    }
    // Sequentially: the first one migrates the database.
    for (const api of this.apis) await api.start();
    await this.directRedis.ping();
  }

  private supervisor: NodeJS.Timeout | null = null;

  /** Restarts any API process that exits on its own (each crash is kept in its `crashes`), as systemd would. */
  supervise(): void {
    this.supervisor ??= setInterval(() => {
      for (const api of this.apis) void api.restartIfCrashed().catch(() => undefined);
    }, 250);
  }

  crashes(): string[] {
    return this.apis.flatMap((a) => a.crashes);
  }

  /** PostgreSQL sessions of this database left idle in a transaction for over 5 s (stranded by the fault). */
  async strandedSessions(): Promise<string[]> {
    const { rows } = await this.directDb.query<{ pid: number; age_s: number; locks: string }>(
      `SELECT a.pid, extract(epoch FROM now() - a.state_change)::float8 AS age_s,
              coalesce(string_agg(DISTINCT l.locktype || ':' || l.mode, ','), '') AS locks
       FROM pg_stat_activity a LEFT JOIN pg_locks l ON l.pid = a.pid AND l.granted
       WHERE a.datname = current_database() AND a.state LIKE 'idle in transaction%'
         AND a.state_change < now() - interval '5 seconds'
       GROUP BY a.pid, a.state_change`,
    );
    return rows.map((r) => `backend ${r.pid} idle in transaction for ${Math.round(r.age_s)} s holding ${r.locks || 'no locks'}`);
  }

  /** Kills and closes everything, newest first; never throws. */
  async dispose(): Promise<void> {
    if (this.supervisor) clearInterval(this.supervisor);
    this.supervisor = null;
    for (const cleanup of this.cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
  }

  removeLogs(): void {
    rmSync(this.logDir, { recursive: true, force: true });
  }
}

export interface Drill {
  name: string;
  title: string;
  topology: TopologyOptions;
  /**
   * Injects the fault, calls `landed()` the instant it has hit, then brings the failed part back (as an operator
   * or a supervisor would).
   */
  inject(env: DrillEnv, landed: () => Promise<void>): Promise<void>;
}

export const DRILLS: readonly Drill[] = [
  {
    name: 'redis-flushall',
    title: 'FLUSHALL on Redis',
    topology: { apis: 1 },
    inject: async (env, landed) => {
      await env.directRedis.flushall();
      await landed();
    },
  },
  {
    name: 'redis-kill9',
    title: 'Redis kill -9, restarted empty',
    topology: { apis: 1 },
    inject: async (env, landed) => {
      await env.redis.kill9();
      await landed();
      await sleep(1_000);
      await env.redis.restart();
    },
  },
  {
    name: 'redis-aof',
    title: 'Redis kill -9, restarted from its AOF (appendonly yes)',
    topology: { apis: 1, redisAof: true },
    inject: async (env, landed) => {
      await env.redis.kill9();
      await landed();
      await sleep(1_000);
      await env.redis.restart();
    },
  },
  {
    name: 'api-kill9',
    title: 'API process kill -9, restarted',
    topology: { apis: 1 },
    inject: async (env, landed) => {
      const api = env.apis[0]!;
      await api.kill9();
      await landed();
      await sleep(1_000);
      await api.start();
    },
  },
  {
    name: 'pg-restart',
    title: 'PostgreSQL restart (connections dropped)',
    topology: { apis: 1 },
    inject: async (env, landed) => {
      await env.postgres.stop('fast');
      await landed();
      await sleep(1_000);
      await env.postgres.start();
    },
  },
  {
    name: 'pg-net-cut',
    title: 'network to PostgreSQL cut for 3 s (connections reset)',
    topology: { apis: 1, pgProxy: true },
    inject: async (env, landed) => {
      env.proxy!.cut();
      await landed();
      await sleep(3_000);
      env.proxy!.restore();
    },
  },
  {
    name: 'pg-net-blackhole',
    title: 'network to PostgreSQL blackholed for 3 s (packets dropped)',
    topology: { apis: 1, pgProxy: true },
    inject: async (env, landed) => {
      env.proxy!.blackhole();
      await landed();
      await sleep(3_000);
      env.proxy!.restore();
    },
  },
  {
    name: 'two-api-kill9',
    title: 'two API processes, one killed with kill -9',
    topology: { apis: 2 },
    inject: async (env, landed) => {
      await env.apis[1]!.kill9();
      await landed();
    },
  },
];

/**
 * How long group-commit transactions are held open before the fault lands, once one is seen blocked: the stall's
 * length is part of the fault (requests pile up in flight behind it), not a wait for something to happen.
 */
const COMMIT_STALL_MS = 500;
/** How long the load has to get a batch blocked on the stalled ledger (it writes all the time: a second is plenty). */
const STALL_SEEN_TIMEOUT_MS = 10_000;

/**
 * Makes the fault land mid-commit, as it does on a busy production system: takes a SHARE lock on the ledger
 * table, so the API's group-commit transactions (decided in Redis, their rows written up to the ledger insert)
 * wait open until `release()`. Far below DATABASE_QUERY_TIMEOUT_MS, so nothing times out because of it.
 */
async function stallCommits(db: pg.Pool): Promise<() => Promise<void>> {
  const client = await db.connect();
  client.on('error', () => {}); // a PostgreSQL restart ends this connection too
  let released = false;
  try {
    await client.query("BEGIN; SET LOCAL lock_timeout = '2s'; LOCK TABLE stock_movements IN SHARE MODE");
  } catch (err) {
    client.release(true);
    throw err;
  }
  return async () => {
    if (released) return;
    released = true;
    await client.query('ROLLBACK').catch(() => undefined);
    client.release(true);
  };
}

export interface DrillOptions {
  clients: number;
  seconds: number;
  seed: number;
  /** Keep the API logs even when the drill passes. */
  keepLogs?: boolean;
}

export interface ReconcileOutcome {
  /** A dry run reported no drift, orphaned hold or stranded stock intent within HEAL_TIMEOUT_MS; no repair run. */
  ok: boolean;
  /** The check's start (load drained, invariants checked) → the first clean dry run; 0 when the first was clean. */
  healedAfterMs: number | null;
  /** What the first dry run found (the nodes healed it), or what was left at the deadline. */
  details: string[];
  /** What the nodes' reconcilers left in PostgreSQL: corrections recorded, stock decisions voided. */
  corrections: number;
  voided: number;
  /** The fault → the last of those (by PostgreSQL's clock, on this machine), or null if there was none. */
  lastRepairAfterFaultMs: number | null;
}

export interface DrillResult {
  drill: string;
  title: string;
  seed: number;
  requests: number;
  acks: number;
  faults: number;
  statusCounts: Record<string, number>;
  /** When the fault was injected (ISO-8601), to read the violations' times against. */
  faultAt: string | null;
  /** Fault injected → first reservation acknowledged for a request sent after it. */
  recoveryMs: number | null;
  /** Fault injected → every running API node answers /health/ready 200 again. */
  readyMs: number | null;
  /** Keys whose clients gave up without a definitive answer. */
  unresolvedKeys: number;
  /** How soon after recovery every create the clients retried got its definitive answer (bounded: checks.ts). */
  retries: RetryResolution | null;
  /** API processes that exited on their own (the harness restarted them, as a supervisor would). */
  crashes: string[];
  /** Observations that are not invariant violations (stranded PostgreSQL sessions, what repair fixed). */
  notes: string[];
  expiriesRecordedAfterMs: number | null;
  invariants: InvariantResult[];
  reconcile: ReconcileOutcome | null;
  /** A failure of the drill itself (set-up, fault injection, recovery that never came). */
  error: string | null;
  logDir: string | null;
  ok: boolean;
}

const skusFor = (runId: string): Sku[] => [
  { itemId: `${runId}-a`, location: 'default' },
  { itemId: `${runId}-b`, location: 'default' },
  { itemId: `${runId}-c`, location: 'default' },
  { itemId: `${runId}-d`, location: 'wh-1' },
  { itemId: `${runId}-d`, location: 'wh-2' },
];

/** Whether every live API process reported ready within `timeoutMs` (a drill reports a slow recovery, not throws). */
async function waitReady(apis: readonly ApiProcess[], timeoutMs: number): Promise<boolean> {
  const allReady = async () => {
    const live = apis.filter((a) => a.running);
    return live.length > 0 && (await Promise.all(live.map((a) => a.ready()))).every(Boolean) ? true : undefined;
  };
  return waitFor('every live API process to report ready', allReady, { timeoutMs, intervalMs: 50 }).then(
    () => true,
    () => false,
  );
}

const report = (r: ReconcileReport): string[] => [
  ...r.strandedIntents.map(
    (i) =>
      `stranded ${i.kind} intent ${i.delta > 0 ? '+' : ''}${i.delta} at ${i.itemId}@${i.location} (node ${i.nodeId} ` +
      `${i.ownerAlive ? 'alive' : 'gone'}, ${Math.round(i.ageMs)} ms old, ledger ${i.ledger})`,
  ),
  ...r.drift.map(
    (d) =>
      `drift ${d.itemId}@${d.location}: Redis on-hand/reserved/holds ${d.redis.onHand}/${d.redis.reserved}/${d.redis.holds}, ` +
      `PostgreSQL ${d.postgres.onHand}/${d.postgres.reserved}/${d.postgres.holds}`,
  ),
  ...r.orphanHolds.map((o) => `orphaned hold ${o.field} on ${o.itemId} (${Math.round(o.ageMs)} ms old)`),
];

/**
 * Redis and PostgreSQL equal, healed by the API nodes themselves: a dry run of `reconcile()` in this process
 * against the same Redis, PostgreSQL and key prefix (a node built with buildApp, never started: no jobs of its own,
 * and it changes nothing) is repeated until it reports nothing, for at most HEAL_TIMEOUT_MS, while the running
 * nodes' reconcilers (every RECONCILE_INTERVAL_MS) end stranded stock intents and correct drift. No repair pass.
 */
async function reconcileCheck(env: DrillEnv, faultAt: number): Promise<ReconcileOutcome> {
  const config = loadConfig({
    DATABASE_URL: env.database.url,
    REDIS_URL: env.redis.url,
    REDIS_KEY_PREFIX: env.prefix,
    LOG_LEVEL: 'silent',
    RECONCILE_INTERVAL_MS: '0',
    ORPHAN_HOLD_AFTER_MS: String(ORPHAN_HOLD_AFTER_MS),
    DATABASE_QUERY_TIMEOUT_MS: API_ENV.DATABASE_QUERY_TIMEOUT_MS,
  });
  const app = await buildApp(config);
  const deps = app.runtime.reconcileDeps;
  const dryRun: ReconcileOptions = {
    heal: false,
    dropOrphans: false,
    rebuildOnDrift: false,
    orphanAfterMs: ORPHAN_HOLD_AFTER_MS,
    settleMs: 1_000,
  };
  const started = Date.now();
  const run = async (): Promise<Pick<ReconcileOutcome, 'ok' | 'healedAfterMs' | 'details'>> => {
    let first: string[] | null = null;
    for (;;) {
      const found = report(await reconcile(deps, dryRun));
      first ??= found;
      if (found.length === 0) {
        return { ok: true, healedAfterMs: first.length === 0 ? 0 : Date.now() - started, details: first.map((f) => `healed: ${f}`) };
      }
      if (Date.now() - started > HEAL_TIMEOUT_MS) {
        const details = [...first.map((f) => `at first: ${f}`), ...found.map((f) => `still, after ${HEAL_TIMEOUT_MS} ms: ${f}`)];
        return { ok: false, healedAfterMs: null, details };
      }
      await sleep(250);
    }
  };
  try {
    const outcome = await withTimeout(run(), HEAL_TIMEOUT_MS + 30_000, 'waiting for the nodes to heal Redis (dry runs)');
    const { rows } = await env.directDb.query<{ corrections: number; voided: number; last_ms: number | null }>(
      `SELECT (SELECT count(*) FROM stock_corrections)::int AS corrections,
              (SELECT count(*) FROM stock_movements WHERE kind = 'void')::int AS voided,
              (extract(epoch FROM greatest((SELECT max(corrected_at) FROM stock_corrections),
                                           (SELECT max(created_at) FROM stock_movements WHERE kind = 'void'))) * 1000)::float8 AS last_ms`,
    );
    const { corrections, voided, last_ms: lastMs } = rows[0]!;
    return { ...outcome, corrections, voided, lastRepairAfterFaultMs: lastMs === null ? null : Math.round(lastMs - faultAt) };
  } finally {
    await withTimeout(app.close(), 10_000, 'closing the reconciling node').catch(() => {
      app.runtime.redis.disconnect();
    });
  }
}

/**
 * One drill: load running, fault injected a third of the way in (mid-commit: see stallCommits), recovery
 * awaited, load stopped and drained, the nodes left to heal Redis to PostgreSQL by themselves, then every invariant
 * checked against PostgreSQL, Redis and the clients' log. Every process the drill started is killed before it returns.
 */
export async function runDrill(drill: Drill, options: DrillOptions): Promise<DrillResult> {
  const runId = `${drill.name}-${randomBytes(3).toString('hex')}`;
  const skus = skusFor(runId);
  const log = new ClientLog();
  const result: DrillResult = {
    drill: drill.name,
    title: drill.title,
    seed: options.seed,
    requests: 0,
    acks: 0,
    faults: 0,
    statusCounts: {},
    faultAt: null,
    recoveryMs: null,
    readyMs: null,
    unresolvedKeys: 0,
    retries: null,
    crashes: [],
    notes: [],
    expiriesRecordedAfterMs: null,
    invariants: [],
    reconcile: null,
    error: null,
    logDir: null,
    ok: false,
  };
  let env: DrillEnv | null = null;
  let monitor: Monitor | null = null;
  let loadDone: Promise<void> = Promise.resolve();
  try {
    env = await DrillEnv.start(drill.name, drill.topology);
    env.supervise();
    await seedStock(env.apis[0]!.url, skus, INITIAL_STOCK, SAFETY_STOCK, log);
    monitor = new Monitor({ redis: env.directRedis, db: env.directDb, keys: env.keys, skus, intervalMs: 100 });
    monitor.start();

    const durationMs = options.seconds * 1000;
    const load = runLoad({
      runId,
      seed: options.seed,
      clients: options.clients,
      durationMs,
      drainMs: 6_000,
      skus,
      nodes: env.apis.map((a) => a.url),
      restockBelow: 100,
      log,
    });
    // If the load dies early, do not wait for the fault schedule to notice.
    let loadError: unknown = null;
    loadDone = load.catch((err: unknown) => {
      loadError = err;
    });

    await sleep(durationMs * 0.35);
    const releaseCommits = await stallCommits(env.directDb);
    try {
      // The fault lands mid-commit only once a node's batch provably waits for the stalled ledger.
      await waitForLockWait(env.directDb, 'a batch to block on the stalled ledger', {
        applicationName: ANY_NODE,
        timeoutMs: STALL_SEEN_TIMEOUT_MS,
      });
      await sleep(COMMIT_STALL_MS);
    } catch (err) {
      await releaseCommits();
      throw loadError ?? err;
    }
    const faultAt = Date.now();
    result.faultAt = new Date(faultAt).toISOString();
    try {
      await drill.inject(env, releaseCommits);
    } finally {
      await releaseCommits();
    }
    const ready = await waitReady(env.apis, READY_TIMEOUT_MS);
    result.readyMs = ready ? Date.now() - faultAt : null;
    await loadDone;
    if (loadError) throw loadError;
    await monitor.stop();
    if (!ready) throw new Error(`the API did not report ready within ${READY_TIMEOUT_MS} ms of the fault`);
    const firstCreated = log.firstCreatedAfter(faultAt);
    result.recoveryMs = firstCreated === null ? null : firstCreated - faultAt;
    result.retries = retryResolution(log, faultAt + result.readyMs!);

    const expiries = await waitForExpiriesRecorded(env.directDb, EXPIRY_RECORD_TIMEOUT_MS);
    result.expiriesRecordedAfterMs = expiries.overdue.length === 0 ? expiries.waitedMs : null;
    // The stores are judged once the nodes have healed what the fault left (a hold whose process died before its
    // commit is dropped by their reconciler, not by the harness): the state the system settles in, with what healing
    // fixed in the report's notes. While the load ran, the monitor judged every instant (I1).
    result.reconcile = await reconcileCheck(env, faultAt);
    const snapshot = await takeSnapshot(env.directDb, env.directRedis, env.keys, skus);
    const strandedSessions = await env.strandedSessions();
    result.notes.push(...strandedSessions);
    result.invariants = checkInvariants({
      snapshot,
      log,
      skus,
      overdue: expiries.overdue,
      monitorViolations: monitor.violations,
      strandedSessions,
      notes: result.notes,
    });
  } catch (err) {
    result.error = err instanceof Error ? (err.stack ?? err.message) : String(err);
  } finally {
    await loadDone; // bounded: no request outlives the load's drain
    await monitor?.stop().catch(() => undefined);
    result.requests = log.requests;
    result.acks = log.acks;
    result.faults = log.faults;
    result.statusCounts = Object.fromEntries([...log.statusCounts].sort());
    result.unresolvedKeys = unresolvedKeys(log);
    if (env) {
      await env.dispose();
      result.crashes = env.crashes();
      result.notes.push(...env.apis.flatMap((a) => a.failedStarts.map((f) => `restart failed (retried): ${f}`)));
    }
    result.ok =
      result.error === null &&
      result.crashes.length === 0 &&
      result.invariants.length > 0 &&
      result.invariants.every((i) => i.ok) &&
      result.retries !== null &&
      result.retries.late.length === 0 &&
      (result.reconcile?.ok ?? false);
    if (env) {
      if (result.ok && !options.keepLogs) env.removeLogs();
      else result.logDir = env.logDir;
    }
  }
  return result;
}

/** Each failure as one line, for an assertion message or the report; `perInvariant` caps each invariant's list. */
export function failures(result: DrillResult, perInvariant = Infinity): string[] {
  const out: string[] = [];
  if (result.error) out.push(`drill error: ${result.error}`);
  for (const c of result.crashes) out.push(`API process crashed: ${c}`);
  for (const i of result.invariants) {
    for (const v of i.violations.slice(0, perInvariant)) out.push(`${i.id} ${i.name}: ${v}`);
    if (i.violations.length > perInvariant) out.push(`${i.id} ${i.name}: … and ${i.violations.length - perInvariant} more`);
  }
  const late = result.retries?.late ?? [];
  for (const l of late.slice(0, perInvariant)) out.push(`retry: ${l}`);
  if (late.length > perInvariant) out.push(`retry: … and ${late.length - perInvariant} more`);
  if (result.reconcile && !result.reconcile.ok) out.push(...result.reconcile.details.map((d) => `Redis≠PostgreSQL: ${d}`));
  if (!result.error && result.reconcile === null) out.push('reconciliation did not run');
  return out;
}
