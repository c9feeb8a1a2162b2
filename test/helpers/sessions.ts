import type pg from 'pg';
import { waitFor } from './wait.js';

/**
 * What PostgreSQL shows of its sessions (`pg_stat_activity`): the moments a test waits for to know a statement is
 * provably in flight (it waits for a lock the test holds) or provably over (its backend is gone).
 */

type Queryable = Pick<pg.Pool, 'query'> | Pick<pg.Client, 'query'>;

/** The application name of every API node's sessions (src/store/nodes.ts sessionName), as a LIKE pattern. */
export const ANY_NODE = 'inventory-reservation-service/%';

/**
 * The process ids of the sessions of `db`'s database that wait for a lock, oldest statement first; with
 * `applicationName` (a LIKE pattern), only those sessions'.
 */
export async function lockWaiters(db: Queryable, applicationName = '%'): Promise<number[]> {
  const { rows } = await (db as Pick<pg.Pool, 'query'>).query<{ pid: number }>(
    `SELECT pid FROM pg_stat_activity
     WHERE datname = current_database() AND wait_event_type = 'Lock' AND application_name LIKE $1
     ORDER BY query_start`,
    [applicationName],
  );
  return rows.map((r) => r.pid);
}

/** Waits until at least `n` sessions wait for a lock (see `lockWaiters`), and returns their process ids. */
export function waitForLockWait(
  db: Queryable,
  what: string,
  { n = 1, applicationName, timeoutMs = 10_000 }: { n?: number; applicationName?: string; timeoutMs?: number } = {},
): Promise<number[]> {
  return waitFor(
    `${what} (${n} session(s) waiting for a lock)`,
    async () => {
      const pids = await lockWaiters(db, applicationName);
      return pids.length >= n ? pids : undefined;
    },
    { timeoutMs, intervalMs: 10 },
  );
}

/** Whether the backend `pid` still exists. */
export async function backendAlive(db: Queryable, pid: number): Promise<boolean> {
  const { rowCount } = await (db as Pick<pg.Pool, 'query'>).query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid]);
  return rowCount === 1;
}
