/**
 * The plan of a list by reference on a table of a million reservations (issue 12: "listing by reference reads
 * PostgreSQL through an index made for it"). `npm run bench:reference-plan [-- --reservations 1000000]`.
 * Fills a scratch database with generate_series, then prints `EXPLAIN (ANALYZE, BUFFERS)` of the statement
 * src/store/reservations.ts sends (`referenceQuery`): without the index, how long creating it takes (what
 * migrations/008 costs a deployment with that many rows), and with it.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { HELP, integerFlag, parseCommandLine } from '../src/cli/args.js';
import { referenceQuery, type ReferenceQuery } from '../src/store/reservations.js';
import { scratchDatabase } from './scratch-database.js';

const usage = `npm run bench:reference-plan -- [--reservations N]

Seeds a fresh database (on BENCH_DATABASE_URL's server, default the local PostgreSQL) with N reservations, four per
reference, one line each, and one "hot" reference of 10,000; prints EXPLAIN (ANALYZE, BUFFERS) of lists by reference
without and with the index of migrations/008, and how long creating that index took. Drops the database at the end.

  --reservations N   rows in reservations (default 1000000)
  --help             this text
`;

const values = parseCommandLine(usage, () => parseArgs({ options: { reservations: { type: 'string' }, help: HELP } }));
const total = integerFlag('reservations', values.reservations, 1_000_000);
const HOT = 10_000;

const database = await scratchDatabase('reference');
const db = new pg.Client({ connectionString: database.url });
await db.connect();

const timed = async (what: string, sql: string, params: unknown[] = []) => {
  const started = performance.now();
  await db.query(sql, params);
  const seconds = (performance.now() - started) / 1000;
  console.log(`${what}: ${seconds.toFixed(2)} s`);
  return seconds;
};

try {
  await db.query('DROP INDEX reservations_reference');
  // Reservation i: reference order-<i / 4> (four each; the last HOT rows share one), a second apart (the newest
  // now), a tenant in seven not 'default', a status in five pending (half of those past their TTL), one line.
  await timed(
    `seeding ${total} reservations`,
    `INSERT INTO reservations (id, status, reference, expires_at, created_at, updated_at, tenant)
     SELECT gen_random_uuid(),
            (ARRAY['pending', 'confirmed', 'released', 'expired', 'released'])[1 + i % 5],
            CASE WHEN i > $1 - $2 THEN 'order-hot' ELSE 'order-' || (i / 4) END,
            now() - make_interval(secs => $1 - i) + CASE WHEN i % 2 = 0 THEN interval '15 minutes' ELSE interval '-1 minute' END,
            now() - make_interval(secs => $1 - i), now() - make_interval(secs => $1 - i),
            CASE WHEN i % 7 = 0 THEN 'shop-b' ELSE 'default' END
     FROM generate_series(1, $1) i`,
    [total, HOT],
  );
  await timed(
    `seeding ${total} lines`,
    `INSERT INTO reservation_lines (reservation_id, line_no, item_id, location, quantity)
     SELECT id, 0, 'sku-' || (abs(hashtext(id::text)) % 10000), 'default', 1 + abs(hashtext(id::text)) % 3 FROM reservations`,
  );
  await db.query('ANALYZE reservations');
  await db.query('ANALYZE reservation_lines');

  const now = new Date();
  const typical = `order-${Math.floor(total / 8)}`;
  // A position 5,000 rows deep into the hot reference: where a client paging by 20 is after 250 pages.
  const deep = await db.query<{ created_us: string; id: string }>(
    `SELECT (extract(epoch FROM created_at) * 1000000)::bigint::text AS created_us, id FROM reservations
     WHERE reference = 'order-hot' ORDER BY created_at DESC, id DESC OFFSET 5000 LIMIT 1`,
  );
  const after = { createdUs: deep.rows[0]!.created_us, id: deep.rows[0]!.id };
  const base = { tenant: null, status: null, now, after: null };
  const queries: [string, ReferenceQuery][] = [
    ['first page of a reference of 4 (operator: every tenant), limit 20', { ...base, reference: typical, limit: 21 }],
    ['first page of the hot reference (10,000 reservations), limit 20', { ...base, reference: 'order-hot', limit: 21 }],
    [
      'the hot reference 5,000 rows deep by cursor, a client tenant, status=released, limit 20',
      { ...base, reference: 'order-hot', tenant: 'default', status: 'released', after, limit: 21 },
    ],
    [
      // The worst case of a filter: no row below the cursor passes (they are all past their TTL), so every one is read.
      'the same with status=pending: none left below the cursor',
      { ...base, reference: 'order-hot', tenant: 'default', status: 'pending', after, limit: 21 },
    ],
    ['release by reference: its read of the reference (at most 100, one more to see beyond)', { ...base, reference: typical, limit: 101 }],
  ];
  const explain = async (label: string, q: ReferenceQuery) => {
    const { text, values } = referenceQuery(q);
    const { rows } = await db.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ${text}`, values);
    console.log(`\n### ${label}\n${rows.map((r) => r['QUERY PLAN']).join('\n')}`);
  };

  console.log('\n## without an index on reference');
  await explain(queries[0]![0], queries[0]![1]);
  console.log('\n## creating the index (migrations/008)');
  const migration = readFileSync(new URL('../migrations/008_reservations_reference.sql', import.meta.url), 'utf8');
  await timed(`CREATE INDEX on ${total} reservations`, migration);
  await db.query('ANALYZE reservations');
  const { rows: size } = await db.query<{ size: string }>(`SELECT pg_size_pretty(pg_relation_size('reservations_reference')) AS size`);
  console.log(`index size: ${size[0]!.size}`);
  console.log('\n## with the index');
  for (const [label, q] of queries) await explain(label, q);
} finally {
  await db.end();
  await database.drop();
}
