import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, migrate } from '../../src/store/database.js';
import { eventsAfter, SEALING_PLANNING, SEAL, SEALER_LOCK, sealEvents } from '../../src/store/events.js';
import { appendEvents } from '../helpers/events.js';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres.js';

// The sealer (src/store/events.ts): the feed's order is handed out to committed events only, above every position
// handed out before, by one sealer at a time; a reader polling with its last position reads every event once.

let database: TestDatabase;
let pool: pg.Pool;

beforeAll(async () => {
  database = await createTestDatabase();
  await migrate(database.url, pino({ level: 'silent' }));
  pool = createPool(database.url, { max: 10, queryTimeoutMs: 5000 });
});
afterAll(async () => {
  await pool.end();
  await database.drop();
});

let subjects = 0;
/** Appends `n` events of a new subject (sequences 1..n) on `db`, queued for the sealer as the batch statement leaves them; answers the subject. */
async function append(db: pg.Pool | pg.PoolClient, n = 1, subject = `subject-${subjects++}`): Promise<string> {
  await appendEvents(db, Array.from({ length: n }, () => ({ subject, type: 'inventory.stock.changed' })), { sealed: false });
  return subject;
}

/** The positions of a subject's events, in `seq` order (null: not sealed). */
async function positionsOf(subject: string): Promise<(number | null)[]> {
  const { rows } = await pool.query<{ position: number | null }>(
    'SELECT f.position FROM events e LEFT JOIN event_feed f USING (seq) WHERE e.subject = $1 ORDER BY e.seq',
    [subject],
  );
  return rows.map((r) => r.position);
}

/** Everything a reader polling from `after` reads until it is caught up, as the feed pages it. */
async function readFrom(after: number, limit = 7): Promise<{ subject: string; position: number }[]> {
  const read: { subject: string; position: number }[] = [];
  for (let cursor = after; ; ) {
    const page = await eventsAfter(pool, cursor, limit);
    read.push(...page.map((e) => ({ subject: e.subject, position: e.position })));
    if (page.length < limit) return read;
    cursor = page.at(-1)!.position;
  }
}

const lastPosition = async () => (await pool.query<{ p: number }>('SELECT coalesce(max(position), 0)::bigint AS p FROM event_feed')).rows[0]!.p;

