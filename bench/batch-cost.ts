/**
 * What a group-commit batch costs PostgreSQL: CPU per batch and per operation, by batch size, so the fixed cost of a
 * batch (what a lightly loaded service pays per request) is told apart from each operation's (issue 15: "measure each
 * step"). `npm run bench:batch-cost [-- --sizes 1,2,8,25 --repeat 3]`.
 *
 * Records batches through the group-commit writer (its own connection, planned as in the service) on a scratch
 * database, then seals their events as every node does, and reads the CPU each backend used from /proc: PostgreSQL
 * must run on this machine (the local server, as in `npm run bench`).
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type pg from 'pg';
import { HELP, integerFlag, parseCommandLine, usageError } from '../src/cli/args.js';
import { newId } from '../src/domain/ids.js';
import { pendingReservation, toDocument, type ReservationRecord } from '../src/domain/reservation.js';
import { createMetrics } from '../src/metrics.js';
import { createPool } from '../src/store/database.js';
import { sealEvents } from '../src/store/events.js';
import { BatchWriter, type RecordOp } from '../src/store/writer.js';
import { scratchDatabase } from './scratch-database.js';
import { median, round } from './stats.js';

const usage = `npm run bench:batch-cost -- [--sizes LIST] [--repeat N] [--operations N]

Records batches of each size through the group-commit writer on a scratch database (on BENCH_DATABASE_URL's server,
default the local PostgreSQL, which must run on this machine: its backends' CPU is read from /proc), and prints what
PostgreSQL spent per batch and per operation, the fixed and per-operation parts fitted over the sizes, and what
sealing their events cost per event. Drops the database at the end.

  --sizes LIST      operations per batch (default 1,2,8,25)
  --shapes LIST     batch shapes, of reserves, flash, carts (default all three)
  --repeat N        measurements per shape and size; medians are printed (default 3)
  --operations N    operations recorded per measurement, at least 200 batches (default 2000)
  --help            this text
`;

const values = parseCommandLine(usage, () =>
  parseArgs({ options: { sizes: { type: 'string' }, shapes: { type: 'string' }, repeat: { type: 'string' }, operations: { type: 'string' }, help: HELP } }),
);
const sizes = (values.sizes ?? '1,2,8,25').split(',').map((s) => integerFlag('sizes', s.trim(), 1));
if (sizes.length < 2) usageError('--sizes needs at least two sizes (the fit needs them)');
const repeat = integerFlag('repeat', values.repeat, 3);
const operations = integerFlag('operations', values.operations, 2_000);
const GENERATION = '0';
const ITEM = 'flash-sku';
/** Events sealed per round: a node seals every 50 ms, so about what 2,000 writes a second leave it. */
const SEAL_ROUND = 100;

const ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

/** CPU (µs) a local backend has used, from /proc/<pid>/stat (user + system). */
function cpuOf(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / ticksPerSecond;
}

/**
 * The backend of a pool of one connection. Read before each use: the pool ends a connection idle for 10 s (a long
 * sealing, a long recording), and its next one is another process.
 */
