import { describe, expect, it } from 'vitest';
import { newItem } from '../helpers/app.js';
import {
  expectInvalidFields,
  expectProblem,
  expectReservation,
  range,
  useHttpApp,
  waitReady,
  wipeRedisState,
  type ReserveBody,
} from '../helpers/api.js';
import { untilTime } from '../helpers/wait.js';

// api.md, "Allocation across locations (multi-warehouse)" and the `allocation.locations` row of the limits.
const { t, api } = useHttpApp();

/** A fresh item stocked with `units` per location, in the order given. */
async function item(units: Record<string, number>): Promise<string> {
  const id = newItem('alloc');
  for (const [location, quantity] of Object.entries(units)) await api.stock(id, quantity, location);
  return id;
}

/** Reserved units per location of an item. */
async function reservedOf(itemId: string): Promise<Record<string, number>> {
  const doc = await api.figures(itemId);
  return Object.fromEntries(doc.locations.map((l) => [l.location, l.reserved]));
}

/** On-hand units per location of an item. */
async function onHandOf(itemId: string): Promise<Record<string, number>> {
  const doc = await api.figures(itemId);
  return Object.fromEntries(doc.locations.map((l) => [l.location, l.onHand]));
}

const one = (itemId: string, quantity: number, allocation: ReserveBody['allocation']): ReserveBody => ({
  lines: [{ itemId, quantity }],
  allocation,
});

