/**
 * Where the outbox's cost goes, write-ahead log record by record (issue 13: "say how much it costs and why").
 * `npm run bench:outbox-wal [-- --rounds 20 --batch 20]`.
 *
 * Records the same kind of batches through the group-commit writer with its events (RECORD_BATCH) and without them
 * (RECORD_BATCH_WITHOUT_EVENTS, the bench's `durable-no-outbox`), then seals the events the way every node does
 * (sealEvents). Each batch and each sealing is one transaction: its WAL is read back with pg_walinspect, filtered by
 * its transaction id, so other work on a shared server does not count, and summed per relation. The batches are
 * the flash sale's (one SKU: each batch creates `batch / 2` reservations and confirms or releases the previous
 * batch's) and the carts' (2-5 lines over 10,000 SKUs), on a database first filled with `--history` reservations.
 */
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { HELP, integerFlag, parseCommandLine } from '../src/cli/args.js';
import { newId } from '../src/domain/ids.js';
import { pendingReservation, toDocument, type Line, type ReservationRecord } from '../src/domain/reservation.js';
import { createMetrics } from '../src/metrics.js';
import { createPool } from '../src/store/database.js';
import { batchValues, RECORD_BATCH, RECORD_BATCH_WITHOUT_EVENTS } from '../src/store/batch-statement.js';
import { SEAL, sealEvents } from '../src/store/events.js';
import { BatchWriter, type RecordOp } from '../src/store/writer.js';
import { mulberry32 } from '../test/helpers/random.js';
import { median, round } from './stats.js';
import { scratchDatabase } from './scratch-database.js';

const usage = `npm run bench:outbox-wal -- [--rounds N] [--batch N] [--history N]

Records batches with the outbox and without it on a scratch database (on BENCH_DATABASE_URL's server, default the
local PostgreSQL; needs a superuser for pg_walinspect), and prints the WAL each wrote per write and per relation, and
what sealing their events wrote. Drops the database at the end.

  --rounds N    measured batches per variant and scenario (default 20)
  --batch N     operations per batch (default 20: half new reservations, half confirms or releases)
  --history N   reservations recorded (half confirmed, half released, all sealed) before measuring (default 20000)
  --help        this text
`;

const values = parseCommandLine(usage, () =>
  parseArgs({ options: { rounds: { type: 'string' }, batch: { type: 'string' }, history: { type: 'string' }, help: HELP } }),
);
const rounds = integerFlag('rounds', values.rounds, 20, 1);
const batchSize = integerFlag('batch', values.batch, 20, 2);
const history = integerFlag('history', values.history, 20_000, 0);
const CART_SKUS = 10_000;
/** Times each variant's last batch is explained: its times are medians (a shared machine's are noisy). */
const EXPLAINS = 15;
const GENERATION = '0';

const database = await scratchDatabase('outbox_wal');
const pool = createPool(database.url, { max: 4, queryTimeoutMs: 60_000 });
const metrics = createMetrics();
const writers = {
  with: new BatchWriter(pool, metrics, { maxBatch: 10_000, concurrency: 1, fateWaitMs: 0 }),
  without: new BatchWriter(pool, metrics, { maxBatch: 10_000, concurrency: 1, fateWaitMs: 0, appendEvents: false }),
};
type Variant = keyof typeof writers;
const random = mulberry32(13).next;

function reserve(lines: Line[]): RecordOp & { kind: 'reserve' } {
  const createdAt = new Date();
  const reservation = pendingReservation(newId(), { lines, ttlSeconds: 600 }, lines, createdAt, 'default');
  const response = toDocument(reservation, createdAt);
  const key = randomUUID();
  return { kind: 'reserve', generation: GENERATION, reservation, idempotency: { scope: '_', key, requestHash: key, statusCode: 201, response } };
}

/** Every other reservation confirmed, the rest released, as the bench's load does. */
function settle(r: ReservationRecord, n: number): RecordOp {
  const at = new Date();
  const to = n % 2 === 0 ? 'confirmed' : 'released';
  return { kind: 'transition', generation: GENERATION, reservationId: r.id, to, at, lines: r.lines, version: 2, expiresAt: r.expiresAt, document: toDocument({ ...r, status: to, updatedAt: at, version: 2 }, at) };
}

