import { describe, expect, it } from 'vitest';
import { newItem } from '../helpers/app.js';
import { expectAvailability, expectInvalidFields, expectProblem, idOfLength, useHttpApp } from '../helpers/api.js';

// api.md, "Stock (operator endpoints)" and the stock rows of "Identifiers and limits".
const { api } = useHttpApp();

const MAX_STOCK = 1_000_000_000;

describe('PUT /items/{itemId}/stock', () => {
  it('creates the item at "default" when location is omitted and answers the availability document', async () => {
    const item = newItem();
    const res = await api.putStock(item, { quantity: 100 });
    expect(expectAvailability(res)).toEqual({
      itemId: item,
      onHand: 100,
      reserved: 0,
      safetyStock: 0,
      available: 100,
      availableHighPriority: 100,
      locations: [{ location: 'default', onHand: 100, reserved: 0, safetyStock: 0, available: 100, availableHighPriority: 100 }],
    });
    expect(await api.figures(item)).toEqual(res.body);
  });

  it('sets an absolute quantity (not a delta) and creates further locations', async () => {
    const item = newItem();
    await api.stock(item, 10, 'wh-1');
    await api.stock(item, 3, 'wh-1');
    const doc = await api.stock(item, 7, 'wh-2');
    expect(doc).toEqual({
      itemId: item,
      onHand: 10,
      reserved: 0,
      safetyStock: 0,
      available: 10,
      availableHighPriority: 10,
      locations: [
        { location: 'wh-1', onHand: 3, reserved: 0, safetyStock: 0, available: 3, availableHighPriority: 3 },
        { location: 'wh-2', onHand: 7, reserved: 0, safetyStock: 0, available: 7, availableHighPriority: 7 },
      ],
    });
  });

  it('accepts quantity 0 and 1,000,000,000', async () => {
    const item = newItem();
    expect((await api.stock(item, 0)).locations).toEqual([{ location: 'default', onHand: 0, reserved: 0, safetyStock: 0, available: 0, availableHighPriority: 0 }]);
    expect((await api.stock(item, MAX_STOCK)).onHand).toBe(MAX_STOCK);
  });

  it('accepts a location of 64 characters of the whole alphabet', async () => {
    const item = newItem();
    const location = idOfLength(64, 'AZaz09._:-');
    expect((await api.stock(item, 5, location)).locations).toEqual([{ location, onHand: 5, reserved: 0, safetyStock: 0, available: 5, availableHighPriority: 5 }]);
  });

  it('accepts an itemId made of the whole alphabet', async () => {
    const item = `${newItem()}.AZaz09_:-`;
    expect((await api.stock(item, 1)).itemId).toBe(item);
  });

  it.each([
    ['quantity 1,000,000,001', { quantity: MAX_STOCK + 1 }, 'quantity'],
    ['negative quantity', { quantity: -1 }, 'quantity'],
    ['non-integer quantity', { quantity: 1.5 }, 'quantity'],
    ['quantity as a string', { quantity: '5' }, 'quantity'],
    ['quantity null', { quantity: null }, 'quantity'],
    ['missing quantity', { location: 'wh-1' }, 'quantity'],
    ['an unknown field', { quantity: 1, colour: 'red' }, 'colour'],
    ['location of 65 characters', { quantity: 1, location: 'l'.repeat(65) }, 'location'],
    ['empty location', { quantity: 1, location: '' }, 'location'],
    ['location outside the alphabet', { quantity: 1, location: 'wh 1' }, 'location'],
    ['location as a number', { quantity: 1, location: 7 }, 'location'],
  ])('rejects %s with 400 naming the field, and changes nothing', async (_label, body, field) => {
    const item = newItem();
    await api.stock(item, 4, 'wh-1');
    const before = await api.figures(item);
    expectInvalidFields(await api.putStock(item, body), field);
    expect(await api.figures(item)).toEqual(before);
  });

  it('rejects a body that is not an object (field body), and never creates the item', async () => {
    const item = newItem();
    for (const json of ['[]', '"x"', '5', 'null']) {
      const res = await api.request({
        method: 'PUT',
        url: `/items/${item}/stock`,
        headers: { 'content-type': 'application/json' },
        payload: json,
      });
      expectInvalidFields(res, 'body');
    }
    expectProblem(await api.availability(item), 'item_not_found');
  });

  it('accepts an itemId of 128 characters', async () => {
    const item = idOfLength(128, 'long');
    expect((await api.stock(item, 1)).itemId).toBe(item);
    expect((await api.figures(item)).onHand).toBe(1);
  });

  it('rejects an itemId of 129 characters with 400 itemId', async () => {
    expectInvalidFields(await api.putStock(idOfLength(129, 'long'), { quantity: 1 }), 'itemId');
  });

  it('rejects an itemId outside the alphabet with 400 itemId', async () => {
    for (const bad of ['sku%20one', 'sku*1', 'sk%C3%BC', 'sku%2C1']) {
      expectInvalidFields(await api.putStock(bad, { quantity: 1 }), 'itemId');
    }
  });
});

