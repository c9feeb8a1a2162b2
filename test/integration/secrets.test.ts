import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/ports.js';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres.js';

/**
 * The real server process (`node --import tsx src/server.ts`, as the drills and production start it) with
 * secrets in its configuration: whatever goes wrong, no line it prints holds a password or an API key secret.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PASSWORD = `pw${randomBytes(8).toString('hex')}`;
const API_SECRET = `key${randomBytes(8).toString('hex')}`;

interface Run {
  exited: Promise<number | null>;
  output: () => string;
  /** Resolves once the output has a line matching `pattern`. */
  waitFor: (pattern: RegExp) => Promise<void>;
  kill: () => void;
}

function startServer(env: Record<string, string>): Run {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      HOST: '127.0.0.1',
      PORT: '0',
      LOG_LEVEL: 'trace',
      REDIS_KEY_PREFIX: `secrets-${randomBytes(4).toString('hex')}:`,
      API_KEYS: `ops:${API_SECRET}:operator`,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  const onData = (chunk: Buffer) => {
    output += chunk.toString();
    for (const w of [...waiters]) {
      if (!w.pattern.test(output)) continue;
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    exited,
    output: () => output,
    waitFor: (pattern) =>
      new Promise<void>((resolve, reject) => {
        if (pattern.test(output)) return resolve();
        waiters.push({ pattern, resolve });
        void exited.then(() => reject(new Error(`exited before printing ${pattern}:\n${output}`)));
      }),
    kill: () => child.kill('SIGTERM'),
  };
}

function expectNoSecret(output: string): void {
  expect(output).not.toContain(PASSWORD);
  expect(output).not.toContain(API_SECRET);
}

describe('secrets never reach the output of a failed start', () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(() => database.drop());

  const refusals: [variable: string, value: () => string][] = [
    ['DATABASE_URL', () => `postgres://u:${PASSWORD}@[bad/x`],
    ['DATABASE_URL', () => `http://u:${PASSWORD}@127.0.0.1:5432/inventory`],
    ['REDIS_URL', () => `redis://:${PASSWORD}@[bad`],
    ['REDIS_URL', () => `http://:${PASSWORD}@127.0.0.1:6379`],
    ['REDIS_URL', () => 'not-a-url'],
    ['DATABASE_REPLICA_URL', () => `postgres://u:${PASSWORD}@[bad/x`],
  ];
  for (const [variable, value] of refusals) {
    it(`exits 1 on ${variable}=${value().replace(PASSWORD, '<password>')}, naming it and masking the password`, async () => {
      const run = startServer({ DATABASE_URL: database.url, [variable]: value() });
      expect(await run.exited).toBe(1);
      const output = run.output();
      expect(output).toContain(`Invalid configuration: ${variable}`);
      expectNoSecret(output);
    });
  }

  it('exits non-zero when PostgreSQL is unreachable, naming where it looked', async () => {
    const port = await freePort(); // closed again: nothing listens there
    const run = startServer({ DATABASE_URL: `postgres://inventory:${PASSWORD}@127.0.0.1:${port}/inventory` });
    expect(await run.exited).not.toBe(0);
    const output = run.output();
    expect(output).toContain(`cannot prepare the PostgreSQL database at 127.0.0.1:${port}/inventory`);
    expectNoSecret(output);
  });

  it('names the Redis address (never its password) while Redis is unreachable, and in readiness', async () => {
    const port = await freePort();
    const run = startServer({ DATABASE_URL: database.url, REDIS_URL: `redis://default:${PASSWORD}@127.0.0.1:${port}` });
    try {
      await run.waitFor(new RegExp(`Redis at 127\\.0\\.0\\.1:${port} is unreachable at start`));
      const listening = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/;
      await run.waitFor(listening);
      const url = listening.exec(run.output())![1]!;
      expect((await fetch(`${url}/health/ready`)).status).toBe(503);
      await run.waitFor(new RegExp(`not ready: Redis at 127\\.0\\.0\\.1:${port} unreachable`));
      // The Authorization header of a rejected request is not logged either.
      expect((await fetch(`${url}/admin/reconciliation`, { headers: { authorization: `Bearer ${API_SECRET}x` } })).status).toBe(401);
    } finally {
      run.kill();
    }
    expect(await run.exited).toBe(0);
    expectNoSecret(run.output());
  });

  it('names the read replica by its address (never its password) while it is down, and stays ready', async () => {
    const port = await freePort();
    const run = startServer({ DATABASE_URL: database.url, DATABASE_REPLICA_URL: `postgres://u:${PASSWORD}@127.0.0.1:${port}/inventory` });
    try {
      await run.waitFor(new RegExp(`"replica":"127\\.0\\.0\\.1:${port}/inventory".*read replica down, reads go to the primary: unreachable`));
      const listening = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/;
      await run.waitFor(listening);
      const url = listening.exec(run.output())![1]!;
      expect((await fetch(`${url}/health/ready`)).status).toBe(200);
    } finally {
      run.kill();
    }
    expect(await run.exited).toBe(0);
    expectNoSecret(run.output());
  });
});