const stock = (itemId: string, quantity: number): RecordOp => ({
  kind: 'stock',
  generation: GENERATION,
  itemId,
  location: 'default',
  onHandDelta: quantity,
  movement: 'set',
  reason: null,
  opId: randomUUID(),
});

async function submit(variant: Variant, ops: RecordOp[]): Promise<number> {
  const started = performance.now();
  const results = await Promise.all(ops.map((op) => writers[variant].submit(op)));
  const ms = performance.now() - started;
  if (results.some((r) => r !== 'recorded')) throw new Error(`a ${variant} batch was not recorded: ${results.join(',')}`);
  return ms;
}

async function sealAll(): Promise<void> {
  while ((await sealEvents(pool, 5_000)) > 0);
}

// ---------------------------------------------------------------------------------------------------------------
// The WAL of one transaction, by relation
// ---------------------------------------------------------------------------------------------------------------

interface Wal {
  records: number;
  /** Bytes of the records, full-page images left out. */
  bytes: number;
  /** Bytes of full-page images (the first change of a page after a checkpoint). */
  fpiBytes: number;
  byRelation: Map<string, { records: number; bytes: number }>;
}

const emptyWal = (): Wal => ({ records: 0, bytes: 0, fpiBytes: 0, byRelation: new Map() });

const lsn = async (which: 'insert' | 'flush') =>
  (await pool.query<{ lsn: string }>(`SELECT pg_current_wal_${which}_lsn()::text AS lsn`)).rows[0]!.lsn;

let relationNames: Map<string, string> | undefined;
async function relationName(filenode: string): Promise<string> {
  relationNames ??= new Map(
    (await pool.query<{ filenode: string; name: string }>("SELECT pg_relation_filenode(oid)::text AS filenode, relname AS name FROM pg_class WHERE relkind IN ('r', 'i', 't', 'S')")).rows.map(
      (r) => [r.filenode, r.name],
    ),
  );
  return relationNames.get(filenode) ?? (filenode === '' ? '(transaction)' : `filenode ${filenode}`);
}

/** The WAL transaction `xid` wrote between two LSNs, each record counted for the first block it changes. */
async function walOf(xid: string, from: string, to: string, into: Wal): Promise<void> {
  const { rows } = await pool.query<{ record_length: number; fpi_length: number; block_ref: string | null }>(
    'SELECT record_length, fpi_length, block_ref FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn) WHERE xid = $3::xid',
    [from, to, xid],
  );
  for (const r of rows) {
    const filenode = /rel \d+\/\d+\/(\d+)/.exec(r.block_ref ?? '')?.[1] ?? '';
    const name = await relationName(filenode);
    into.records++;
    into.bytes += r.record_length - r.fpi_length;
    into.fpiBytes += r.fpi_length;
    const entry = into.byRelation.get(name) ?? { records: 0, bytes: 0 };
    entry.records++;
    entry.bytes += r.record_length - r.fpi_length;
    into.byRelation.set(name, entry);
  }
}

/** The transaction id of the newest batch (its `write_batches` row) or sealing (the `event_positions` row). */
const lastXid = async (sql: string) => (await pool.query<{ xid: string }>(sql)).rows[0]!.xid;
const BATCH_XID = 'SELECT xmin::text AS xid FROM write_batches ORDER BY id DESC LIMIT 1';
const SEAL_XID = 'SELECT xmin::text AS xid FROM event_positions';

// ---------------------------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------------------------

interface Measured {
  batch: Wal;
  seal: Wal;
  writes: number;
  events: number;
  batchMs: number[];
  /** Each sealing's planning and execution, as EXPLAIN ANALYZE reports them. */
  sealMs: number[];
  plans: Plan[];
}

/** What EXPLAIN (ANALYZE, WAL) says of one batch: its times, and each insert's or update's own time and rows. */
interface Plan {
  planningMs: number;
  executionMs: number;
  writes: Map<string, { rows: number; selfMs: number }>;
}

interface PlanNode {
  'Node Type': string;
  'Subplan Name'?: string;
  Operation?: string;
  'Relation Name'?: string;
  'Actual Total Time': number;
  'Actual Rows': number;
  Plans?: PlanNode[];
}