async function backendOf(pool: pg.Pool): Promise<number> {
  return (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
}

/** A pool of one connection (its backend checked readable: PostgreSQL runs here). */
async function onePool(groupCommit: boolean): Promise<pg.Pool> {
  const pool = createPool(databaseUrl, { max: 1, queryTimeoutMs: 60_000, groupCommit });
  const pid = await backendOf(pool);
  try {
    cpuOf(pid);
  } catch {
    console.error(`cannot read /proc/${pid}/stat: PostgreSQL must run on this machine`);
    process.exit(1);
  }
  return pool;
}

/** SKUs the carts shape reserves from (stocked before measuring). */
const CART_SKUS = 10_000;

function reserve(lines = [{ itemId: ITEM, location: 'default', quantity: 1 }]): RecordOp & { kind: 'reserve' } {
  const createdAt = new Date();
  const reservation = pendingReservation(newId(), { lines, ttlSeconds: 600 }, lines, createdAt, 'default');
  const key = randomUUID();
  const response = toDocument(reservation, createdAt);
  return { kind: 'reserve', generation: GENERATION, reservation, idempotency: { scope: '_', key, requestHash: key, statusCode: 201, response } };
}

function settle(r: ReservationRecord, n: number): RecordOp {
  const at = new Date();
  const to = n % 2 === 0 ? 'confirmed' : 'released';
  const document = toDocument({ ...r, status: to, updatedAt: at, version: 2 }, at);
  return { kind: 'transition', generation: GENERATION, reservationId: r.id, to, at, lines: r.lines, version: 2, expiresAt: r.expiresAt, document };
}

/**
 * The two shapes of a flash sale's batches: new reservations only (every request a reservation, `reserve64`), and
 * half new reservations, half confirms or releases of earlier ones (`flash`; measured from 2 operations on); and
 * the carts' (new reservations of several SKUs each: a batch touches several stock rows per operation).
 */
const shapes = {
  reserves: (size: number, _pending: ReservationRecord[]) => Array.from({ length: size }, () => reserve()),
  flash: (size: number, pending: ReservationRecord[]) => {
    const news = Array.from({ length: Math.max(1, Math.floor(size / 2)) }, () => reserve());
    const settles = pending.splice(0, size - news.length).map(settle);
    pending.push(...news.map((op) => op.reservation));
    return [...news, ...settles];
  },
  /** 2-5 lines each, of distinct SKUs of CART_SKUS. */
  carts: (size: number, _pending: ReservationRecord[]) =>
    Array.from({ length: size }, () => {
      const skus = new Set<number>();
      while (skus.size < 2 + Math.floor(Math.random() * 4)) skus.add(Math.floor(Math.random() * CART_SKUS));
      return reserve([...skus].map((n) => ({ itemId: `cart-sku-${n}`, location: 'default', quantity: 1 })));
    }),
};
type Shape = keyof typeof shapes;
const chosenShapes = (values.shapes ?? Object.keys(shapes).join(',')).split(',').map((s) => s.trim()) as Shape[];
for (const shape of chosenShapes) if (!(shape in shapes)) usageError(`--shapes: ${shape} is not one of ${Object.keys(shapes).join(', ')}`);

const database = await scratchDatabase('batch_cost');
const databaseUrl = database.url;
const writing = await onePool(true);
const sealing = await onePool(false);
const writer = new BatchWriter(writing, createMetrics(), { maxBatch: 10_000, concurrency: 1, fateWaitMs: 0 });
const pending: ReservationRecord[] = [];

async function record(ops: RecordOp[]): Promise<void> {
  const results = await Promise.all(ops.map((op) => writer.submit(op)));
  if (results.some((r) => r !== 'recorded')) throw new Error(`a batch was not recorded: ${results.join(',')}`);
}

async function sealAll(): Promise<number> {
  let sealed = 0;
  for (let n = -1; n !== 0; sealed += n) n = await sealEvents(sealing, SEAL_ROUND);
  return sealed;
}

interface Measurement {
  batchUs: number;
  batchMs: number;
  sealUs: number;
  events: number;
}

/** `batches` batches of `size` operations of `shape`: PostgreSQL's CPU per batch, the wall time, the sealing. */
async function measure(shape: Shape, size: number): Promise<Measurement> {
  const batches = Math.max(200, Math.ceil(operations / size));
  const all = Array.from({ length: batches }, () => shapes[shape](size, pending));
  await sealAll();
  const writerBackend = await backendOf(writing);
  const [cpu, started] = [cpuOf(writerBackend), performance.now()];
  for (const ops of all) await record(ops);
  const [batchUs, batchMs] = [(cpuOf(writerBackend) - cpu) / batches, (performance.now() - started) / batches];
  if ((await backendOf(writing)) !== writerBackend) throw new Error("the writer's connection was replaced while measured");
  const sealerBackend = await backendOf(sealing);
  const sealCpu = cpuOf(sealerBackend);
  const events = await sealAll();
  return { batchUs, batchMs, sealUs: cpuOf(sealerBackend) - sealCpu, events };
}

/** Least squares of cost = fixed + perOperation × size. */
function fit(points: { size: number; us: number }[]): { fixed: number; perOperation: number } {
  const n = points.length;
  const mx = points.reduce((s, p) => s + p.size, 0) / n;
  const my = points.reduce((s, p) => s + p.us, 0) / n;
  const sxy = points.reduce((s, p) => s + (p.size - mx) * (p.us - my), 0);
  const sxx = points.reduce((s, p) => s + (p.size - mx) ** 2, 0);
  const perOperation = sxy / sxx;
  return { fixed: my - perOperation * mx, perOperation };
}

try {
  const stock = (itemId: string): RecordOp => ({ kind: 'stock', generation: GENERATION, itemId, location: 'default', onHandDelta: 100_000_000, movement: 'set', reason: null, opId: randomUUID() });
  await record([stock(ITEM)]);
  if (chosenShapes.includes('carts')) {
    for (let n = 0; n < CART_SKUS; n += 100) await record(Array.from({ length: 100 }, (_, i) => stock(`cart-sku-${n + i}`)));
  }
  await measure('flash', 20); // warm-up: the statement planned, caches filled
  console.log(`PostgreSQL CPU of the batch statement (writer's backend) and of sealing (a sealer's), medians of ${repeat}\n`);
  console.log('| shape | operations per batch | CPU µs per batch | per operation | wall ms per batch |');
  console.log('|---|---:|---:|---:|---:|');
  const sealed = { us: 0, events: 0 };
  for (const shape of chosenShapes) {
    const points: { size: number; us: number }[] = [];
    for (const size of sizes.filter((s) => shape !== 'flash' || s >= 2)) {
      const runs: Measurement[] = [];
      for (let i = 0; i < repeat; i++) runs.push(await measure(shape, size));
      for (const r of runs) [sealed.us, sealed.events] = [sealed.us + r.sealUs, sealed.events + r.events];
      const us = median(runs.map((r) => r.batchUs));
      points.push({ size, us });
      console.log(`| ${shape} | ${size} | ${round(us, 0)} | ${round(us / size, 0)} | ${round(median(runs.map((r) => r.batchMs)), 2)} |`);
    }
    if (points.length < 2) continue;
    const { fixed, perOperation } = fit(points);
    console.log(`| ${shape}: fitted | | ${round(fixed, 0)} fixed | + ${round(perOperation, 0)} | |`);
  }
  // Sealing is timed over every measurement at once: its CPU is read in clock ticks, too coarse for one.
  console.log(`\nSealing, in rounds of up to ${SEAL_ROUND} events: ${round(sealed.us / Math.max(1, sealed.events), 1)} µs of CPU per event (${sealed.events} events)`);
} finally {
  await writing.end();
  await sealing.end();
  await database.drop();
}
