import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { outboxFailures } from '../../bench/audit.js';
import { pgCounters } from '../../bench/probes.js';
import { defaultOptions, runBench, type BenchOptions } from '../../bench/harness.js';
import { writeResults } from '../../bench/report.js';
import { newId } from '../../src/domain/ids.js';
import { pendingReservation, toDocument } from '../../src/domain/reservation.js';
import { createMetrics } from '../../src/metrics.js';
import { createPool, migrate } from '../../src/store/database.js';
import { BatchWriter, type RecordOp } from '../../src/store/writer.js';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres.js';
import { testPostgresUrl, testRedisUrl } from '../helpers/servers.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Proves the benchmark still runs: the harness starts the durable service (with its outbox, and without it) in its
 * own process, drives a one-second flash sale from a separate generator process, and checks the invariants. Speed is
 * never asserted here.
 */
describe('benchmark harness (smoke)', () => {
  const out = mkdtempSync(path.join(os.tmpdir(), 'irs-bench-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it('runs a short flash sale against the durable design, with its outbox and without, and the invariants hold', async () => {
    const report = await smokeRun(['durable', 'durable-no-outbox'], out);

    expect(report.runs.map((r) => r.design).sort()).toEqual(['durable', 'durable-no-outbox']);
    for (const run of report.runs) {
      expect(run.load.responses).toBeGreaterThan(0);
      expect(run.load.outcomes.created).toBeGreaterThan(0);
      expect(run.load.outcomes.other, run.load.otherSamples.join('\n')).toBe(0);
      // The outbox is checked too: with it, every recorded change's events; without it, none at all.
      expect(run.invariants.failures).toEqual([]);
      expect(run.invariants.postgresEqualsRedis).toBe(true);
      expect(run.sale.cpuMicrosPerWrite.service).toBeGreaterThan(0);
      // The service's allocations per request: a few KiB at least (a reservation's documents alone are more).
      expect(run.allocatedKiBPerRequest).toBeGreaterThan(1);
      expect(run.postgres?.checkpoints).toBeGreaterThanOrEqual(0);
    }
    expect(report.invariantsOk).toBe(true);
    const eventsPerWrite = Object.fromEntries(report.summary.map((s) => [s.design, s.saleCost.eventsPerWrite]));
    expect(eventsPerWrite['durable']).toBeGreaterThan(0);
    expect(eventsPerWrite['durable-no-outbox']).toBe(0);
    // The comparison: durable over durable-no-outbox within the pass.
    expect(report.outbox).toEqual([expect.objectContaining({ scenario: 'flash64', throughput: expect.any(Number), p99: expect.any(Number) })]);
    expect(report.outbox[0]!.cpuMicrosPerWrite.service).toEqual(expect.any(Number));

    const files = await writeResults(out, report);
    expect(JSON.parse(readFileSync(files.json, 'utf8')).summary).toHaveLength(2);
    expect(existsSync(files.svg)).toBe(true);

    // A smoke run (--quick) writes quick.*, and leaves the published latest.* as they were.
    const published = readFileSync(files.json, 'utf8');
    const quick = await writeResults(out, { ...report, startedAt: 'quick' }, 'quick');
    expect([path.basename(quick.json), path.basename(quick.svg)]).toEqual(['quick.json', 'quick.svg']);
    expect(JSON.parse(readFileSync(quick.json, 'utf8')).startedAt).toBe('quick');
    expect(readFileSync(files.json, 'utf8')).toBe(published);
  }, 180_000);
});