/**
 * EXPLAIN (ANALYZE, BUFFERS, WAL) of a batch, rolled back. A node's times include its children's, and a CTE's work
 * shows under whichever node first reads it: a CTE's insert or update is timed by its own time, its total less its
 * children's (the statement's final insert into write_batches is left out: its children's totals include the CTEs
 * run after it).
 */
async function explain(variant: Variant, ops: RecordOp[]): Promise<Plan> {
  const events = variant === 'with';
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query<{ 'QUERY PLAN': [{ Plan: PlanNode; 'Planning Time': number; 'Execution Time': number }] }>(
      `EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) ${events ? RECORD_BATCH : RECORD_BATCH_WITHOUT_EVENTS}`,
      [GENERATION, randomUUID(), ...batchValues(ops, { events })],
    );
    const [result] = rows[0]!['QUERY PLAN'];
    const writes = new Map<string, { rows: number; selfMs: number }>();
    for (const cte of result.Plan.Plans ?? []) {
      if (cte['Node Type'] !== 'ModifyTable' || !cte['Subplan Name']) continue;
      const children = (cte.Plans ?? []).reduce((t, c) => t + c['Actual Total Time'], 0);
      const label = `${cte['Subplan Name'].replace(/^CTE /, '')}: ${cte.Operation?.toLowerCase()} ${cte['Relation Name']}`;
      writes.set(label, { rows: cte['Actual Rows'], selfMs: cte['Actual Total Time'] - children });
    }
    return { planningMs: result['Planning Time'], executionMs: result['Execution Time'], writes };
  } finally {
    await client.query('ROLLBACK');
    client.release();
  }
}

/**
 * Seals what is unsealed with the sealer's statement under EXPLAIN ANALYZE, committed, and answers its planning and
 * execution time. Without sealEvents' advisory lock: nothing else seals this database.
 */
async function sealExplained(): Promise<number> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query<{ 'QUERY PLAN': [{ 'Planning Time': number; 'Execution Time': number }] }>(
      `EXPLAIN (ANALYZE, FORMAT JSON) ${SEAL}`,
      [5_000],
    );
    await client.query('COMMIT');
    const [plan] = rows[0]!['QUERY PLAN'];
    return plan['Planning Time'] + plan['Execution Time'];
  } finally {
    client.release();
  }
}

/** `next(variant)` makes the variant's next batch; the first round of each variant is not measured (it only primes). */
async function measure(next: (variant: Variant) => RecordOp[]): Promise<Record<Variant, Measured>> {
  const out: Record<Variant, Measured> = {
    with: { batch: emptyWal(), seal: emptyWal(), writes: 0, events: 0, batchMs: [], sealMs: [], plans: [] },
    without: { batch: emptyWal(), seal: emptyWal(), writes: 0, events: 0, batchMs: [], sealMs: [], plans: [] },
  };
  await submit('with', next('with'));
  await submit('without', next('without'));
  await sealAll();
  for (let round = 0; round < rounds; round++) {
    // Alternating which goes first, so neither always meets the other's fresh pages.
    for (const variant of round % 2 === 0 ? (['with', 'without'] as const) : (['without', 'with'] as const)) {
      const m = out[variant];
      const ops = next(variant);
      const eventsBefore = Number((await pool.query<{ n: string }>('SELECT count(*) AS n FROM events')).rows[0]!.n);
      const from = await lsn('insert');
      m.batchMs.push(await submit(variant, ops));
      // A commit returns once its records are flushed: they all lie before the flush LSN.
      await walOf(await lastXid(BATCH_XID), from, await lsn('flush'), m.batch);
      m.writes += ops.length;
      m.events += Number((await pool.query<{ n: string }>('SELECT count(*) AS n FROM events')).rows[0]!.n) - eventsBefore;
      if (variant === 'with') {
        const sealFrom = await lsn('insert');
        m.sealMs.push(await sealExplained());
        await walOf(await lastXid(SEAL_XID), sealFrom, await lsn('flush'), m.seal);
      }
    }
  }
  // Last, as they are rolled back: each variant's next batch explained, the same one EXPLAINS times, taking turns.
  const last = { with: next('with'), without: next('without') };
  for (let i = 0; i < EXPLAINS; i++) for (const variant of ['with', 'without'] as const) out[variant].plans.push(await explain(variant, last[variant]));
  return out;
}

