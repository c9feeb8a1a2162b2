import { describe, expect, it } from 'vitest';
import { newItem } from '../helpers/app.js';
import { expectInvalidFields, expectProblem, expectReservation, useHttpApp } from '../helpers/api.js';
import { checkInvariants } from '../helpers/invariants.js';

// api.md, "Priority reservations and safety stock", and the `priority` and stock `safetyStock` rows of "Identifiers
// and limits".
const { t, api } = useHttpApp();

const MAX_STOCK = 1_000_000_000;

/** The ledger rows of an item's safety stock changes: kind and safety delta, oldest first. */
async function safetyRows(itemId: string): Promise<{ kind: string; onHand: number; safety: number }[]> {
  const { rows } = await t.app.runtime.db.query<{ kind: string; on_hand_delta: number; safety_delta: number }>(
    'SELECT kind, on_hand_delta, safety_delta FROM stock_movements WHERE item_id = $1 AND safety_delta <> 0 ORDER BY id',
    [itemId],
  );
  return rows.map((r) => ({ kind: r.kind, onHand: r.on_hand_delta, safety: r.safety_delta }));
}

const line = (itemId: string, quantity: number, location?: string) => (location ? { itemId, quantity, location } : { itemId, quantity });

describe('PUT /items/{itemId}/stock with safetyStock', () => {
  it('sets the safety stock with the quantity, and answers the availability document with both figures', async () => {
    const item = newItem();
    const doc = await api.safety(item, 50, 10);
    expect(doc).toEqual({
      itemId: item,
      onHand: 50,
      reserved: 0,
      safetyStock: 10,
      available: 40,
      availableHighPriority: 50,
      locations: [{ location: 'default', onHand: 50, reserved: 0, safetyStock: 10, available: 40, availableHighPriority: 50 }],
    });
    expect(await api.figures(item)).toEqual(doc);
  });

  it('accepts safetyStock 0 and 1,000,000,000, and a safety stock above on-hand (available reads 0)', async () => {
    const item = newItem();
    expect((await api.safety(item, 5, MAX_STOCK)).locations).toEqual([
      { location: 'default', onHand: 5, reserved: 0, safetyStock: MAX_STOCK, available: 0, availableHighPriority: 5 },
    ]);
    expect((await api.safety(item, 5, 0)).locations).toEqual([
      { location: 'default', onHand: 5, reserved: 0, safetyStock: 0, available: 5, availableHighPriority: 5 },
    ]);
  });

  it('keeps the safety stock when the field is omitted (0 for a new location), and sums it over locations', async () => {
    const item = newItem();
    expect((await api.stock(item, 8, 'wh-1')).safetyStock).toBe(0);
    await api.safety(item, 8, 3, 'wh-1');
    await api.stock(item, 20, 'wh-1');
    const doc = await api.stock(item, 6, 'wh-2');
    expect(doc).toMatchObject({ onHand: 26, safetyStock: 3, available: 23, availableHighPriority: 26 });
    expect(doc.locations).toEqual([
      { location: 'wh-1', onHand: 20, reserved: 0, safetyStock: 3, available: 17, availableHighPriority: 20 },
      { location: 'wh-2', onHand: 6, reserved: 0, safetyStock: 0, available: 6, availableHighPriority: 6 },
    ]);
    // An adjustment leaves it as well.
    await api.adjust(item, { delta: -5, location: 'wh-1' });
    expect((await api.figures(item)).locations[0]).toMatchObject({ onHand: 15, safetyStock: 3, available: 12 });
  });

  it.each([
    ['safetyStock -1', { quantity: 5, safetyStock: -1 }],
    ['safetyStock 1,000,000,001', { quantity: 5, safetyStock: MAX_STOCK + 1 }],
    ['a non-integer safetyStock', { quantity: 5, safetyStock: 2.5 }],
    ['safetyStock as a string', { quantity: 5, safetyStock: '3' }],
    ['safetyStock null', { quantity: 5, safetyStock: null }],
  ])('rejects %s with 400 naming safetyStock, and changes nothing', async (_label, body) => {
    const item = newItem();
    await api.safety(item, 9, 2);
    const before = await api.figures(item);
    expectInvalidFields(await api.putStock(item, body), 'safetyStock');
    expect(await api.figures(item)).toEqual(before);
    expect(await safetyRows(item)).toEqual([{ kind: 'set', onHand: 9, safety: 2 }]);
  });

  it('records every change of the safety stock in the ledger, and none when it is unchanged', async () => {
    const item = newItem();
    await api.stock(item, 10); // no safety stock: no safety row
    await api.safety(item, 10, 4); // only the safety stock changes: a row of its own kind
    await api.safety(item, 10, 4); // unchanged
    await api.stock(item, 12); // omitted: unchanged
    await api.safety(item, 15, 1); // both change: one row
    expect(await safetyRows(item)).toEqual([
      { kind: 'safety', onHand: 0, safety: 4 },
      { kind: 'set', onHand: 3, safety: -3 },
    ]);
    const { rows } = await t.app.runtime.db.query<{ safety_stock: number }>('SELECT safety_stock FROM stock WHERE item_id = $1', [item]);
    expect(rows).toEqual([{ safety_stock: 1 }]);
    await checkInvariants(t.app, [item]);
  });
});

