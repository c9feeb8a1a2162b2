import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Keys } from '../../src/redis/keys.js';
import { stockField } from '../../src/redis/layout.js';
import { freePort } from '../helpers/ports.js';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres.js';
import { testRedisUrl } from '../helpers/servers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(() => database.drop());

async function waitReady(url: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const ok = await fetch(`${url}/health/ready`).then((r) => r.ok, () => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the server never became ready');
}

describe('graceful shutdown (SIGTERM)', () => {
  it('finishes the requests in flight, records every one it acknowledged, and exits 0', async () => {
    const port = await freePort();
    const prefix = `shutdown-${randomBytes(4).toString('hex')}:`;
    const url = `http://127.0.0.1:${port}`;
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
      cwd: ROOT,
      env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', DATABASE_URL: database.url, REDIS_KEY_PREFIX: prefix, LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const redis = new Redis(testRedisUrl());
    try {
      await waitReady(url);
      const item = `sku-${randomBytes(4).toString('hex')}`;
      await fetch(`${url}/items/${item}/stock`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ quantity: 1000 }),
      });

      const reserve = (n: number) =>
        fetch(`${url}/reservations`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': `shutdown-${n}` },
          body: JSON.stringify({ lines: [{ itemId: item, quantity: 1 }] }),
        }).then(
          async (r) => ({ status: r.status, type: r.headers.get('content-type') ?? '', body: (await r.json()) as { id?: string } }),
          () => null, // refused once the server stopped listening: never reached it
        );
      const first = Array.from({ length: 100 }, (_, n) => reserve(n));
      await new Promise((r) => setTimeout(r, 5));
      child.kill('SIGTERM');
      const late = Array.from({ length: 100 }, (_, n) => reserve(100 + n));
      const answers = [...(await Promise.all(first)), ...(await Promise.all(late))];

      expect(await exited, stderr).toBe(0);
      const created = answers.filter((a) => a?.status === 201);
      expect(created.length).toBeGreaterThan(0);
      for (const a of answers) {
        if (a === null || a.status === 201) continue;
        expect(a.status).toBe(503);
        expect(a.type).toContain('application/problem+json');
      }

      // Every acknowledged reservation is committed; nothing unacknowledged is held.
      const db = new pg.Client({ connectionString: database.url });
      await db.connect();
      const { rows } = await db.query<{ id: string }>('SELECT id FROM reservations');
      const { rows: stock } = await db.query<{ reserved: string }>('SELECT reserved FROM stock WHERE item_id = $1', [item]);
      await db.end();
      expect(new Set(rows.map((r) => r.id))).toEqual(new Set(created.map((a) => a!.body.id)));
      expect(Number(stock[0]!.reserved)).toBe(created.length);
      expect(Number(await redis.hget(new Keys(prefix).item(item).stock, stockField('reserved', 'default')))).toBe(created.length);
    } finally {
      child.kill('SIGKILL');
      const stream = redis.scanStream({ match: `${prefix}*` });
      for await (const keys of stream as AsyncIterable<string[]>) if (keys.length) await redis.unlink(...keys);
      redis.disconnect();
    }
  }, 60_000);
});
