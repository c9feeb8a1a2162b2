import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { expectProblem, useHttpApp } from '../helpers/api.js';
import { newItem } from '../helpers/app.js';
import { waitForLockWait } from '../helpers/sessions.js';

const { t, api } = useHttpApp({ RECONCILE_INTERVAL_MS: 0 });

describe('stock increases are offered only once PostgreSQL recorded them', () => {
  it('keeps an increase out of availability until its commit, so a crash before it can never oversell', async () => {
    const item = newItem();
    await api.stock(item, 10);
    const lock = new pg.Client({ connectionString: t.databaseUrl });
    const watcher = new pg.Client({ connectionString: t.databaseUrl });
    await Promise.all([lock.connect(), watcher.connect()]);
    try {
      await lock.query('BEGIN');
      await lock.query('LOCK TABLE stock_movements IN EXCLUSIVE MODE');
      const adjusting = api.adjust(item, { delta: 5, reason: 'restock' });
      await waitForLockWait(watcher, 'the increase to wait on the ledger');
      // Decided, not yet recorded: the 5 units are not offered (a process dying now leaves Redis short, never long).
      expect(await api.figures(item)).toMatchObject({ onHand: 10, available: 10 });
      const reserve = await api.reserve({ lines: [{ itemId: item, quantity: 11 }] }, `k-${item}`);
      expectProblem(reserve, 'insufficient_stock');
      await lock.query('COMMIT');
      const adjusted = await adjusting;
      expect(adjusted.status).toBe(200);
      expect(adjusted.body).toMatchObject({ onHand: 15, available: 15 });
      expect(await api.figures(item)).toMatchObject({ onHand: 15, available: 15 });
    } finally {
      await lock.query('ROLLBACK').catch(() => {});
      await Promise.all([lock.end(), watcher.end()]);
    }
  });

  it('lets concurrent absolute sets land on the value set, not on their sum', async () => {
    const item = newItem();
    await api.stock(item, 80);
    const answers = await Promise.all([1, 2, 3].map(() => api.putStock(item, { quantity: 100 })));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200]);
    expect(await api.figures(item)).toMatchObject({ onHand: 100 });
    const { rows } = await t.app.runtime.db.query<{ on_hand: number }>('SELECT on_hand FROM stock WHERE item_id = $1', [item]);
    expect(rows[0]!.on_hand).toBe(100);
  });
});
