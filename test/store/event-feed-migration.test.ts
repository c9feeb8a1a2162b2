import { fileURLToPath } from 'node:url';
import { runner } from 'node-pg-migrate';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/store/database.js';
import { eventsAfter, sealEvents } from '../../src/store/events.js';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres.js';

// migrations/011 moves feed positions out of `events`: an outbox written before it keeps its order, and what was
// waiting for the sealer still gets sealed, numbered on from the last position handed out.

let database: TestDatabase;
let pool: pg.Pool;

beforeAll(async () => {
  database = await createTestDatabase();
  pool = new pg.Pool({ connectionString: database.url, max: 2 });
});
afterAll(async () => {
  await pool.end();
  await database.drop();
});

describe('migration 011 (event_feed)', () => {
  it('keeps every sealed position, queues the unsealed events, and the sealer numbers on above the last', async () => {
    await runner({
      databaseUrl: database.url,
      dir: fileURLToPath(new URL('../../migrations/', import.meta.url)),
      direction: 'up',
      count: 10, // up to 010_events
      migrationsTable: 'schema_migrations',
      checkOrder: true,
      log: () => {},
    });
    // An outbox as 010 kept it: sealed events (positions 1, 2 and 5: 3 and 4 pruned), two unsealed, and the last
    // position handed out above them all (pruned too).
    await pool.query(
      `INSERT INTO events (subject, sequence, type, time, data, position) VALUES
         ('a', 1, 'inventory.stock.changed', now(), '{"n": 1}', 1),
         ('b', 1, 'inventory.stock.changed', now(), '{"n": 2}', 2),
         ('a', 2, 'inventory.stock.changed', now(), '{"n": 3}', 5),
         ('b', 2, 'inventory.stock.changed', now(), '{"n": 4}', NULL),
         ('a', 3, 'inventory.stock.changed', now(), '{"n": 5}', NULL);
       UPDATE event_positions SET position = 7`,
    );
    await migrate(database.url, pino({ level: 'silent' }));

    const before = await eventsAfter(pool, 0, 100);
    expect(before.map((e) => [e.position, e.subject, Number(e.sequence)])).toEqual([
      [1, 'a', 1],
      [2, 'b', 1],
      [5, 'a', 2],
    ]);
    expect(await sealEvents(pool, 100)).toBe(2);
    const after = await eventsAfter(pool, 5, 100);
    expect(after.map((e) => [e.position, e.subject, Number(e.sequence)])).toEqual([
      [8, 'b', 2],
      [9, 'a', 3],
    ]);
    const { rows } = await pool.query<{ column: string }>(
      "SELECT column_name AS column FROM information_schema.columns WHERE table_name = 'events' AND column_name = 'position'",
    );
    expect(rows).toEqual([]);
  });
});
