import type pg from 'pg';
import type { EventRow } from '../events/envelope.js';
import { checkOut } from './database.js';

/**
 * The outbox's order (migrations/010_events.sql): the batch statement appends events (src/store/batch-statement.ts),
 * the sealer gives committed ones their `position`, and the feed and every transport read sealed events only, by
 * position.
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
 * The oldest unsealed events first (the partial index events_unsealed), at most $1, numbered on from the last
 * position, under the sealer's lock (sealEvents).
 *
 * The update finds each of them by its `seq` (the primary key), and asks nothing more of the row: no other sealer
 * runs, and `next` read it unsealed. A second condition `e.position IS NULL` would let the planner scan
 * events_unsealed for the rows to update, and rescan `next` for each one: statistics, taken when a sealer has just
 * run, say nothing is unsealed, so it expects one row each side. A flash sale's 450 events took 300 ms so (n²), and
 * a backlog of thousands more than the statement timeout: the sealer could never catch up.
 */
export const SEAL = `
WITH next AS (
  SELECT seq, row_number() OVER (ORDER BY seq) AS n
  FROM (SELECT seq FROM events WHERE position IS NULL ORDER BY seq LIMIT $1) AS unsealed
), last AS (
  SELECT greatest(p.position, (SELECT coalesce(max(position), 0) FROM events)) AS position FROM event_positions p
), sealed AS (
  UPDATE events e SET position = last.position + next.n
  FROM next, last WHERE e.seq = next.seq
  RETURNING e.position
), advanced AS (
  UPDATE event_positions SET position = (SELECT max(position) FROM sealed) WHERE EXISTS (SELECT FROM sealed)
)
SELECT count(*) AS n FROM sealed`;

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
 * event's above it (an event may also be inserted sealed: imported, or by a test).
 */
export async function sealEvents(db: pg.Pool, limit: number): Promise<number> {
  // Most rounds find nothing to do (every node runs one every EVENTS_SEAL_INTERVAL_MS): one look at the partial
  // index events_unsealed, no transaction.
  const { rows: due } = await db.query<{ due: boolean }>('SELECT EXISTS (SELECT FROM events WHERE position IS NULL) AS due');
  if (!due[0]!.due) return 0;
  const client = await checkOut(db);
  let broken: Error | undefined;
  try {
    // One round trip for both (the simple protocol runs them in turn); the lock's own statement comes before the
    // one that reads, whose snapshot is then taken after the lock (and the previous sealer's commit).
    const [, locked] = (await client.query(`BEGIN; SELECT pg_try_advisory_xact_lock(${SEALER_LOCK}) AS locked`)) as unknown as pg.QueryResult<{
      locked: boolean;
    }>[];
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
    `SELECT id, subject, sequence, type, time, data, position FROM events
     WHERE position > $1 ORDER BY position LIMIT $2`,
    [position, limit],
  );
  return rows;
}