describe('allocation: validation (400 validation_failed naming the field, nothing held)', () => {
  const locations = (n: number) => range(n).map((i) => `wh-${i}`);

  it('locations: 1 and 32 distinct are accepted; 0 and 33 are not', async () => {
    const sku = await item({ 'wh-0': 5 });
    for (const n of [1, 32]) expectReservation(await api.reserve(one(sku, 1, { strategy: 'ordered', locations: locations(n) })), 201);
    for (const n of [0, 33]) {
      expectInvalidFields(await api.reserve(one(sku, 1, { strategy: 'ordered', locations: locations(n) })), 'allocation.locations');
    }
    expect(await reservedOf(sku)).toEqual({ 'wh-0': 2 });
  });

  it('locations: a repeated location is refused', async () => {
    const sku = await item({ 'wh-0': 5 });
    const res = await api.reserve(one(sku, 1, { strategy: 'most_available', locations: ['wh-0', 'wh-1', 'wh-0'] }));
    expectInvalidFields(res, 'allocation.locations');
    expect(await reservedOf(sku)).toEqual({ 'wh-0': 0 });
  });

  it('locations: each is a location identifier', async () => {
    const sku = await item({ 'wh-0': 5 });
    expectInvalidFields(await api.reserve(one(sku, 1, { strategy: 'ordered', locations: ['wh-0', 'wh 1'] })), 'allocation.locations[1]');
    expectInvalidFields(await api.reserve(one(sku, 1, { strategy: 'ordered', locations: ['x'.repeat(65)] })), 'allocation.locations[0]');
  });

  it('locations are required for ordered and single_location, optional for most_available', async () => {
    const sku = await item({ 'wh-0': 5 });
    expectInvalidFields(await api.reserve(one(sku, 1, { strategy: 'ordered' })), 'allocation.locations');
    expectInvalidFields(await api.reserve(one(sku, 1, { strategy: 'single_location' })), 'allocation.locations');
    expect(await reservedOf(sku)).toEqual({ 'wh-0': 0 });
    expectReservation(await api.reserve(one(sku, 1, { strategy: 'most_available' })), 201);
  });

  it('split: true with single_location is refused; split: false with it is accepted', async () => {
    const sku = await item({ 'wh-0': 5 });
    const res = await api.reserve(one(sku, 1, { strategy: 'single_location', locations: ['wh-0'], split: true }));
    expectInvalidFields(res, 'allocation.split');
    expect(await reservedOf(sku)).toEqual({ 'wh-0': 0 });
    expectReservation(await api.reserve(one(sku, 1, { strategy: 'single_location', locations: ['wh-0'], split: false })), 201);
  });

  it('an allocated item may appear in one line only (field lines[i].itemId of the later line)', async () => {
    const sku = await item({ 'wh-0': 5, 'wh-1': 5 });
    const allocation = { strategy: 'most_available' };
    const twice = { lines: [{ itemId: sku, quantity: 1 }, { itemId: sku, quantity: 2 }], allocation };
    expectInvalidFields(await api.reserve(twice), 'lines[1].itemId');
    const fixedFirst = { lines: [{ itemId: sku, quantity: 1, location: 'wh-0' }, { itemId: sku, quantity: 2 }], allocation };
    expectInvalidFields(await api.reserve(fixedFirst), 'lines[1].itemId');
    const allocatedFirst = { lines: [{ itemId: sku, quantity: 1 }, { itemId: sku, quantity: 2, location: 'wh-1' }], allocation };
    expectInvalidFields(await api.reserve(allocatedFirst), 'lines[1].itemId');
    expect(await reservedOf(sku)).toEqual({ 'wh-0': 0, 'wh-1': 0 });
    // The same item at two fixed locations is two pairs, as without allocation.
    const fixedTwice = { lines: [{ itemId: sku, quantity: 1, location: 'wh-0' }, { itemId: sku, quantity: 2, location: 'wh-1' }], allocation };
    expectReservation(await api.reserve(fixedTwice), 201);
  });

  it('strategy: required, one of the three; unknown fields and wrong types are refused', async () => {
    const sku = await item({ 'wh-0': 5 });
    const cases: [unknown, string][] = [
      [{ locations: ['wh-0'] }, 'allocation.strategy'],
      [{ strategy: 'nearest', locations: ['wh-0'] }, 'allocation.strategy'],
      [{ strategy: 'ORDERED', locations: ['wh-0'] }, 'allocation.strategy'],
      [{ strategy: 'ordered', locations: ['wh-0'], priority: 1 }, 'allocation.priority'],
      [{ strategy: 'ordered', locations: ['wh-0'], split: 'yes' }, 'allocation.split'],
      [{ strategy: 'ordered', locations: 'wh-0' }, 'allocation.locations'],
      ['ordered', 'allocation'],
      [null, 'allocation'],
    ];
    for (const [allocation, field] of cases) {
      expectInvalidFields(await api.reserve({ lines: [{ itemId: sku, quantity: 1 }], allocation }), field);
    }
    expect(await reservedOf(sku)).toEqual({ 'wh-0': 0 });
  });
});

