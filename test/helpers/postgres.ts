import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync, statSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort, onProcessExit } from './ports.js';
import { testPostgresUrl } from './servers.js';
const PG_BIN_DIR = '/usr/lib/postgresql/15/bin';

// ---------------------------------------------------------------------------
// Throwaway databases on the shared server
// ---------------------------------------------------------------------------

export interface TestDatabase {
  /** Connection URL for the new database (baseUrl with the database name swapped). */
  readonly url: string;
  readonly name: string;
  /** DROP DATABASE ... WITH (FORCE): terminates leftover connections (e.g. a leaked pool). Idempotent. */
  drop(): Promise<void>;
}

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** A fresh database on `baseUrl`'s server (by default DATABASE_URL's: test/helpers/servers.ts). */
export async function createTestDatabase(baseUrl: string = testPostgresUrl()): Promise<TestDatabase> {
  // Hex-only name: safe to interpolate (CREATE DATABASE cannot take bind parameters).
  const name = `irs_test_${randomBytes(6).toString('hex')}`;
  await withClient(baseUrl, (c) => c.query(`CREATE DATABASE "${name}"`));
  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    drop: async () => {
      await withClient(baseUrl, async (c) => {
        // pool.end() resolves before its connections have closed: ended now, one that is closing gets a FATAL
        // (57P01) nobody listens for any more, and the test process dies of it. So the test's own sessions are
        // given a moment to leave; FORCE ends whatever is still there (an app that was not closed).
        for (let waited = 0; waited < 2_000; waited += 20) {
          const { rows } = await c.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [name]);
          if (rows[0]!.n === 0) break;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      });
    },
  };
}

// ---------------------------------------------------------------------------
// Private PostgreSQL instance (the test may stop / crash / restart it)
// ---------------------------------------------------------------------------

export type PgStopMode = 'smart' | 'fast' | 'immediate';

export interface PrivatePostgres {
  readonly port: number;
  /** postgres://postgres@127.0.0.1:PORT/postgres */
  readonly url: string;
  /** Data dir (also holds the unix socket and the server log file `log`). */
  readonly dir: string;
  /** pg_ctl stop; 'immediate' simulates a crash (recovery on next start). No-op if stopped. */
  stop(mode?: PgStopMode): Promise<void>;
  /** pg_ctl start on the same port and dir; resolves once it accepts connections. No-op if running. */
  start(): Promise<void>;
  /** stop('fast') then start(). */
  restart(): Promise<void>;
  /** stop('immediate') and rm -rf the data dir. */
  destroy(): Promise<void>;
}

// PostgreSQL refuses to run as root, so as root every binary runs as the postgres user.
const asRoot = process.getuid?.() === 0;

function pgCommand(bin: string, args: string[]): [string, string[]] {
  const exe = path.join(PG_BIN_DIR, bin);
  return asRoot ? ['runuser', ['-u', 'postgres', '--', exe, ...args]] : [exe, args];
}

function run(file: string, args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const proc = spawn(file, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    proc.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    proc.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    proc.once('error', reject);
    proc.once('close', (code) => {
      if (code === 0) resolve();
      else reject(new Error(`${file} ${args.join(' ')} exited with code ${String(code)}:\n${output}`));
    });
  });
}

/** Runs a PostgreSQL binary (as the postgres user when we are root); rejects with its output if it fails. */
export function runPg(bin: string, args: string[], cwd: string): Promise<void> {
  const [file, argv] = pgCommand(bin, args);
  return run(file, argv, cwd);
}

/** As root, the postgres user must be able to traverse to the data dir; fall back to /tmp if TMPDIR is private. */
function tempRoot(): string {
  const tmp = os.tmpdir();
  if (!asRoot) return tmp;
  for (let dir = tmp; ; dir = path.dirname(dir)) {
    if ((statSync(dir).mode & 0o001) === 0) return '/tmp';
    if (dir === path.dirname(dir)) return tmp;
  }
}

// Data dirs of instances that may be running, stopped synchronously when the test process ends.
const liveInstances = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  onProcessExit(() => {
    for (const dir of liveInstances) {
      const [file, argv] = pgCommand('pg_ctl', ['-D', dir, '-m', 'immediate', '-w', 'stop']);
      spawnSync(file, argv, { cwd: dir, stdio: 'ignore' });
      rmSync(dir, { recursive: true, force: true });
    }
    liveInstances.clear();
  });
}

/** A fresh, empty data dir the server user owns (mode 0700), its server stopped and the dir removed at exit. */
export async function newDataDir(): Promise<string> {
  installExitHook();
  const dir = await mkdtemp(path.join(tempRoot(), 'irs-pg-'));
  liveInstances.add(dir);
  // initdb and pg_basebackup want an empty dir owned by the server user with mode 0700 (mkdtemp gives 0700).
  await chmod(dir, 0o700);
  if (asRoot) await run('chown', ['-R', 'postgres:postgres', dir], dir);
  return dir;
}

/** A private instance on a fresh data dir: initdb, then started on a free port. */
export async function startPostgres(): Promise<PrivatePostgres> {
  const dir = await newDataDir();
  await runPg('initdb', ['-D', dir, '-U', 'postgres', '--auth=trust', '--no-sync', '--encoding=UTF8', '--locale=C'], dir);
  return runInstance(dir);
}

/**
 * Runs the cluster in `dir` (made by initdb or pg_basebackup) on a free port with pg_ctl, and answers its lifecycle;
 * resolves once it accepts connections (destroyed if it cannot start).
 */
export async function runInstance(dir: string): Promise<PrivatePostgres> {
  const port = await freePort();
  let running = false;
  // Unix socket in the data dir so we never collide with the shared server's /var/run/postgresql.
  const serverOpts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`;

  async function start(): Promise<void> {
    if (running) return;
    await runPg('pg_ctl', ['-D', dir, '-o', serverOpts, '-l', path.join(dir, 'log'), '-w', 'start'], dir);
    running = true;
  }

  async function stop(mode: PgStopMode = 'fast'): Promise<void> {
    if (!running) return;
    await runPg('pg_ctl', ['-D', dir, '-m', mode, '-w', 'stop'], dir);
    running = false;
  }

  async function restart(): Promise<void> {
    await stop('fast');
    await start();
  }

  async function destroy(): Promise<void> {
    // Unconditional: a failed `pg_ctl -w start` can leave a postmaster behind; "not running" errors are expected.
    await runPg('pg_ctl', ['-D', dir, '-m', 'immediate', '-w', 'stop'], dir).catch(() => undefined);
    running = false;
    liveInstances.delete(dir);
    await rm(dir, { recursive: true, force: true });
  }

  try {
    await start();
  } catch (err) {
    await destroy();
    throw err;
  }
  return { port, url: `postgres://postgres@127.0.0.1:${port}/postgres`, dir, stop, start, restart, destroy };
}
