import type pg from 'pg';
import type { EventRow } from '../events/envelope.js';
import { checkOut } from './database.js';

/**
 * The outbox's order (migrations/010_events.sql, 011_event_feed.sql): the batch statement appends events and queues
 * them (src/store/batch-statement.ts), the sealer gives committed ones their position (`event_feed`), and the feed
 * and every transport read sealed events only, by position.
 */

/** An event as read in feed order. */
export interface SealedEvent extends EventRow {
  position: number;
}

/**
 * The key of the sealer's transaction-scoped advisory lock: one sealer at a time across every node (the bytes of
 * "irs:seal" as a bigint, unlikely to meet another application's key on a shared server).
 */
export const SEALER_LOCK = 0x6972733a7365616cn;

/**
 * The oldest unsealed events first, at most $1, taken off their queue (`unsealed_events`, migrations/011) and given
 * the next positions in `seq` order, under the sealer's lock (sealEvents). An event's row is never touched: its
 * position is a row of `event_feed`.
 *
 * The queue is taken up to the $1-th seq (computed once, in the statement's snapshot, as is the delete's scan) rather
 * than `seq IN (the first $1)`: that is a join, and statistics taken when a sealer has just run say the queue is
 * empty, so the planner expects one row each side and may rescan the first $1 for every queued event. A backlog of
 * 300 was read 300 times so (n²: a flash sale's backlog could outgrow the statement timeout, and never be sealed).
 */
export const SEAL = `
WITH taken AS (
  DELETE FROM unsealed_events
  WHERE seq <= (SELECT max(seq) FROM (SELECT seq FROM unsealed_events ORDER BY seq LIMIT $1) AS first)
  RETURNING seq
), last AS (
  SELECT greatest(p.position, (SELECT coalesce(max(position), 0) FROM event_feed)) AS position FROM event_positions p
), sealed AS (
  INSERT INTO event_feed (position, seq)
  SELECT last.position + row_number() OVER (ORDER BY taken.seq), taken.seq FROM taken, last
  RETURNING position
), advanced AS (
  UPDATE event_positions SET position = (SELECT max(position) FROM sealed) WHERE EXISTS (SELECT FROM sealed)
)
SELECT count(*) AS n FROM sealed`;

/**
 * The sealing statement's cost estimate follows the queue's statistics, which a backlog (or none, never analyzed)
 * makes large: large enough for PostgreSQL to JIT-compile the statement, every round (0.3 s each: a backlog of
 * 60,000 cost 1.2 ms per event so), though it reads only the oldest $1 through the primary key.
 */
export const SEALING_PLANNING = 'SET LOCAL jit = off';

/**
 * Gives up to `limit` committed events without a position the next positions, in `seq` order, and answers how many
 * it sealed (0 as well when another sealer holds the lock: it is sealing them).
 *
 * Why not order the feed by `seq`: identities are handed out at insert, commits happen in another order, so a reader
 * could see seq 7 before the transaction holding seq 6 commits, move past it, and never read it. A position is
 * handed out only to an event already committed, and only above every position handed out before (read after the
 * lock is taken, in a new snapshot: READ COMMITTED), so a reader that saw position n never finds an event below it
 * later. Per subject `seq` follows `sequence` (the migration says why), so position order keeps each subject's.
 *
 * The last position handed out is `event_positions`' (pruning may have removed every sealed event), or a sealed
 * event's above it (an event may also be inserted sealed, its position with it: imported, or by a test).
 */
export async function sealEvents(db: pg.Pool, limit: number): Promise<number> {
  // Most rounds find nothing to do (every node runs one every EVENTS_SEAL_INTERVAL_MS): one look at the queue, no
  // transaction.
  const { rows: due } = await db.query<{ due: boolean }>('SELECT EXISTS (SELECT FROM unsealed_events) AS due');
  if (!due[0]!.due) return 0;
  const client = await checkOut(db);
  let broken: Error | undefined;
  try {
    // One round trip for all three (the simple protocol runs them in turn); the lock's own statement comes before
    // the one that reads, whose snapshot is then taken after the lock (and the previous sealer's commit).
    const [, , locked] = (await client.query(
      `BEGIN; ${SEALING_PLANNING}; SELECT pg_try_advisory_xact_lock(${SEALER_LOCK}) AS locked`,
    )) as unknown as pg.QueryResult<{ locked: boolean }>[];
    if (!locked!.rows[0]!.locked) {
      await client.query('ROLLBACK');
      return 0;
    }
    const { rows: sealed } = await client.query<{ n: number }>(SEAL, [limit]);
    await client.query('COMMIT');
    return sealed[0]!.n;
  } catch (err) {
    broken = err as Error;
    throw err;
  } finally {
    // A failed transaction's connection may be mid-statement or dead: destroy it rather than reuse it.
    client.release(broken);
  }
}

/** Sealed events after `position` (0: from the first; a bigint, as a number or in decimal), in order, at most `limit`. */
export async function eventsAfter(db: pg.Pool, position: number | string, limit: number): Promise<SealedEvent[]> {
  const { rows } = await db.query<SealedEvent>(
    `SELECT e.id, e.subject, e.sequence, e.type, e.time, e.data, f.position
     FROM event_feed f JOIN events e ON e.seq = f.seq
     WHERE f.position > $1 ORDER BY f.position LIMIT $2`,
    [position, limit],
  );
  return rows;
}