describe('allocation: where each strategy holds a line', () => {
  it('without allocation nothing changes: a line without location is held at "default"', async () => {
    const sku = await item({ default: 3, 'wh-1': 9 });
    const doc = await api.hold({ lines: [{ itemId: sku, quantity: 2 }] });
    expect(doc.lines).toEqual([{ itemId: sku, location: 'default', quantity: 2 }]);
    expect(doc.allocation).toBeNull();
  });

  it('ordered: the first candidate that can hold the whole line', async () => {
    const sku = await item({ 'wh-a': 2, 'wh-b': 5, 'wh-c': 9 });
    const doc = await api.hold(one(sku, 4, { strategy: 'ordered', locations: ['wh-a', 'wh-b', 'wh-c'] }));
    expect(doc.lines).toEqual([{ itemId: sku, location: 'wh-b', quantity: 4 }]);
    expect(await reservedOf(sku)).toEqual({ 'wh-a': 0, 'wh-b': 4, 'wh-c': 0 });
  });

  it('ordered + split: what each candidate has, in order, until covered (parts in allocation order)', async () => {
    const sku = await item({ 'wh-a': 2, 'wh-b': 0, 'wh-c': 9, 'wh-d': 4 });
    const doc = await api.hold(one(sku, 6, { strategy: 'ordered', locations: ['wh-d', 'wh-b', 'wh-a', 'wh-c'], split: true }));
    expect(doc.lines).toEqual([
      { itemId: sku, location: 'wh-d', quantity: 4 },
      { itemId: sku, location: 'wh-a', quantity: 2 },
    ]);
    expect(await reservedOf(sku)).toEqual({ 'wh-a': 2, 'wh-b': 0, 'wh-c': 0, 'wh-d': 4 });
  });

  it('ordered + split that one candidate covers is one entry', async () => {
    const sku = await item({ 'wh-a': 5, 'wh-b': 5 });
    const doc = await api.hold(one(sku, 5, { strategy: 'ordered', locations: ['wh-a', 'wh-b'], split: true }));
    expect(doc.lines).toEqual([{ itemId: sku, location: 'wh-a', quantity: 5 }]);
  });

  it('most_available: the candidate with the most available units', async () => {
    const sku = await item({ 'wh-a': 3, 'wh-b': 8, 'wh-c': 5 });
    const doc = await api.hold(one(sku, 1, { strategy: 'most_available', locations: ['wh-a', 'wh-c', 'wh-b'] }));
    expect(doc.lines).toEqual([{ itemId: sku, location: 'wh-b', quantity: 1 }]);
    // Available, not on-hand: holds count.
    await api.hold({ lines: [{ itemId: sku, quantity: 6, location: 'wh-b' }] });
    const next = await api.hold(one(sku, 1, { strategy: 'most_available', locations: ['wh-a', 'wh-b', 'wh-c'] }));
    expect(next.lines).toEqual([{ itemId: sku, location: 'wh-c', quantity: 1 }]);
  });

  it('most_available: a tie goes to the earlier candidate in locations', async () => {
    const sku = await item({ 'wh-a': 4, 'wh-b': 6, 'wh-c': 6 });
    const doc = await api.hold(one(sku, 1, { strategy: 'most_available', locations: ['wh-c', 'wh-a', 'wh-b'] }));
    expect(doc.lines).toEqual([{ itemId: sku, location: 'wh-c', quantity: 1 }]);
  });

  it('most_available without locations: every location the item is stocked at, a tie to the name first ascending', async () => {
    const sku = await item({ 'wh-z': 7, 'wh-m': 7, default: 2, 'wh-q': 1 });
    const doc = await api.hold(one(sku, 3, { strategy: 'most_available' }));
    expect(doc.lines).toEqual([{ itemId: sku, location: 'wh-m', quantity: 3 }]);
    const next = await api.hold(one(sku, 3, { strategy: 'most_available' }));
    expect(next.lines).toEqual([{ itemId: sku, location: 'wh-z', quantity: 3 }]);
  });

  it('most_available + split: the largest available first, ties by candidate order', async () => {
    const sku = await item({ 'wh-a': 2, 'wh-b': 3, 'wh-c': 3, 'wh-d': 1 });
    const doc = await api.hold(one(sku, 7, { strategy: 'most_available', locations: ['wh-a', 'wh-c', 'wh-d', 'wh-b'], split: true }));
    expect(doc.lines).toEqual([
      { itemId: sku, location: 'wh-c', quantity: 3 },
      { itemId: sku, location: 'wh-b', quantity: 3 },
      { itemId: sku, location: 'wh-a', quantity: 1 },
    ]);
  });

  it('most_available + split without locations: over every stocked location, ties by name', async () => {
    const sku = await item({ 'wh-b': 4, 'wh-a': 4, default: 1 });
    const doc = await api.hold(one(sku, 9, { strategy: 'most_available', split: true }));
    expect(doc.lines).toEqual([
      { itemId: sku, location: 'wh-a', quantity: 4 },
      { itemId: sku, location: 'wh-b', quantity: 4 },
      { itemId: sku, location: 'default', quantity: 1 },
    ]);
  });

  it('single_location: every allocated line from the first candidate that can hold them all', async () => {
    const shirt = await item({ 'wh-a': 9, 'wh-b': 2, 'wh-c': 5 });
    const mug = await item({ 'wh-a': 0, 'wh-b': 4, 'wh-c': 4 });
    const doc = await api.hold({
      lines: [{ itemId: shirt, quantity: 2 }, { itemId: mug, quantity: 3 }],
      allocation: { strategy: 'single_location', locations: ['wh-a', 'wh-b', 'wh-c'] },
    });
    // wh-a has no mugs; wh-b has enough of both.
    expect(doc.lines).toEqual([
      { itemId: shirt, location: 'wh-b', quantity: 2 },
      { itemId: mug, location: 'wh-b', quantity: 3 },
    ]);
    const again = await api.hold({
      lines: [{ itemId: shirt, quantity: 2 }, { itemId: mug, quantity: 1 }],
      allocation: { strategy: 'single_location', locations: ['wh-a', 'wh-b', 'wh-c'] },
    });
    expect(again.lines).toEqual([
      { itemId: shirt, location: 'wh-c', quantity: 2 },
      { itemId: mug, location: 'wh-c', quantity: 1 },
    ]);
  });

  it('single_location: a candidate one allocated item is not stocked at cannot hold them all', async () => {
    const shirt = await item({ 'wh-a': 9, 'wh-b': 9 });
    const mug = await item({ 'wh-b': 9 });
    const doc = await api.hold({
      lines: [{ itemId: shirt, quantity: 1 }, { itemId: mug, quantity: 1 }],
      allocation: { strategy: 'single_location', locations: ['wh-a', 'wh-b'] },
    });
    expect(doc.lines.map((l) => l.location)).toEqual(['wh-b', 'wh-b']);
  });

  it('candidates the item is not stocked at are skipped (ordered, most_available, split)', async () => {
    const sku = await item({ 'wh-b': 3, 'wh-c': 3 });
    const ordered = await api.hold(one(sku, 1, { strategy: 'ordered', locations: ['wh-x', 'wh-b'] }));
    expect(ordered.lines).toEqual([{ itemId: sku, location: 'wh-b', quantity: 1 }]);
    const most = await api.hold(one(sku, 1, { strategy: 'most_available', locations: ['wh-x', 'wh-b', 'wh-c'] }));
    expect(most.lines).toEqual([{ itemId: sku, location: 'wh-c', quantity: 1 }]);
    const split = await api.hold(one(sku, 4, { strategy: 'ordered', locations: ['wh-y', 'wh-c', 'wh-x', 'wh-b'], split: true }));
    expect(split.lines).toEqual([
      { itemId: sku, location: 'wh-c', quantity: 2 },
      { itemId: sku, location: 'wh-b', quantity: 2 },
    ]);
  });

  it('lines with a location are held exactly there; the document lists lines in request order, split parts in place', async () => {
    const a = await item({ 'wh-a': 2, 'wh-b': 5 });
    const b = await item({ 'wh-a': 5, 'wh-b': 5 });
    const c = await item({ 'wh-a': 1, 'wh-b': 1 });
    const allocation = { strategy: 'ordered', locations: ['wh-a', 'wh-b'], split: true };
    const doc = await api.hold({
      lines: [
        { itemId: b, quantity: 1, location: 'wh-b' },
        { itemId: a, quantity: 4 },
        { itemId: c, quantity: 2 },
      ],
      allocation,
      reference: 'cart-1',
    });
    expect(doc.lines).toEqual([
      { itemId: b, location: 'wh-b', quantity: 1 },
      { itemId: a, location: 'wh-a', quantity: 2 },
      { itemId: a, location: 'wh-b', quantity: 2 },
      { itemId: c, location: 'wh-a', quantity: 1 },
      { itemId: c, location: 'wh-b', quantity: 1 },
    ]);
    expect(doc.allocation).toEqual(allocation);
    expect(expectReservation(await api.get(doc.id), 200)).toEqual(doc);
  });

  it('the document echoes the allocation as sent (an omitted split stays omitted), also on GET', async () => {
    const sku = await item({ 'wh-a': 5 });
    const doc = await api.hold(one(sku, 1, { strategy: 'most_available' }));
    expect(doc.allocation).toEqual({ strategy: 'most_available' });
    const res = await api.get(doc.id);
    expect(res.text).toBe(JSON.stringify(doc));
  });
});

