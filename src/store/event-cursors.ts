import type pg from 'pg';

/**
 * What the relays write of the outbox (migrations/010_events.sql): how far each transport delivered
 * (`event_cursors`), and the pruning of delivered events. They read sealed events as the feed does
 * (`eventsAfter`, ./events.ts).
 */

/** How far `transport` delivered (its row made at 0 the first time: a new transport starts from the oldest event kept). */
export async function readCursor(db: pg.Pool, transport: string): Promise<number> {
  const { rows } = await db.query<{ position: number }>(
    `WITH made AS (INSERT INTO event_cursors (transport) VALUES ($1) ON CONFLICT (transport) DO NOTHING RETURNING position)
     SELECT position FROM made UNION ALL SELECT position FROM event_cursors WHERE transport = $1`,
    [transport],
  );
  return rows[0]!.position;
}

/** Records that `transport` delivered every event up to `position`; never moves a cursor back. */
export async function advanceCursor(db: pg.Pool, transport: string, position: number): Promise<void> {
  await db.query(
    `UPDATE event_cursors SET position = greatest(position, $2), updated_at = now() WHERE transport = $1`,
    [transport, position],
  );
}

/**
 * Deletes at most `limit` events older than `retentionHours` that every transport in `transports` delivered
 * (a transport without a cursor row has delivered nothing); with none configured, every sealed one qualifies
 * (the feed alone reads them, within the retention). Oldest first, each with its position (`event_feed`); returns how
 * many went.
 */
export async function pruneDelivered(db: pg.Pool, transports: readonly string[], retentionHours: number, limit: number): Promise<number> {
  const { rowCount } = await db.query(
    `WITH bound AS (
       SELECT CASE WHEN cardinality($1::text[]) = 0 THEN (SELECT max(position) FROM event_feed)
                   ELSE (SELECT min(coalesce(c.position, 0)) FROM unnest($1::text[]) AS t(name)
                         LEFT JOIN event_cursors c ON c.transport = t.name) END AS upto
     ), gone AS (
       DELETE FROM event_feed WHERE position IN (
         SELECT f.position FROM event_feed f JOIN events e ON e.seq = f.seq
          WHERE f.position <= (SELECT upto FROM bound) AND e.time < now() - make_interval(hours => $2)
          ORDER BY f.position LIMIT $3
       )
       RETURNING seq
     )
     DELETE FROM events WHERE seq IN (SELECT seq FROM gone)`,
    [transports, retentionHours, limit],
  );
  return rowCount ?? 0;
}