describe('benchmark harness on a Redis Cluster (smoke, --cluster)', () => {
  const out = mkdtempSync(path.join(os.tmpdir(), 'irs-bench-cluster-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it('starts a private cluster, runs durable on it and on the single Redis, checks the invariants on both, and tears the cluster down', async () => {
    const report = await smokeRun(['durable', 'durable-cluster'], out);

    expect(report.runs.map((r) => r.design).sort()).toEqual(['durable', 'durable-cluster']);
    for (const run of report.runs) {
      expect(run.load.outcomes.created).toBeGreaterThan(0);
      expect(run.load.outcomes.other, run.load.otherSamples.join('\n')).toBe(0);
      // Read from the cluster with its own keys (each slot's marker): PostgreSQL and the cluster agree.
      expect(run.invariants.failures).toEqual([]);
      expect(run.invariants.postgresEqualsRedis).toBe(true);
    }
    // The cluster's run decided on the cluster: its six processes, the masters busy, and none on the single Redis.
    const onCluster = report.runs.find((r) => r.design === 'durable-cluster')!;
    expect(onCluster.redisNodes?.map((n) => n.role).sort()).toEqual(['master', 'master', 'master', 'replica', 'replica', 'replica']);
    expect(onCluster.redisNodes!.filter((n) => n.role === 'master').every((n) => n.cpuPercent > 0)).toBe(true);
    expect(report.runs.find((r) => r.design === 'durable')!.redisNodes).toBeUndefined();
    expect(report.cluster).toEqual([expect.objectContaining({ scenario: 'flash64', throughput: expect.any(Number), p99: expect.any(Number) })]);
    expect(report.invariantsOk).toBe(true);
    // Torn down: none of its nodes answers any more.
    expect(await Promise.all(onCluster.redisNodes!.map((n) => listening(n.port)))).toEqual(onCluster.redisNodes!.map(() => false));
  }, 120_000);

  it('refuses to run durable-cluster without a cluster, and the other designs on one', () => {
    const server = (design: string, env: Record<string, string>) =>
      spawnSync(process.execPath, ['--import', 'tsx', 'bench/server.ts', '--design', design], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 30_000 });
    const without = server('durable-cluster', { REDIS_CLUSTER_NODES: '' });
    expect(without.status, without.stderr).toBe(2);
    expect(without.stderr).toMatch(/durable-cluster needs REDIS_CLUSTER_NODES/);
    const onOne = server('durable', { REDIS_CLUSTER_NODES: '127.0.0.1:1' });
    expect(onOne.status, onOne.stderr).toBe(2);
    expect(onOne.stderr).toMatch(/durable runs without REDIS_CLUSTER_NODES/);
  }, 60_000);
});

/** One pass of a one-second flash sale (flash64) against `designs`, its results written under `outDir`. */
function smokeRun(designs: BenchOptions['designs'], outDir: string): ReturnType<typeof runBench> {
  return runBench({
    ...defaultOptions(),
    designs,
    scenarios: ['flash64'],
    durationSeconds: 1,
    warmupSeconds: 0,
    passes: 1,
    outDir,
    tag: `t${randomBytes(4).toString('hex')}`,
    waitQuietSeconds: 0,
    log: () => {},
  });
}

/** Whether anything accepts a connection on 127.0.0.1:`port`. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}

describe("the bench's outbox check", () => {
  let database: TestDatabase;
  let pool: pg.Pool;
  let client: pg.Client;
  beforeAll(async () => {
    database = await createTestDatabase();
    await migrate(database.url, pino({ level: 'silent' }));
    pool = createPool(database.url, { max: 2, queryTimeoutMs: 5000 });
    client = new pg.Client({ connectionString: database.url });
    await client.connect();
  });
  afterAll(async () => {
    await client?.end();
    await pool?.end();
    await database?.drop();
  });

  it('holds for what the writer appended, and fails on a missing event or on events where none may be', async () => {
    const writer = new BatchWriter(pool, createMetrics(), { maxBatch: 100, concurrency: 1, fateWaitMs: 0 });
    const item = `sku-${randomUUID()}`;
    const stock = (delta: number): RecordOp => ({
      kind: 'stock',
      generation: '0',
      itemId: item,
      location: 'default',
      onHandDelta: delta,
      movement: 'adjust',
      reason: null,
      opId: randomUUID(),
    });
    expect(await Promise.all([writer.submit(stock(10)), writer.submit(stock(-3))])).toEqual(['recorded', 'recorded']);
    expect(await writer.submit(stock(5))).toBe('recorded');
    const at = new Date();
    const lines = [{ itemId: item, location: 'default', quantity: 1 }];
    const reservation = pendingReservation(newId(), { lines }, lines, at, 'default');
    const response = toDocument(reservation, at);
    const idempotency = { scope: '_', key: randomUUID(), requestHash: 'h', statusCode: 201, response };
    expect(await writer.submit({ kind: 'reserve', generation: '0', reservation, idempotency })).toBe('recorded');
    expect(await outboxFailures(client, 'durable')).toEqual([]);
    expect(await outboxFailures(client, 'durable-no-outbox')).toEqual(['outbox: 3 events appended by a design that appends none']);

    await client.query('UPDATE reservations SET event_sequence = 2 WHERE id = $1', [reservation.id]);
    expect(await outboxFailures(client, 'durable')).toEqual(['outbox: 1 reservations without exactly one event per recorded change']);

    await client.query('DELETE FROM events WHERE subject = $1 AND sequence = 1', [item]);
    expect(await outboxFailures(client, 'durable')).toEqual([
      'outbox: 1 subjects whose sequences have a gap',
      'outbox: 1 reservations without exactly one event per recorded change',
      'outbox: 1 items whose events do not match the sequences handed out',
    ]);
    await client.query('DELETE FROM events WHERE subject = $1', [item]);
    expect(await outboxFailures(client, 'durable')).toEqual([
      'outbox: 1 reservations without exactly one event per recorded change',
      'outbox: 1 items whose events do not match the sequences handed out',
      'outbox: 1 stocked locations whose last stock.changed is not their on-hand',
    ]);
  });
});

/** How many databases of the local PostgreSQL match `pattern` (a bench tool's scratch databases: none left after it). */
const scratchDatabases = (pattern: string): string =>
  spawnSync('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-Atc', `SELECT count(*) FROM pg_database WHERE datname LIKE '${pattern}'`], {
    encoding: 'utf8',
  }).stdout.trim();