describe('allocation: refusals', () => {
  it('404 item_not_found when an allocated item is stocked at none of its candidates; nothing held', async () => {
    const other = await item({ 'wh-a': 5 });
    const sku = await item({ 'wh-z': 5 });
    const res = await api.reserve({
      lines: [{ itemId: other, quantity: 1, location: 'wh-a' }, { itemId: sku, quantity: 1 }],
      allocation: { strategy: 'ordered', locations: ['wh-a', 'wh-b'] },
    });
    expectProblem(res, 'item_not_found');
    expect(await reservedOf(other)).toEqual({ 'wh-a': 0 });
    expectProblem(await api.reserve(one(newItem('never'), 1, { strategy: 'most_available' })), 'item_not_found');
    expectProblem(await api.reserve(one(sku, 1, { strategy: 'single_location', locations: ['wh-a'] })), 'item_not_found');
  });

  it('404 comes before 409: a short allocated line beside one stocked nowhere', async () => {
    const short = await item({ 'wh-a': 1 });
    const res = await api.reserve({
      lines: [{ itemId: short, quantity: 5 }, { itemId: newItem('never'), quantity: 1 }],
      allocation: { strategy: 'most_available' },
    });
    expectProblem(res, 'item_not_found');
  });

  const refused = async (body: ReserveBody) => {
    const problem = expectProblem(await api.reserve(body), 'insufficient_stock');
    return problem.lines;
  };

  it('ordered without split: location null, available = the most at any one candidate', async () => {
    const sku = await item({ 'wh-a': 3, 'wh-b': 4, 'wh-c': 2 });
    expect(await refused(one(sku, 5, { strategy: 'ordered', locations: ['wh-a', 'wh-b', 'wh-c'] }))).toEqual([
      { itemId: sku, location: null, requested: 5, available: 4 },
    ]);
    expect(await reservedOf(sku)).toEqual({ 'wh-a': 0, 'wh-b': 0, 'wh-c': 0 });
  });

  it('ordered + split: available = the sum over the candidates (stocked ones only)', async () => {
    const sku = await item({ 'wh-a': 3, 'wh-b': 4, 'wh-c': 2 });
    expect(await refused(one(sku, 8, { strategy: 'ordered', locations: ['wh-a', 'wh-x', 'wh-b'], split: true }))).toEqual([
      { itemId: sku, location: null, requested: 8, available: 7 },
    ]);
    expect(await reservedOf(sku)).toEqual({ 'wh-a': 0, 'wh-b': 0, 'wh-c': 0 });
  });

  it('most_available: without split the most at one candidate, with split the sum; without locations over every location', async () => {
    const sku = await item({ 'wh-a': 3, 'wh-b': 4, 'wh-c': 2 });
    await api.hold({ lines: [{ itemId: sku, quantity: 1, location: 'wh-b' }] });
    expect(await refused(one(sku, 4, { strategy: 'most_available', locations: ['wh-b', 'wh-c'] }))).toEqual([
      { itemId: sku, location: null, requested: 4, available: 3 },
    ]);
    expect(await refused(one(sku, 6, { strategy: 'most_available', locations: ['wh-b', 'wh-c'], split: true }))).toEqual([
      { itemId: sku, location: null, requested: 6, available: 5 },
    ]);
    expect(await refused(one(sku, 9, { strategy: 'most_available', split: true }))).toEqual([
      { itemId: sku, location: null, requested: 9, available: 8 },
    ]);
    expect(await refused(one(sku, 4, { strategy: 'most_available' }))).toEqual([
      { itemId: sku, location: null, requested: 4, available: 3 },
    ]);
  });

  it('single_location: each allocated line short at the best candidate (short by the fewest units in all), with what it has there', async () => {
    const shirt = await item({ 'wh-a': 9, 'wh-b': 2, 'wh-c': 1 });
    const mug = await item({ 'wh-a': 0, 'wh-b': 3, 'wh-c': 5 });
    // Short in all: wh-a 3 (mugs), wh-b 1 (shirts), wh-c 2 (shirts): wh-b is the best; only its short line is named.
    expect(
      await refused({
        lines: [{ itemId: shirt, quantity: 3 }, { itemId: mug, quantity: 3 }],
        allocation: { strategy: 'single_location', locations: ['wh-a', 'wh-b', 'wh-c'] },
      }),
    ).toEqual([{ itemId: shirt, location: null, requested: 3, available: 2 }]);
    // A candidate an item is not stocked at has 0 of it; a tie goes to the earlier candidate.
    const cup = await item({ 'wh-b': 1, 'wh-c': 4 });
    expect(
      await refused({
        lines: [{ itemId: shirt, quantity: 3 }, { itemId: cup, quantity: 2 }],
        allocation: { strategy: 'single_location', locations: ['wh-a', 'wh-c', 'wh-b'] },
      }),
      // Short: wh-a 2 (no cups), wh-c 2 (shirts), wh-b 2: wh-a, the first.
    ).toEqual([{ itemId: cup, location: null, requested: 2, available: 0 }]);
    expect(await reservedOf(shirt)).toEqual({ 'wh-a': 0, 'wh-b': 0, 'wh-c': 0 });
  });

  it('a short fixed line is named with its location beside allocated lines that could be held', async () => {
    const fixed = await item({ 'wh-a': 1 });
    const sku = await item({ 'wh-a': 5 });
    expect(
      await refused({
        lines: [{ itemId: sku, quantity: 2 }, { itemId: fixed, quantity: 2, location: 'wh-a' }],
        allocation: { strategy: 'most_available' },
      }),
    ).toEqual([{ itemId: fixed, location: 'wh-a', requested: 2, available: 1 }]);
    expect(await reservedOf(sku)).toEqual({ 'wh-a': 0 });
  });
});

