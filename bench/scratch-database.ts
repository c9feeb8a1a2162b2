/**
 * A database of its own for a bench tool that seeds its own data: created and migrated on BENCH_DATABASE_URL's
 * server (default the local PostgreSQL), named `irs_bench_<label>_<random>`, and dropped by `drop()` or, if the
 * tool is cut short, by ./interrupt.ts.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { pino } from 'pino';
import { ensureDatabase, migrate } from '../src/store/database.js';
import { onInterrupt } from './interrupt.js';

export interface ScratchDatabase {
  url: string;
  /** Drops the database, ending any session still on it. */
  drop(): Promise<void>;
}

export async function scratchDatabase(label: string): Promise<ScratchDatabase> {
  const adminUrl = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const target = new URL(adminUrl);
  const name = `irs_bench_${label}_${randomBytes(3).toString('hex')}`;
  target.pathname = `/${name}`;
  let dropped: Promise<void> | undefined;
  const drop = () =>
    (dropped ??= (async () => {
      const admin = new pg.Client({ connectionString: adminUrl });
      await admin.connect();
      try {
        await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
      } finally {
        await admin.end();
      }
    })());
  // Registered before the database exists: a run cut short while migrating drops it too.
  const forget = onInterrupt(drop);
  await ensureDatabase(target.toString());
  await migrate(target.toString(), pino({ level: 'silent' }));
  return {
    url: target.toString(),
    drop: async () => {
      forget();
      await drop();
    },
  };
}
