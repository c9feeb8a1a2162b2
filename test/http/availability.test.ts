import { describe, expect, it } from 'vitest';
import { newItem } from '../helpers/app.js';
import { expectAvailability, expectInvalidFields, expectProblem, useHttpApp } from '../helpers/api.js';

// api.md, "Availability".
const { api } = useHttpApp();

describe('GET /items/{itemId}/availability', () => {
  it('answers the exact document for one location', async () => {
    const item = newItem();
    await api.stock(item, 100);
    await api.hold({ lines: [{ itemId: item, quantity: 7 }] });
    const res = await api.availability(item);
    expect(expectAvailability(res)).toEqual({
      itemId: item,
      onHand: 100,
      reserved: 7,
      safetyStock: 0,
      available: 93,
      availableHighPriority: 93,
      locations: [{ location: 'default', onHand: 100, reserved: 7, safetyStock: 0, available: 93, availableHighPriority: 93 }],
    });
  });

  it('lists every location sorted by name, with top-level figures the sums of the location figures', async () => {
    const item = newItem();
    for (const [location, quantity] of [['wh-2', 20], ['default', 5], ['A-1', 1], ['wh-10', 0]] as const) {
      await api.stock(item, quantity, location);
    }
    await api.hold({
      lines: [
        { itemId: item, location: 'wh-2', quantity: 6 },
        { itemId: item, quantity: 5 },
      ],
    });
    expect(await api.figures(item)).toEqual({
      itemId: item,
      onHand: 26,
      reserved: 11,
      safetyStock: 0,
      available: 15,
      availableHighPriority: 15,
      locations: [
        { location: 'A-1', onHand: 1, reserved: 0, safetyStock: 0, available: 1, availableHighPriority: 1 },
        { location: 'default', onHand: 5, reserved: 5, safetyStock: 0, available: 0, availableHighPriority: 0 },
        { location: 'wh-10', onHand: 0, reserved: 0, safetyStock: 0, available: 0, availableHighPriority: 0 },
        { location: 'wh-2', onHand: 20, reserved: 6, safetyStock: 0, available: 14, availableHighPriority: 14 },
      ],
    });
  });

  it('floors available at 0 per location, so the top-level available is not onHand − reserved', async () => {
    const item = newItem();
    await api.stock(item, 5, 'wh-a');
    await api.stock(item, 10, 'wh-b');
    await api.hold({ lines: [{ itemId: item, location: 'wh-a', quantity: 5 }] });
    await api.stock(item, 2, 'wh-a'); // a count found units missing
    expect(await api.figures(item)).toEqual({
      itemId: item,
      onHand: 12,
      reserved: 5,
      safetyStock: 0,
      available: 10,
      availableHighPriority: 10,
      locations: [
        { location: 'wh-a', onHand: 2, reserved: 5, safetyStock: 0, available: 0, availableHighPriority: 0 },
        { location: 'wh-b', onHand: 10, reserved: 0, safetyStock: 0, available: 10, availableHighPriority: 10 },
      ],
    });
  });

  it('counts only pending holds: released and confirmed units are not reserved', async () => {
    const item = newItem();
    await api.stock(item, 10);
    const a = await api.hold({ lines: [{ itemId: item, quantity: 2 }] });
    const b = await api.hold({ lines: [{ itemId: item, quantity: 3 }] });
    await api.hold({ lines: [{ itemId: item, quantity: 1 }] });
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 6, available: 4 });
    expect((await api.release(a.id)).status).toBe(200);
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 4, available: 6 });
    expect((await api.confirm(b.id)).status).toBe(200);
    expect(await api.at(item)).toEqual({ onHand: 7, reserved: 1, available: 6 });
  });

  it('reports an item stocked with 0 units (it exists)', async () => {
    const item = newItem();
    await api.stock(item, 0);
    expect(await api.figures(item)).toEqual({
      itemId: item,
      onHand: 0,
      reserved: 0,
      safetyStock: 0,
      available: 0,
      availableHighPriority: 0,
      locations: [{ location: 'default', onHand: 0, reserved: 0, safetyStock: 0, available: 0, availableHighPriority: 0 }],
    });
  });

  it('answers 404 item_not_found for an item never stocked', async () => {
    expectProblem(await api.availability(newItem()), 'item_not_found');
  });

  it('answers 404 item_not_found after a rejected PUT for a new item (nothing was created)', async () => {
    const item = newItem();
    expectInvalidFields(await api.putStock(item, { quantity: -1 }), 'quantity');
    expectProblem(await api.availability(item), 'item_not_found');
  });

  it('answers 400 validation_failed (not 404) for an itemId outside the alphabet', async () => {
    for (const bad of ['sku%20x', 'sku!', 'sku%2F1', '%C3%A9']) expectInvalidFields(await api.availability(bad), 'itemId');
  });
});