/** The flash sale: each variant's own SKU; a batch creates half its operations and settles the previous batch's. */
async function flash(): Promise<Record<Variant, Measured>> {
  const sku = { with: `flash-with-${randomUUID()}`, without: `flash-without-${randomUUID()}` };
  for (const variant of ['with', 'without'] as const) await submit(variant, [stock(sku[variant], 1_000_000_000)]);
  const pending: Record<Variant, ReservationRecord[]> = { with: [], without: [] };
  return measure((variant) => {
    const created = Array.from({ length: Math.ceil(batchSize / 2) }, () => reserve([{ itemId: sku[variant], location: 'default', quantity: 1 }]));
    const ops: RecordOp[] = [...created, ...pending[variant].map((r, i) => settle(r, i))];
    pending[variant] = created.map((op) => op.reservation);
    return ops;
  });
}

/** Carts of 2-5 lines of 1-2 units over each variant's own 10,000 SKUs, settled in the next batch. */
async function carts(): Promise<Record<Variant, Measured>> {
  const skus = { with: `carts-with-${randomUUID()}-`, without: `carts-without-${randomUUID()}-` };
  for (const variant of ['with', 'without'] as const) {
    for (let i = 0; i < CART_SKUS; i += 1_000) {
      await submit(variant, Array.from({ length: 1_000 }, (_, j) => stock(`${skus[variant]}${i + j}`, 1_000_000)));
    }
  }
  await sealAll();
  const cart = (variant: Variant): Line[] => {
    const picked = new Set<number>();
    const count = 2 + Math.floor(random() * 4);
    while (picked.size < count) picked.add(Math.floor(random() * CART_SKUS));
    return [...picked].map((i) => ({ itemId: `${skus[variant]}${i}`, location: 'default', quantity: 1 + Math.floor(random() * 2) }));
  };
  const pending: Record<Variant, ReservationRecord[]> = { with: [], without: [] };
  return measure((variant) => {
    const created = Array.from({ length: Math.ceil(batchSize / 2) }, () => reserve(cart(variant)));
    const ops: RecordOp[] = [...created, ...pending[variant].map((r, i) => settle(r, i))];
    pending[variant] = created.map((op) => op.reservation);
    return ops;
  });
}

/** History: `history` one-line reservations on a SKU of their own, half confirmed, half released, all sealed. */
async function fill(): Promise<void> {
  const sku = `history-${randomUUID()}`;
  await submit('with', [stock(sku, 1_000_000_000)]);
  for (let done = 0; done < history; done += 500) {
    const created = Array.from({ length: Math.min(500, history - done) }, () => reserve([{ itemId: sku, location: 'default', quantity: 1 }]));
    await submit('with', created);
    await submit('with', created.map((op, i) => settle(op.reservation, i)));
  }
  await sealAll();
  await pool.query('VACUUM (ANALYZE)');
}

// ---------------------------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------------------------

function table(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  return [line(cells[0]!), `|${widths.map((w, i) => (i === 0 ? `${'-'.repeat(w + 2)}|` : `${'-'.repeat(w + 1)}:|`)).join('')}`, ...cells.slice(1).map(line)].join('\n');
}