describe('npm run bench:batch-cost (smoke)', () => {
  it('records batches of each size on a scratch database, prints their cost per batch and the fit, and drops it', () => {
    const databases = () => scratchDatabases('irs_bench_batch_cost_%');
    const before = databases();
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'bench/batch-cost.ts', '--sizes', '1,2', '--repeat', '1', '--operations', '1'], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^\| reserves \| 1 \| \d+ \| \d+ \| [\d.]+ \|$/m);
    expect(run.stdout).toMatch(/^\| reserves: fitted \| \| -?\d+ fixed \| \+ -?\d+ \| \|$/m);
    expect(run.stdout).toMatch(/^\| flash \| 2 \| \d+ \|/m);
    expect(run.stdout).toMatch(/^\| carts \| 2 \| \d+ \|/m);
    expect(run.stdout).toMatch(/^Sealing, in rounds of up to 100 events: [\d.]+ µs of CPU per event \(\d+ events\)$/m);
    expect(databases()).toBe(before);
  });
});

describe('npm run bench:reconcile (smoke)', () => {
  it('times paced and flat-out passes on a scratch database, finds no drift in its consistent seed, and drops it', () => {
    const databases = () => scratchDatabases('irs_bench_reconcile_%');
    const before = databases();
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'bench/reconcile.ts', '--items', '50', '--holds', '30', '--passes', '1', '--duty', '100,50'], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(run.status, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout.slice(run.stdout.lastIndexOf('\n{\n') + 1)) as { drift: number; results: { dutyPercent: number; wallMs: number; cpuMs: number }[] };
    expect(report.drift).toBe(0);
    expect(report.results.map((r) => r.dutyPercent)).toEqual([100, 50]);
    expect(databases()).toBe(before);
  });
});

describe('a bench tool cut short', () => {
  const redis = new Redis(testRedisUrl(), { lazyConnect: true });
  afterAll(() => redis.quit());
  const benchKeys = async () => (await redis.keys('bench-reconcile-*')).length;

  /** bench:reconcile, passing its first pass of many: its scratch database and Redis keys exist by then. */
  async function reconcileRunning() {
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/reconcile.ts', '--items', '2000', '--holds', '10', '--passes', '1000', '--duty', '100'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
    await waitFor('its first pass', async () => (stdout.includes('pass 1:') ? true : undefined), { timeoutMs: 60_000, intervalMs: 50 });
    return { child, exited };
  }

  it('by Ctrl-C drops its scratch database and removes its Redis keys, and exits 130', async () => {
    const [databasesBefore, keysBefore] = [scratchDatabases('irs_bench_reconcile_%'), await benchKeys()];
    const { child, exited } = await reconcileRunning();
    expect(Number(scratchDatabases('irs_bench_reconcile_%'))).toBe(Number(databasesBefore) + 1);
    expect(await benchKeys()).toBeGreaterThan(keysBefore);
    child.kill('SIGINT');
    expect((await exited)[0]).toBe(130);
    expect(scratchDatabases('irs_bench_reconcile_%')).toBe(databasesBefore);
    expect(await benchKeys()).toBe(keysBefore);
  }, 90_000);

  it('by its reader closing the pipe (`| head`) drops its scratch database too', async () => {
    const databasesBefore = scratchDatabases('irs_bench_reconcile_%');
    const { child, exited } = await reconcileRunning();
    child.stdout.destroy(); // the tool's next line fails with EPIPE
    expect((await exited)[0]).toBe(0);
    expect(scratchDatabases('irs_bench_reconcile_%')).toBe(databasesBefore);
  }, 90_000);
});

describe('PostgreSQL counters of a run', () => {
  it('count the checkpoints the server starts, which a run reports beside its p99', async () => {
    const admin = new pg.Client({ connectionString: testPostgresUrl() });
    await admin.connect();
    try {
      const before = await pgCounters(admin, 'postgres');
      await admin.query('CHECKPOINT');
      // The checkpointer may report its counters after the CHECKPOINT is answered: CI once read the old count.
      await waitFor('the checkpoint counted', async () =>
        (await pgCounters(admin, 'postgres')).checkpoints > before.checkpoints ? true : undefined,
      );
    } finally {
      await admin.end();
    }
  });
});
