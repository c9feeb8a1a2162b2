import type pg from 'pg';

/** What the service asks PostgreSQL about PostgreSQL itself: is it there, and how is it run. */

/** True when PostgreSQL answers a trivial query (readiness). */
export function reachable(db: pg.Pool): Promise<boolean> {
  return db.query('SELECT 1').then(
    () => true,
    () => false,
  );
}

/** The server's `autovacuum` setting ('on' or 'off'). */
export async function autovacuumSetting(db: pg.Pool): Promise<string | undefined> {
  const { rows } = await db.query<{ setting: string }>("SELECT current_setting('autovacuum') AS setting");
  return rows[0]?.setting;
}