function report(name: string, m: Record<Variant, Measured>): void {
  const { with: on, without: off } = m;
  const per = (n: number, writes: number) => round(n / writes, 1);
  console.log(`\n${name}: ${rounds} batches of ${batchSize} operations per variant; ${round(on.events / on.writes, 2)} events per write with the outbox`);
  console.log(
    table(
      ['per write', 'WAL records', 'WAL bytes', 'full-page images, bytes', 'batch statement, ms (median per batch)'],
      [
        ['without the outbox', per(off.batch.records, off.writes), per(off.batch.bytes, off.writes), per(off.batch.fpiBytes, off.writes), round(median(off.batchMs), 2)],
        ['with it: the batch statement', per(on.batch.records, on.writes), per(on.batch.bytes, on.writes), per(on.batch.fpiBytes, on.writes), round(median(on.batchMs), 2)],
        ['with it: sealing its events', per(on.seal.records, on.writes), per(on.seal.bytes, on.writes), per(on.seal.fpiBytes, on.writes), '-'],
        [
          'with it, in all',
          per(on.batch.records + on.seal.records, on.writes),
          per(on.batch.bytes + on.seal.bytes, on.writes),
          per(on.batch.fpiBytes + on.seal.fpiBytes, on.writes),
          '-',
        ],
      ],
    ),
  );
  const plan = (v: Variant) => {
    const plans = m[v].plans;
    const labels = [...new Set(plans.flatMap((p) => [...p.writes.keys()]))];
    return {
      planning: round(median(plans.map((p) => p.planningMs)), 2),
      execution: round(median(plans.map((p) => p.executionMs)), 2),
      writes: new Map(labels.map((l) => [l, { rows: plans[0]!.writes.get(l)?.rows ?? 0, selfMs: round(median(plans.map((p) => p.writes.get(l)?.selfMs ?? 0)), 2) }])),
    };
  };
  const [pOn, pOff] = [plan('with'), plan('without')];
  console.log(
    `\nSealing a batch's events (EXPLAIN ANALYZE of the sealer's statement, planning + execution): median ${round(median(on.sealMs), 2)} ms, ` +
      `${round((median(on.sealMs) * 1000 * rounds) / on.events, 1)} µs per event`,
  );
  console.log(`\nOne batch explained (EXPLAIN ANALYZE, medians of ${EXPLAINS}, rolled back): planning ${pOff.planning} → ${pOn.planning} ms, execution ${pOff.execution} → ${pOn.execution} ms (without → with the outbox); each write's own time:`);
  console.log(
    table(
      ['CTE: insert or update', 'rows returned', 'without, ms', 'with, ms'],
      [...pOn.writes].map(([label, w]) => [label, w.rows, pOff.writes.get(label)?.selfMs ?? '-', w.selfMs]),
    ),
  );
  // What the outbox adds, relation by relation: the batch's difference, and the sealing.
  const relations = new Set([...on.batch.byRelation.keys(), ...off.batch.byRelation.keys(), ...on.seal.byRelation.keys()]);
  const rows = [...relations]
    .map((rel) => {
      const a = on.batch.byRelation.get(rel) ?? { records: 0, bytes: 0 };
      const b = off.batch.byRelation.get(rel) ?? { records: 0, bytes: 0 };
      const s = on.seal.byRelation.get(rel) ?? { records: 0, bytes: 0 };
      return { rel, batch: a.bytes / on.writes - b.bytes / off.writes, records: a.records / on.writes - b.records / off.writes, seal: s.bytes / on.writes, sealRecords: s.records / on.writes };
    })
    .filter((r) => Math.abs(r.batch) >= 0.5 || r.seal >= 0.5)
    .sort((x, y) => y.batch + y.seal - (x.batch + x.seal));
  console.log('\nWhat the outbox adds per write, by relation (records without full-page images; the batch: with less without):');
  console.log(
    table(
      ['relation', 'batch: records', 'batch: bytes', 'sealing: records', 'sealing: bytes'],
      rows.map((r) => [r.rel, round(r.records, 2), round(r.batch, 0), round(r.sealRecords, 2), round(r.seal, 0)]),
    ),
  );
}

try {
  await pool.query('CREATE EXTENSION IF NOT EXISTS pg_walinspect');
  console.log(`filling: ${history} reservations recorded, half confirmed, half released, their events sealed`);
  await fill();
  report('flash sale (one SKU)', await flash());
  report(`carts (2-5 lines over ${CART_SKUS.toLocaleString('en')} SKUs)`, await carts());
  const { rows } = await pool.query<{ type: string; n: string; row: string; data: string }>(
    `SELECT type, count(*) AS n, round(avg(pg_column_size(e.*))) AS row, round(avg(pg_column_size(data))) AS data
     FROM events e GROUP BY type ORDER BY type`,
  );
  console.log('\nEvent rows as stored (bytes, averages):');
  console.log(table(['type', 'events', 'row', 'of it data (jsonb)'], rows.map((r) => [r.type, r.n, r.row, r.data])));
} finally {
  await pool.end();
  await database.drop();
}
