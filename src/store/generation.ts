import type pg from 'pg';

/**
 * The rebuild's side of the generation fence (the batches' side is in batch-statement.ts): the rebuild holds the
 * generation row, bumped, in one transaction for as long as it refills Redis.
 */

/**
 * Opens the rebuild's transaction and takes the fence: the row lock waits for the batches holding the generation
 * row, and holds new ones off until the commit, after which they find the new generation and write nothing. The
 * transaction waits for writers and stays open while Redis is refilled: no timeouts in it. Returns the new
 * generation.
 */
export async function beginRebuild(client: pg.PoolClient): Promise<string> {
  await client.query('BEGIN; SET LOCAL statement_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0');
  const { rows } = await client.query<{ generation: string }>(
    'UPDATE state_generation SET generation = generation + 1 RETURNING generation::text AS generation',
  );
  return rows[0]!.generation;
}

export async function commitRebuild(client: pg.PoolClient): Promise<void> {
  await client.query('COMMIT');
}

export async function rollbackRebuild(client: pg.PoolClient): Promise<void> {
  await client.query('ROLLBACK');
}