describe('allocation: the lifecycle acts on exactly the allocated entries', () => {
  const split = { strategy: 'ordered', locations: ['wh-a', 'wh-b'], split: true };

  it('confirm sells the units where they were allocated', async () => {
    const sku = await item({ 'wh-a': 3, 'wh-b': 5 });
    const doc = await api.hold(one(sku, 5, split));
    const confirmed = expectReservation(await api.confirm(doc.id), 200);
    expect(confirmed).toMatchObject({ status: 'confirmed', lines: doc.lines, allocation: split });
    expect(await onHandOf(sku)).toEqual({ 'wh-a': 0, 'wh-b': 3 });
    expect(await reservedOf(sku)).toEqual({ 'wh-a': 0, 'wh-b': 0 });
    expect(expectReservation(await api.get(doc.id), 200)).toEqual(confirmed);
  });

  it('release gives them back where they were', async () => {
    const sku = await item({ 'wh-a': 3, 'wh-b': 5 });
    const doc = await api.hold(one(sku, 5, split));
    expect(await reservedOf(sku)).toEqual({ 'wh-a': 3, 'wh-b': 2 });
    expect(expectReservation(await api.release(doc.id), 200)).toMatchObject({ status: 'released', lines: doc.lines });
    expect(await reservedOf(sku)).toEqual({ 'wh-a': 0, 'wh-b': 0 });
    expect(await onHandOf(sku)).toEqual({ 'wh-a': 3, 'wh-b': 5 });
  });

  it('expiry frees them where they were, and the sweeper records it', async () => {
    const sku = await item({ 'wh-a': 3, 'wh-b': 5 });
    const doc = await api.hold({ ...one(sku, 5, split), ttlSeconds: 1 });
    await untilTime(doc.expiresAt);
    expect(await reservedOf(sku)).toEqual({ 'wh-a': 0, 'wh-b': 0 });
    await t.app.runtime.sweeper.runOnce();
    await t.app.runtime.writer.drain();
    const { rows } = await t.app.runtime.db.query<{ location: string; reserved: string }>(
      'SELECT location, reserved::text FROM stock WHERE item_id = $1 ORDER BY location',
      [sku],
    );
    expect(rows).toEqual([{ location: 'wh-a', reserved: '0' }, { location: 'wh-b', reserved: '0' }]);
    expect(expectReservation(await api.get(doc.id), 200)).toMatchObject({ status: 'expired', lines: doc.lines, allocation: split });
  });

  it('an idempotent replay answers the same allocation, whatever stock says now, and holds nothing more', async () => {
    const sku = await item({ 'wh-a': 3, 'wh-b': 5 });
    const body = one(sku, 2, { strategy: 'most_available' });
    const key = `alloc-replay-${sku}`;
    const first = await api.reserve(body, key);
    expect(expectReservation(first, 201).lines).toEqual([{ itemId: sku, location: 'wh-b', quantity: 2 }]);
    await api.stock(sku, 50, 'wh-a');
    const again = await api.reserve(body, key);
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.text).toBe(first.text);
    expect(await reservedOf(sku)).toEqual({ 'wh-a': 0, 'wh-b': 2 });
  });

  it('after Redis lost its state and was rebuilt, the holds are where they were; confirm and release act on them', async () => {
    const a = await item({ 'wh-a': 3, 'wh-b': 5, 'wh-c': 4 });
    const b = await item({ 'wh-a': 2, 'wh-b': 1, 'wh-c': 7 });
    const sold = await api.hold({ lines: [{ itemId: a, quantity: 5 }, { itemId: b, quantity: 3 }], allocation: split });
    const kept = await api.hold({
      lines: [{ itemId: a, quantity: 2 }, { itemId: b, quantity: 1 }],
      allocation: { strategy: 'single_location', locations: ['wh-b', 'wh-c'] },
    });
    expect(kept.lines.map((l) => l.location)).toEqual(['wh-c', 'wh-c']);
    const before = [await api.figures(a), await api.figures(b)];
    expect(await reservedOf(a)).toEqual({ 'wh-a': 3, 'wh-b': 2, 'wh-c': 2 });

    await t.app.runtime.writer.drain();
    await wipeRedisState(t.app);
    await t.app.runtime.recovery.ensure();
    await waitReady(t.app);

    expect([await api.figures(a), await api.figures(b)]).toEqual(before);
    expect(expectReservation(await api.confirm(sold.id), 200)).toMatchObject({ status: 'confirmed', lines: sold.lines, allocation: split });
    expect(expectReservation(await api.release(kept.id), 200)).toMatchObject({ status: 'released', lines: kept.lines });
    expect(await api.figures(a)).toMatchObject({
      locations: [
        { location: 'wh-a', onHand: 0, reserved: 0 },
        { location: 'wh-b', onHand: 3, reserved: 0 },
        { location: 'wh-c', onHand: 4, reserved: 0 },
      ],
    });
    expect(await api.figures(b)).toMatchObject({
      locations: [
        { location: 'wh-a', onHand: 0, reserved: 0 },
        { location: 'wh-b', onHand: 0, reserved: 0 },
        { location: 'wh-c', onHand: 7, reserved: 0 },
      ],
    });
  });
});
