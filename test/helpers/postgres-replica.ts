import pg from 'pg';
import { newDataDir, runInstance, runPg, type PrivatePostgres } from './postgres.js';
import { waitFor } from './wait.js';

/**
 * A private PostgreSQL streaming replica of a private primary (test/helpers/postgres.ts's `startPostgres`), for the
 * tests of reads served by a replica: it can be stopped and started like any private instance (stop, start, restart,
 * destroy; stopped and removed when the test process exits), and its replay paused to make it lag at will.
 */
export interface PostgresReplica extends PrivatePostgres {
  /** The primary it streams from. */
  readonly primary: PrivatePostgres;
  /**
   * `pg_wal_replay_pause()`: it keeps receiving WAL but applies none until resumed, so it answers as of now. Not
   * kept across a stop: a started replica replays.
   */
  pauseReplay(): Promise<void>;
  /** `pg_wal_replay_resume()`. */
  resumeReplay(): Promise<void>;
  /** Resolves once it has replayed everything the primary had written when called. */
  caughtUp(): Promise<void>;
}

async function query<T extends pg.QueryResultRow>(url: string, text: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}

/**
 * A hot standby of `primary`: `pg_basebackup -R` (WAL streamed during the copy, a fast checkpoint; `-R` writes
 * `primary_conninfo` and `standby.signal`), then started on a free port. The primary needs nothing set: PostgreSQL
 * 15's defaults (wal_level replica, 10 WAL senders) and initdb's pg_hba (replication from 127.0.0.1, trust) allow it.
 * About 1–4 s.
 */
export async function startReplica(primary: PrivatePostgres): Promise<PostgresReplica> {
  const dir = await newDataDir();
  await runPg(
    'pg_basebackup',
    ['-h', '127.0.0.1', '-p', String(primary.port), '-U', 'postgres', '-D', dir, '-R', '-X', 'stream', '-c', 'fast', '--no-sync'],
    dir,
  );
  const instance = await runInstance(dir);
  return {
    ...instance,
    primary,
    pauseReplay: async () => {
      await query(instance.url, 'SELECT pg_wal_replay_pause()');
    },
    resumeReplay: async () => {
      await query(instance.url, 'SELECT pg_wal_replay_resume()');
    },
    caughtUp: async () => {
      const [{ lsn }] = (await query<{ lsn: string }>(primary.url, 'SELECT pg_current_wal_lsn()::text AS lsn')) as [{ lsn: string }];
      await waitFor(`the replica on port ${instance.port} to replay up to ${lsn}`, async () => {
        const [row] = await query<{ done: boolean }>(instance.url, 'SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS done', [lsn]);
        return row?.done ? true : undefined;
      });
    },
  };
}