describe('sealEvents', () => {
  it('an event committed after a later one is sealed after what a reader already read: the reader never skips it', async () => {
    const start = await lastPosition();
    const early = await pool.connect();
    try {
      await early.query('BEGIN');
      const first = await append(early); // the lower seq, not committed yet
      const second = await append(pool); // a higher seq, committed
      expect(await sealEvents(pool, 100)).toBe(1); // only the committed one
      const seen = await readFrom(start);
      expect(seen.map((e) => e.subject)).toEqual([second]);
      await early.query('COMMIT');
      expect(await sealEvents(pool, 100)).toBe(1);
      // Polling on from the last position read: the late commit is there, after it.
      const next = await readFrom(seen.at(-1)!.position);
      expect(next.map((e) => e.subject)).toEqual([first]);
      expect(next[0]!.position).toBeGreaterThan(seen[0]!.position);
    } finally {
      early.release();
    }
  });

  it('seals in seq order, at most `limit` at a time, numbering on without a gap', async () => {
    const start = await lastPosition();
    const subject = await append(pool, 25);
    expect(await sealEvents(pool, 10)).toBe(10);
    expect(await sealEvents(pool, 10)).toBe(10);
    expect(await sealEvents(pool, 10)).toBe(5);
    expect(await sealEvents(pool, 10)).toBe(0);
    const positions = await positionsOf(subject);
    expect(positions).toEqual(positions.map((_, i) => start + i + 1));
  });

  it('never hands a position out again, even once every sealed event was pruned', async () => {
    await append(pool, 3);
    await sealEvents(pool, 100);
    const last = await lastPosition();
    await pool.query('DELETE FROM events; DELETE FROM event_feed'); // retention pruned everything delivered
    const subject = await append(pool);
    expect(await sealEvents(pool, 100)).toBe(1);
    expect(await positionsOf(subject)).toEqual([last + 1]);
  });

  it('numbers on above an event inserted sealed (imported, or by a test)', async () => {
    const above = (await lastPosition()) + 100;
    await pool.query(
      `WITH e AS (INSERT INTO events (subject, sequence, type, time, data) VALUES ('imported', 1, 'inventory.stock.changed', now(), '{}') RETURNING seq)
       INSERT INTO event_feed (position, seq) SELECT $1, seq FROM e`,
      [above],
    );
    const subject = await append(pool);
    await sealEvents(pool, 100);
    expect(await positionsOf(subject)).toEqual([above + 1]);
  });

  /** The nodes of the sealing statement's plan, as the sealer plans it, that read more than `most` rows over all their loops; and whether it was JIT-compiled. */
  async function explainSeal(limit: number, most: number): Promise<{ read: string[]; compiled: boolean }> {
    interface Node {
      'Node Type': string;
      'Actual Rows': number;
      'Actual Loops': number;
      Plans?: Node[];
    }
    const client = await pool.connect();
    const read: string[] = [];
    try {
      await client.query(`BEGIN; ${SEALING_PLANNING}`);
      const { rows } = await client.query<{ 'QUERY PLAN': [{ Plan: Node; JIT?: { Functions: number } }] }>(
        `EXPLAIN (ANALYZE, FORMAT JSON) ${SEAL}`,
        [limit],
      );
      const walk = (node: Node) => {
        const rowsRead = node['Actual Rows'] * node['Actual Loops'];
        if (rowsRead > most) read.push(`${node['Node Type']}: ${node['Actual Rows']} × ${node['Actual Loops']}`);
        for (const child of node.Plans ?? []) walk(child);
      };
      const [explained] = rows[0]!['QUERY PLAN'];
      walk(explained.Plan);
      return { read, compiled: (explained.JIT?.Functions ?? 0) > 0 };
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
  }

  it('reads a backlog once, though the statistics (taken just after a sealer ran, as ever) say nothing is unsealed', async () => {
    await append(pool, 2_000);
    while ((await sealEvents(pool, 5_000)) > 0);
    await pool.query('ANALYZE events, unsealed_events, event_feed');
    const backlog = 300;
    await append(pool, backlog);
    // Rescanning the backlog for each of its events would read 300 × 300.
    expect(await explainSeal(5_000, backlog)).toEqual({ read: [], compiled: false });
    expect(await sealEvents(pool, 5_000)).toBe(backlog);
  });

  it('takes a round off a large backlog from its oldest, with statistics that know the backlog, and compiles nothing', async () => {
    const backlog = 20_000;
    await append(pool, backlog);
    await pool.query('ANALYZE events, unsealed_events, event_feed');
    // A scan of the queue for every round of 100 would make a backlog quadratic; JIT, which the estimate for such a
    // backlog calls for, would compile the statement every round (0.3 s).
    expect(await explainSeal(100, 2 * 100)).toEqual({ read: [], compiled: false });
    while ((await sealEvents(pool, 5_000)) > 0);
  });

  it('skips the round while another sealer holds the lock, without waiting for it', async () => {
    await append(pool);
    const other = await pool.connect();
    try {
      await other.query('BEGIN');
      await other.query('SELECT pg_advisory_xact_lock($1)', [SEALER_LOCK.toString()]);
      expect(await sealEvents(pool, 100)).toBe(0);
    } finally {
      await other.query('ROLLBACK');
      other.release();
    }
    expect(await sealEvents(pool, 100)).toBe(1);
  });

  it('sealers on several nodes at once, while events are appended: each event sealed once, positions unique and gapless, per subject in order', async () => {
    const start = await lastPosition();
    const pools = Array.from({ length: 3 }, () => createPool(database.url, { max: 2, queryTimeoutMs: 5000 }));
    try {
      let appending = true;
      const sealers = pools.map(async (p) => {
        while (appending) await sealEvents(p, 5);
      });
      // Many small transactions, each subject's events spread over several of them (as batches append them).
      const writers = Array.from({ length: 6 }, async (_, w) => {
        for (let i = 0; i < 30; i++) {
          const subject = `race-${w}`;
          await pool.query(
            `WITH e AS (INSERT INTO events (subject, sequence, type, time, data) VALUES ($1, $2, 'inventory.stock.changed', now(), '{}') RETURNING seq)
             INSERT INTO unsealed_events (seq) SELECT seq FROM e`,
            [subject, i + 1],
          );
        }
      });
      await Promise.all(writers);
      appending = false;
      await Promise.all(sealers);
      while ((await sealEvents(pool, 100)) > 0);
      const { rows } = await pool.query<{ subject: string; sequence: number; position: number }>(
        "SELECT e.subject, e.sequence, f.position FROM events e JOIN event_feed f USING (seq) WHERE e.subject LIKE 'race-%' ORDER BY f.position",
      );
      expect(rows).toHaveLength(180);
      expect(rows.map((r) => r.position)).toEqual(rows.map((_, i) => start + i + 1));
      for (let w = 0; w < 6; w++) {
        const sequences = rows.filter((r) => r.subject === `race-${w}`).map((r) => r.sequence);
        expect(sequences).toEqual(sequences.map((_, i) => i + 1));
      }
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  });
});