describe('POST /items/{itemId}/stock/adjustments', () => {
  it('adds and removes units by delta and answers the availability document', async () => {
    const item = newItem();
    await api.stock(item, 10, 'wh-1');
    const up = await api.adjust(item, { delta: 5, location: 'wh-1', reason: 'returned' });
    expect(expectAvailability(up)).toEqual({
      itemId: item,
      onHand: 15,
      reserved: 0,
      safetyStock: 0,
      available: 15,
      availableHighPriority: 15,
      locations: [{ location: 'wh-1', onHand: 15, reserved: 0, safetyStock: 0, available: 15, availableHighPriority: 15 }],
    });
    const down = expectAvailability(await api.adjust(item, { delta: -15, location: 'wh-1' }));
    expect(down.locations).toEqual([{ location: 'wh-1', onHand: 0, reserved: 0, safetyStock: 0, available: 0, availableHighPriority: 0 }]);
  });

  it('adjusts "default" when location is omitted, and leaves other locations alone', async () => {
    const item = newItem();
    await api.stock(item, 2);
    await api.stock(item, 9, 'wh-1');
    const doc = expectAvailability(await api.adjust(item, { delta: 3 }));
    expect(doc.locations).toEqual([
      { location: 'default', onHand: 5, reserved: 0, safetyStock: 0, available: 5, availableHighPriority: 5 },
      { location: 'wh-1', onHand: 9, reserved: 0, safetyStock: 0, available: 9, availableHighPriority: 9 },
    ]);
  });

  it('accepts |delta| = 1,000,000,000 both ways', async () => {
    const item = newItem();
    await api.stock(item, 0);
    expect(expectAvailability(await api.adjust(item, { delta: MAX_STOCK })).onHand).toBe(MAX_STOCK);
    expect(expectAvailability(await api.adjust(item, { delta: -MAX_STOCK })).onHand).toBe(0);
  });

  it('accepts a reason of 255 characters', async () => {
    const item = newItem();
    await api.stock(item, 1);
    expect(expectAvailability(await api.adjust(item, { delta: 1, reason: 'r'.repeat(255) })).onHand).toBe(2);
  });

  it.each([
    ['delta 0', { delta: 0 }, 'delta'],
    ['delta 1,000,000,001', { delta: MAX_STOCK + 1 }, 'delta'],
    ['delta -1,000,000,001', { delta: -MAX_STOCK - 1 }, 'delta'],
    ['a non-integer delta', { delta: 0.5 }, 'delta'],
    ['delta as a string', { delta: '-1' }, 'delta'],
    ['a missing delta', { reason: 'count' }, 'delta'],
    ['a reason of 256 characters', { delta: 1, reason: 'r'.repeat(256) }, 'reason'],
    ['an empty reason', { delta: 1, reason: '' }, 'reason'],
    ['a reason that is not a string', { delta: 1, reason: 42 }, 'reason'],
    ['location of 65 characters', { delta: 1, location: 'l'.repeat(65) }, 'location'],
    ['an unknown field', { delta: 1, note: 'x' }, 'note'],
  ])('rejects %s with 400 naming the field, and changes nothing', async (_label, body, field) => {
    const item = newItem();
    await api.stock(item, 50);
    const before = await api.figures(item);
    expectInvalidFields(await api.adjust(item, body), field);
    expect(await api.figures(item)).toEqual(before);
  });

  it('refuses a delta that would take on-hand below zero: 409 insufficient_stock naming the line, nothing changes', async () => {
    const item = newItem();
    await api.stock(item, 3, 'wh-1');
    const before = await api.figures(item);
    expectProblem(await api.adjust(item, { delta: -4, location: 'wh-1' }), 'insufficient_stock');
    expect(await api.figures(item)).toEqual(before);
  });

  it('answers 404 item_not_found for an item never stocked, and does not create it', async () => {
    const item = newItem();
    expectProblem(await api.adjust(item, { delta: 5 }), 'item_not_found');
    expectProblem(await api.availability(item), 'item_not_found');
  });

  it('answers 404 item_not_found for a location the item was never stocked at, and does not create it', async () => {
    const item = newItem();
    await api.stock(item, 5, 'wh-1');
    const before = await api.figures(item);
    expectProblem(await api.adjust(item, { delta: 5, location: 'wh-2' }), 'item_not_found');
    expectProblem(await api.adjust(item, { delta: 5 }), 'item_not_found');
    expect(await api.figures(item)).toEqual(before);
  });

  it('moves on-hand alongside existing holds: reserved stays, available follows', async () => {
    const item = newItem();
    await api.stock(item, 10);
    await api.hold({ lines: [{ itemId: item, quantity: 4 }] });
    const doc = expectAvailability(await api.adjust(item, { delta: -3, reason: 'damaged' }));
    expect(doc.locations).toEqual([{ location: 'default', onHand: 7, reserved: 4, safetyStock: 0, available: 3, availableHighPriority: 3 }]);
  });

  it('may take on-hand below what is reserved (never below zero): available reads 0', async () => {
    const item = newItem();
    await api.stock(item, 10);
    await api.hold({ lines: [{ itemId: item, quantity: 8 }] });
    const doc = expectAvailability(await api.adjust(item, { delta: -5, reason: 'count' }));
    expect(doc.locations).toEqual([{ location: 'default', onHand: 5, reserved: 8, safetyStock: 0, available: 0, availableHighPriority: 0 }]);
    expectProblem(await api.adjust(item, { delta: -6 }), 'insufficient_stock');
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 8, available: 0 });
  });
});
