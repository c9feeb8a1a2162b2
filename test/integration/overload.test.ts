import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { newItem, newKey } from '../helpers/app.js';
import { expectProblem, reservationOf, useHttpApp } from '../helpers/api.js';
import { waitFor } from '../helpers/wait.js';

const MAX_QUEUE = 3;

const { t, api } = useHttpApp({ WRITER_MAX_QUEUE: MAX_QUEUE, RECONCILE_INTERVAL_MS: 0 });

const reserve = (item: string, key: string) => api.reserve({ lines: [{ itemId: item, quantity: 1 }] }, key);
const availability = (item: string) => api.figures(item);

async function shedCounts(): Promise<Record<string, number>> {
  const { text } = await api.request({ method: 'GET', url: '/metrics' });
  return Object.fromEntries([...text.matchAll(/^irs_shed_total\{operation="(\w+)"\} (\d+)$/gm)].map(([, op, n]) => [op!, Number(n)]));
}

/** Until `check` holds (at most 2 s). */
const until = (check: () => Promise<boolean>, what: string) =>
  waitFor(what, async () => ((await check()) ? true : undefined), { timeoutMs: 2_000, intervalMs: 10 });

describe('WRITER_MAX_QUEUE', () => {
  it('refuses writes beyond it at once with 503 and Retry-After, changing nothing; the admitted ones record after the stall', async () => {
    const item = newItem();
    await api.stock(item, 100);
    const earlier: string[] = [];
    for (let i = 0; i <= MAX_QUEUE; i++) {
      const res = await reserve(item, newKey());
      expect(res.status).toBe(201);
      earlier.push(reservationOf(res).id);
    }
    const held = earlier.length;
    const settle = (id: string, action: 'confirm' | 'release') => api[action](id);

    // PostgreSQL stalls: the ledger is locked, so every batch waits inside its statement.
    const lock = new pg.Client({ connectionString: t.databaseUrl });
    const db = new pg.Client({ connectionString: t.databaseUrl });
    await Promise.all([lock.connect(), db.connect()]);
    let stalled = true;
    try {
      await lock.query('BEGIN');
      await lock.query('LOCK TABLE stock_movements IN SHARE MODE');
      // New reservations are admitted up to the bound: decided in Redis, waiting for their commit.
      const admittedReserves = Array.from({ length: MAX_QUEUE }, () => reserve(item, newKey()));
      await until(async () => (await availability(item)).reserved === held + MAX_QUEUE, 'the admitted reservations were decided');
      const shedKeys = Array.from({ length: 10 }, () => newKey());
      const shedReserves = await Promise.all(shedKeys.map((key) => reserve(item, key)));

      // Confirmations still are, up to twice the bound: a flood of new reservations does not stop checkouts.
      const admittedConfirms = earlier.slice(0, MAX_QUEUE).map((id) => settle(id, 'confirm'));
      await until(async () => (await availability(item)).onHand === 100 - MAX_QUEUE, 'the admitted confirmations were decided');
      const last = earlier[MAX_QUEUE]!;
      const shedOthers = await Promise.all([
        settle(last, 'confirm'),
        settle(last, 'release'),
        api.adjust(item, { delta: -5 }),
        api.putStock(item, { quantity: 1 }),
      ]);

      // Answered while PostgreSQL is still stalled: none of them waited for it.
      for (const res of [...shedReserves, ...shedOthers]) {
        expect(expectProblem(res, 'unavailable').detail).toMatch(/WRITER_MAX_QUEUE/);
        expect(res.headers['retry-after']).toBe('1');
      }
      expect(await shedCounts()).toEqual({ reserve: 10, confirm: 1, release: 1, stock: 2 });
      // Nothing of them reached Redis: it shows the earlier holds and the admitted requests' doing alone (three
      // more holds, three holds sold).
      expect(await availability(item)).toMatchObject({ onHand: 100 - MAX_QUEUE, reserved: held + MAX_QUEUE - MAX_QUEUE });

      await lock.query('ROLLBACK');
      stalled = false;
      for (const res of await Promise.all(admittedReserves)) expect(res.status).toBe(201);
      for (const res of await Promise.all(admittedConfirms)) expect(res.body).toMatchObject({ status: 'confirmed' });

      // PostgreSQL has what was admitted and nothing of what was refused.
      const { rows: reservations } = await db.query<{ id: string; status: string }>(
        `SELECT r.id, r.status FROM reservations r JOIN reservation_lines l ON l.reservation_id = r.id WHERE l.item_id = $1`,
        [item],
      );
      expect(reservations).toHaveLength(held + MAX_QUEUE);
      expect(reservations.find((r) => r.id === last)?.status).toBe('pending');
      expect(reservations.filter((r) => r.status === 'confirmed').map((r) => r.id).sort()).toEqual(earlier.slice(0, MAX_QUEUE).sort());
      const { rows: stock } = await db.query('SELECT on_hand::int, reserved::int FROM stock WHERE item_id = $1', [item]);
      expect(stock).toEqual([{ on_hand: 100 - MAX_QUEUE, reserved: held }]);
      const { rows: ledger } = await db.query<{ kind: string; n: number }>(
        'SELECT kind, count(*)::int AS n FROM stock_movements WHERE item_id = $1 GROUP BY kind ORDER BY kind',
        [item],
      );
      expect(ledger).toEqual([
        { kind: 'confirm', n: MAX_QUEUE },
        { kind: 'reserve', n: held + MAX_QUEUE },
        { kind: 'set', n: 1 },
      ]);

      // A refused request bound nothing: its retry, with the same key, is served as a first request.
      for (const key of shedKeys.slice(0, 3)) expect((await reserve(item, key)).status).toBe(201);
      expect((await settle(last, 'confirm')).body).toMatchObject({ status: 'confirmed' });
    } finally {
      if (stalled) await lock.query('ROLLBACK').catch(() => {});
      await Promise.all([lock.end(), db.end()]);
    }
  });
});
