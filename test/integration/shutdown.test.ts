import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Keys } from '../../src/redis/keys.js';
import { stockField } from '../../src/redis/layout.js';
import { ApiProcess } from '../drills/api-process.js';
import { Api, reservationOf, type Answer } from '../helpers/api.js';
import { newItem } from '../helpers/app.js';
import { freePort } from '../helpers/ports.js';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres.js';
import { testRedisUrl } from '../helpers/servers.js';
import { ANY_NODE, waitForLockWait } from '../helpers/sessions.js';
import { waitFor } from '../helpers/wait.js';

let database: TestDatabase;
let logDir: string;
beforeAll(async () => {
  database = await createTestDatabase();
  logDir = mkdtempSync(path.join(os.tmpdir(), 'irs-shutdown-'));
});
afterAll(async () => {
  await database.drop();
  rmSync(logDir, { recursive: true, force: true });
});

/** Whether a TCP connection to `port` is accepted (false once the server stopped listening). */
const accepts = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });

describe('graceful shutdown (SIGTERM)', () => {
  it('finishes the requests in flight, records every one it acknowledged, and exits 0', async () => {
    const prefix = `shutdown-${randomBytes(4).toString('hex')}:`;
    const port = await freePort();
    const server = new ApiProcess(
      'api',
      port,
      { DATABASE_URL: database.url, REDIS_URL: testRedisUrl(), REDIS_KEY_PREFIX: prefix, LOG_LEVEL: 'warn' },
      path.join(logDir, 'api.log'),
    );
    const redis = new Redis(testRedisUrl());
    const locker = new pg.Client({ connectionString: database.url });
    const watcher = new pg.Client({ connectionString: database.url });
    try {
      await server.start();
      await Promise.all([locker.connect(), watcher.connect()]);
      const api = Api.at(server.url);
      const item = newItem();
      await api.stock(item, 1000);
      const reservedInRedis = async () => Number(await redis.hget(new Keys(prefix).item(item).stock, stockField('reserved', 'default')));
      /** A reservation's answer, or null if the request never reached the server (refused once it stopped listening). */
      const reserve = (): Promise<Answer | null> => api.reserve({ lines: [{ itemId: item, quantity: 1 }] }).catch(() => null);

      // PostgreSQL holds the item's row, so a batch recording these reservations waits inside its statement.
      await locker.query('BEGIN');
      await locker.query('SELECT 1 FROM stock WHERE item_id = $1 FOR UPDATE', [item]);
      let answered = 0;
      const inFlight = Array.from({ length: 100 }, () => reserve().finally(() => answered++));
      // Provably in flight: every one decided in Redis, a batch of them blocked in PostgreSQL, none answered.
      await waitFor('the 100 reservations to be decided in Redis', async () => ((await reservedInRedis()) === 100 ? true : undefined));
      await waitForLockWait(watcher, "the node's batch to block on the row", { applicationName: ANY_NODE });
      expect(answered).toBe(0);

      const stopped = server.stop();
      await waitFor('the server to stop accepting connections', async () => ((await accepts(port)) ? undefined : true));
      // New work is turned away while the requests in flight are still waiting for their commit.
      const late = await Promise.all(Array.from({ length: 100 }, () => reserve()));
      for (const a of late) {
        if (a === null) continue;
        expect(a.status).toBe(503);
        expect(a.headers['content-type']).toContain('application/problem+json');
      }
      expect(answered).toBe(0);

      await locker.query('COMMIT');
      const finished = await Promise.all(inFlight);
      const exit = await stopped;
      expect(exit, server.tail()).toEqual({ code: 0, signal: null });
      // Every request that was in flight finished with its reservation.
      expect(finished.map((a) => a?.status)).toEqual(Array(100).fill(201));
      const created = [...finished, ...late].filter((a): a is Answer => a?.status === 201).map((a) => reservationOf(a).id);
      expect(created).toHaveLength(100);

      // Every acknowledged reservation is committed; nothing unacknowledged is held.
      const { rows } = await watcher.query<{ id: string }>('SELECT id FROM reservations');
      const { rows: stock } = await watcher.query<{ reserved: string }>('SELECT reserved FROM stock WHERE item_id = $1', [item]);
      expect(new Set(rows.map((r) => r.id))).toEqual(new Set(created));
      expect(Number(stock[0]!.reserved)).toBe(created.length);
      expect(await reservedInRedis()).toBe(created.length);
    } finally {
      await locker.query('ROLLBACK').catch(() => undefined);
      await Promise.all([locker.end(), watcher.end()]).catch(() => undefined);
      await server.kill9();
      const stream = redis.scanStream({ match: `${prefix}*` });
      for await (const keys of stream as AsyncIterable<string[]>) if (keys.length) await redis.unlink(...keys);
      redis.disconnect();
    }
  }, 60_000);
});
