import type pg from 'pg';

/**
 * The `application_name` of a node's PostgreSQL sessions: names the node (src/jobs/node-lease.ts), so that another
 * node can find them once its lease has lapsed. (A DATABASE_URL that sets application_name itself wins, and then
 * no session is found by it.)
 */
export const sessionName = (nodeId: string): string => `inventory-reservation-service/${nodeId}`;

/**
 * Ends every PostgreSQL session of node `nodeId`, waiting up to `waitMs` for each to exit: a statement one of them
 * was still running (a batch blocked on a lock when its process died) is rolled back, so nothing that node sent can
 * commit afterwards and what PostgreSQL has now is final. True when none is left.
 */
export async function endSessionsOf(db: pg.Pool, nodeId: string, waitMs: number): Promise<boolean> {
  const { rows } = await db.query<{ gone: boolean }>(
    `SELECT coalesce(bool_and(pg_terminate_backend(pid, $2)), true) AS gone
     FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()`,
    [sessionName(nodeId), waitMs],
  );
  return rows[0]?.gone ?? true;
}