describe('POST /reservations with priority', () => {
  it('defaults to normal and echoes the priority in the document, on create, read, confirm and release', async () => {
    const item = newItem();
    await api.stock(item, 10);
    const plain = await api.hold({ lines: [line(item, 1)] });
    expect(plain.priority).toBe('normal');
    const explicit = await api.hold({ lines: [line(item, 1)], priority: 'normal' });
    expect(explicit.priority).toBe('normal');
    const vip = await api.hold({ lines: [line(item, 1)], priority: 'high' });
    expect(vip.priority).toBe('high');
    expect(expectReservation(await api.get(vip.id), 200)).toEqual(vip);
    expect(expectReservation(await api.confirm(vip.id), 200)).toMatchObject({ status: 'confirmed', priority: 'high' });
    expect(expectReservation(await api.release(plain.id), 200)).toMatchObject({ status: 'released', priority: 'normal' });
    const { rows } = await t.app.runtime.db.query<{ id: string; priority: string }>(
      'SELECT id, priority FROM reservations WHERE id = ANY($1::uuid[]) ORDER BY id',
      [[plain.id, explicit.id, vip.id]],
    );
    expect(new Map(rows.map((r) => [r.id, r.priority]))).toEqual(
      new Map([
        [plain.id, 'normal'],
        [explicit.id, 'normal'],
        [vip.id, 'high'],
      ]),
    );
  });

  it.each([
    ['"low"', 'low'],
    ['null', null],
    ['"HIGH" (case matters)', 'HIGH'],
    ['a number', 1],
    ['an empty string', ''],
  ])('rejects priority %s with 400 naming priority, and holds nothing', async (_label, priority) => {
    const item = newItem();
    await api.stock(item, 10);
    expectInvalidFields(await api.reserve({ lines: [line(item, 1)], priority }), 'priority');
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 0, available: 10 });
  });

  it('a normal reservation never takes the safety stock; a high-priority one may take all that is not reserved', async () => {
    const item = newItem();
    await api.safety(item, 10, 3);
    // Normal: 7 may be taken, the 8th is refused, told what a normal reservation could take.
    const short = expectProblem(await api.reserve({ lines: [line(item, 8)] }), 'insufficient_stock');
    expect(short.lines).toEqual([{ itemId: item, location: 'default', requested: 8, available: 7 }]);
    await api.hold({ lines: [line(item, 5)] });
    const shortAgain = expectProblem(await api.reserve({ lines: [line(item, 3)] }), 'insufficient_stock');
    expect(shortAgain.lines).toEqual([{ itemId: item, location: 'default', requested: 3, available: 2 }]);
    await api.hold({ lines: [line(item, 2)] });
    expectProblem(await api.reserve({ lines: [line(item, 1)] }), 'insufficient_stock');
    expect(await api.figures(item)).toMatchObject({ onHand: 10, reserved: 7, safetyStock: 3, available: 0, availableHighPriority: 3 });

    // High: the safety stock is its to take; beyond it, refused, told what a high-priority reservation could take.
    const highShort = expectProblem(await api.reserve({ lines: [line(item, 4)], priority: 'high' }), 'insufficient_stock');
    expect(highShort.lines).toEqual([{ itemId: item, location: 'default', requested: 4, available: 3 }]);
    await api.hold({ lines: [line(item, 3)], priority: 'high' });
    expect(await api.figures(item)).toMatchObject({ onHand: 10, reserved: 10, safetyStock: 3, available: 0, availableHighPriority: 0 });
    await checkInvariants(t.app, [item], { holdsWithinSupply: true });
  });

  it('applies the rule per location, and names each short line with what its priority could take', async () => {
    const item = newItem();
    await api.safety(item, 4, 4, 'wh-1');
    await api.safety(item, 6, 1, 'wh-2');
    const refused = expectProblem(await api.reserve({ lines: [line(item, 1, 'wh-1'), line(item, 6, 'wh-2')] }), 'insufficient_stock');
    expect(refused.lines).toEqual([
      { itemId: item, location: 'wh-1', requested: 1, available: 0 },
      { itemId: item, location: 'wh-2', requested: 6, available: 5 },
    ]);
    await api.hold({ lines: [line(item, 4, 'wh-1'), line(item, 6, 'wh-2')], priority: 'high' });
    expect((await api.figures(item)).locations).toEqual([
      { location: 'wh-1', onHand: 4, reserved: 4, safetyStock: 4, available: 0, availableHighPriority: 0 },
      { location: 'wh-2', onHand: 6, reserved: 6, safetyStock: 1, available: 0, availableHighPriority: 0 },
    ]);
  });

  it('releasing a hold gives the units back to whichever priority may take them', async () => {
    const item = newItem();
    await api.safety(item, 5, 2);
    const vip = await api.hold({ lines: [line(item, 5)], priority: 'high' });
    expect(await api.figures(item)).toMatchObject({ available: 0, availableHighPriority: 0 });
    await api.release(vip.id);
    expect(await api.figures(item)).toMatchObject({ reserved: 0, available: 3, availableHighPriority: 5 });
    await api.hold({ lines: [line(item, 3)] });
  });

  it('a safety stock raised above what normal reservations already hold leaves those holds, and refuses new normal ones', async () => {
    const item = newItem();
    await api.stock(item, 10);
    await api.hold({ lines: [line(item, 8)] });
    expect(await api.safety(item, 10, 5)).toMatchObject({ reserved: 8, safetyStock: 5, available: 0, availableHighPriority: 2 });
    expectProblem(await api.reserve({ lines: [line(item, 1)] }), 'insufficient_stock');
    await api.hold({ lines: [line(item, 2)], priority: 'high' });
  });
});
