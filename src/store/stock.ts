import type pg from 'pg';

/** Reads of the stock table. Writes go through the BatchWriter. */

type Db = pg.Pool | pg.PoolClient;

export interface StockRow {
  itemId: string;
  location: string;
  onHand: number;
  safetyStock: number;
}

/** Every item that has a stock row. */
export async function findStockedItemIds(db: Db): Promise<string[]> {
  const { rows } = await db.query<{ item_id: string }>('SELECT DISTINCT item_id FROM stock');
  return rows.map((r) => r.item_id);
}

/** On-hand and safety stock per (item, location) of the given items, or of every item. */
export async function findStock(db: Db, items?: readonly string[]): Promise<StockRow[]> {
  const columns = 'SELECT item_id, location, on_hand, safety_stock FROM stock';
  const { rows } = await db.query<{ item_id: string; location: string; on_hand: number; safety_stock: number }>(
    items ? `${columns} WHERE item_id = ANY($1)` : columns,
    items ? [items] : [],
  );
  return rows.map((r) => ({ itemId: r.item_id, location: r.location, onHand: r.on_hand, safetyStock: r.safety_stock }));
}
