import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReservationDocument } from '../../src/domain/schemas.js';
import { Api, problemOf, range, reservationOf, startHttpApp, tally, type Answer } from '../helpers/api.js';
import { newItem, type TestApp } from '../helpers/app.js';
import { checkInvariants, figuresOf } from '../helpers/invariants.js';
import { mulberry32, type Rng } from '../helpers/random.js';

/**
 * Allocation under real concurrency (api.md, "Allocation across locations": one atomic step per item): hundreds of
 * allocated reservations over real sockets at once, mixing strategies with and without split, over three locations
 * of one item. No location is oversold, Redis and PostgreSQL agree per location, and no request is refused while
 * its candidates still had enough for it.
 *
 * The same with safety stock at every location and normal and high priority mixed: normal requests never take
 * the safety stock, high ones may (api.md, "Priority reservations and safety stock").
 *
 * Judging a refusal: nothing is released while the requests run, so what a location has available only falls.
 * A request refused at some instant would therefore also be refused by its strategy on what was left at the end,
 * and what its 409 says it found lies between what the strategy finds on the stock at the start and at the end.
 */

const LOCATIONS = ['wh-a', 'wh-b', 'wh-c'] as const;
const STOCK: Record<string, number> = { 'wh-a': 40, 'wh-b': 30, 'wh-c': 300 };
const REQUESTS = 240;

interface Allocation {
  strategy: 'ordered' | 'most_available' | 'single_location';
  locations?: string[];
  split?: boolean;
}

interface Request {
  quantity: number;
  allocation: Allocation;
}

function drawRequest(rng: Rng): Request {
  const strategy = rng.pick(['ordered', 'most_available', 'single_location'] as const);
  const locations = rng.sample(LOCATIONS, rng.int(1, 3));
  const split = strategy !== 'single_location' && rng.chance(0.5);
  const allocation: Allocation = { strategy };
  if (strategy !== 'most_available' || rng.chance(0.6)) allocation.locations = locations;
  if (split || rng.chance(0.3)) allocation.split = split;
  return { quantity: rng.int(1, 2), allocation };
}

/** The candidates of a one-line request, in preference order (the pure reading of api.md's rules). */
function candidates(a: Allocation, available: Record<string, number>): string[] {
  const names = a.locations ?? [...LOCATIONS].sort();
  if (a.strategy !== 'most_available') return names;
  return names
    .map((location, rank) => ({ location, rank }))
    .sort((x, y) => available[y.location]! - available[x.location]! || x.rank - y.rank)
    .map((x) => x.location);
}

/** What the strategy holds on `available` (location → units), or null and what it found. */
function allocate(r: Request, available: Record<string, number>): { parts: [string, number][] } | { found: number } {
  const order = candidates(r.allocation, available);
  if (r.allocation.split) {
    const parts: [string, number][] = [];
    let left = r.quantity;
    for (const location of order) {
      const take = Math.min(available[location]!, left);
      if (take > 0) parts.push([location, take]);
      left -= take;
    }
    if (left === 0) return { parts };
    return { found: order.reduce((sum, l) => sum + available[l]!, 0) };
  }
  const location = order.find((l) => available[l]! >= r.quantity);
  if (location) return { parts: [[location, r.quantity]] };
  return { found: Math.max(...order.map((l) => available[l]!)) };
}

describe('allocation under concurrency', () => {
  let t: TestApp;
  let api: Api;

  beforeAll(async () => {
    t = await startHttpApp();
    api = await Api.listen(t.app);
  });
  afterAll(async () => {
    await t?.close();
  });

  it(`${REQUESTS} concurrent allocated reservations over three locations: none oversold, none falsely refused, stores agree`, async () => {
    const seed = Number(process.env.ALLOCATION_SEED ?? 20_261_130);
    const rng = mulberry32(seed);
    const sku = newItem('alloc-race');
    for (const location of LOCATIONS) await api.stock(sku, STOCK[location]!, location);

    const requests = range(REQUESTS).map(() => drawRequest(rng));
    const answers: Answer[] = await Promise.all(
      requests.map((r) => api.reserve({ lines: [{ itemId: sku, quantity: r.quantity }], allocation: r.allocation })),
    );
    const context = `seed ${seed} (ALLOCATION_SEED replays it): ${JSON.stringify(tally(answers))}`;
    expect(Object.keys(tally(answers)).sort(), context).toEqual(['201', '409 insufficient_stock']);

    // What the winners hold, per location; each winner's parts obey its strategy's shape.
    const held: Record<string, number> = { 'wh-a': 0, 'wh-b': 0, 'wh-c': 0 };
    const winners: ReservationDocument[] = [];
    answers.forEach((a, i) => {
      if (a.status !== 201) return;
      const r = requests[i]!;
      const doc = reservationOf(a);
      winners.push(doc);
      expect(doc.allocation, context).toEqual(r.allocation);
      expect(doc.lines.reduce((sum, l) => sum + l.quantity, 0), context).toBe(r.quantity);
      if (!r.allocation.split) expect(doc.lines, context).toHaveLength(1);
      for (const l of doc.lines) {
        if (r.allocation.locations) expect(r.allocation.locations, context).toContain(l.location);
        held[l.location] = held[l.location]! + l.quantity;
      }
    });
    const left = Object.fromEntries(LOCATIONS.map((l) => [l, STOCK[l]! - held[l]!]));
    for (const location of LOCATIONS) expect(left[location], `${location} oversold; ${context}`).toBeGreaterThanOrEqual(0);

    // Every refusal: its strategy refuses on what was left at the end too, and what it found lies between the
    // strategy's finding on the stock at the end and at the start.
    let refusals = 0;
    answers.forEach((a, i) => {
      if (a.status !== 409) return;
      refusals++;
      const r = requests[i]!;
      const atEnd = allocate(r, left);
      expect(atEnd, `request ${i} ${JSON.stringify(r)} was refused though ${JSON.stringify(left)} was left; ${context}`).toHaveProperty('found');
      const atStart = allocate(r, STOCK);
      const startFound = 'found' in atStart ? atStart.found : Infinity;
      const [line] = problemOf(a).lines!;
      expect(line, context).toMatchObject({ itemId: sku, location: null, requested: r.quantity });
      expect(line!.available, context).toBeLessThan(r.quantity);
      expect(line!.available, context).toBeGreaterThanOrEqual((atEnd as { found: number }).found);
      expect(line!.available, context).toBeLessThanOrEqual(startFound);
    });
    // Demand beyond supply: both sides are exercised.
    expect(refusals, context).toBeGreaterThan(0);
    expect(winners.length, context).toBeGreaterThan(20);

    const report = await checkInvariants(t.app, [sku], { holdsWithinSupply: true });
    for (const location of LOCATIONS) {
      expect(figuresOf(report, sku, location), `${location}; ${context}`).toMatchObject({
        redis: { onHand: STOCK[location], reservedLive: held[location] },
        pg: { onHand: STOCK[location], reserved: held[location] },
      });
    }

    // Settle them all at once, half confirmed, half released, while new allocated requests compete for the units
    // released: on-hand drops by exactly what was confirmed where it was allocated.
    const sold: Record<string, number> = { 'wh-a': 0, 'wh-b': 0, 'wh-c': 0 };
    const settles = winners.map((w, i) => {
      if (i % 2 === 0) for (const l of w.lines) sold[l.location] = sold[l.location]! + l.quantity;
      return i % 2 === 0 ? api.confirm(w.id) : api.release(w.id);
    });
    const late = range(60).map(() => drawRequest(rng));
    const [settled, lateAnswers] = await Promise.all([
      Promise.all(settles),
      Promise.all(late.map((r) => api.reserve({ lines: [{ itemId: sku, quantity: r.quantity }], allocation: r.allocation }))),
    ]);
    expect(settled.every((a) => a.status === 200), context).toBe(true);
    const lateHeld: Record<string, number> = { 'wh-a': 0, 'wh-b': 0, 'wh-c': 0 };
    for (const a of lateAnswers) {
      expect([201, 409], context).toContain(a.status);
      if (a.status === 201) for (const l of reservationOf(a).lines) lateHeld[l.location] = lateHeld[l.location]! + l.quantity;
    }

    const after = await checkInvariants(t.app, [sku], { holdsWithinSupply: true });
    for (const location of LOCATIONS) {
      expect(figuresOf(after, sku, location), `${location}; ${context}`).toMatchObject({
        redis: { onHand: STOCK[location]! - sold[location]!, reservedLive: lateHeld[location] },
        pg: { onHand: STOCK[location]! - sold[location]!, reserved: lateHeld[location] },
      });
    }
  });

  it(`${REQUESTS} concurrent allocated reservations of both priorities over three locations with safety stock: normal ones never take it`, async () => {
    const seed = Number(process.env.ALLOCATION_SEED ?? 20_261_130) + 1;
    const rng = mulberry32(seed);
    const sku = newItem('alloc-priority-race');
    // Less than the demand (about 360 units), so normal requests run into the safety stock and high ones take it.
    const stock: Record<string, number> = { 'wh-a': 40, 'wh-b': 30, 'wh-c': 120 };
    const safety: Record<string, number> = { 'wh-a': 10, 'wh-b': 10, 'wh-c': 20 };
    for (const location of LOCATIONS) {
      expect((await api.putStock(sku, { quantity: stock[location], location, safetyStock: safety[location] })).status).toBe(200);
    }

    const requests = range(REQUESTS).map(() => ({ ...drawRequest(rng), high: rng.chance(1 / 3) }));
    const answers: Answer[] = await Promise.all(
      requests.map((r) =>
        api.reserve({ lines: [{ itemId: sku, quantity: r.quantity }], allocation: r.allocation, ...(r.high ? { priority: 'high' } : {}) }),
      ),
    );
    const context = `seed ${seed} (ALLOCATION_SEED replays it, plus 1): ${JSON.stringify(tally(answers))}`;
    expect(Object.keys(tally(answers)).sort(), context).toEqual(['201', '409 insufficient_stock']);

    const held = { normal: { 'wh-a': 0, 'wh-b': 0, 'wh-c': 0 } as Record<string, number>, high: { 'wh-a': 0, 'wh-b': 0, 'wh-c': 0 } as Record<string, number> };
    answers.forEach((a, i) => {
      if (a.status !== 201) return;
      const r = requests[i]!;
      const doc = reservationOf(a);
      expect(doc.priority, context).toBe(r.high ? 'high' : 'normal');
      for (const l of doc.lines) held[r.high ? 'high' : 'normal'][l.location]! += l.quantity;
    });
    const total = (location: string) => held.normal[location]! + held.high[location]!;
    for (const location of LOCATIONS) {
      expect(total(location), `${location} oversold; ${context}`).toBeLessThanOrEqual(stock[location]!);
      expect(held.normal[location], `normal reservations took ${location}'s safety stock; ${context}`).toBeLessThanOrEqual(
        stock[location]! - safety[location]!,
      );
    }
    // Both sides exercised: high reservations did take safety stock somewhere.
    expect(LOCATIONS.some((l) => total(l) > stock[l]! - safety[l]!), context).toBe(true);

    // What each priority may take, at the start and at the end.
    const view = (high: boolean, reserved: (location: string) => number) =>
      Object.fromEntries(LOCATIONS.map((l) => [l, Math.max(0, stock[l]! - reserved(l) - (high ? 0 : safety[l]!))]));
    let refused = { normal: 0, high: 0 };
    answers.forEach((a, i) => {
      if (a.status !== 409) return;
      const r = requests[i]!;
      refused = { ...refused, [r.high ? 'high' : 'normal']: refused[r.high ? 'high' : 'normal'] + 1 };
      const left = view(r.high, total);
      const atEnd = allocate(r, left);
      expect(atEnd, `request ${i} ${JSON.stringify(r)} was refused though ${JSON.stringify(left)} was left to it; ${context}`).toHaveProperty('found');
      const atStart = allocate(r, view(r.high, () => 0));
      const [line] = problemOf(a).lines!;
      expect(line, context).toMatchObject({ itemId: sku, location: null, requested: r.quantity });
      expect(line!.available, context).toBeGreaterThanOrEqual((atEnd as { found: number }).found);
      expect(line!.available, context).toBeLessThanOrEqual('found' in atStart ? atStart.found : Infinity);
    });
    expect(refused.normal, context).toBeGreaterThan(0);

    const report = await checkInvariants(t.app, [sku], { holdsWithinSupply: true });
    for (const location of LOCATIONS) {
      expect(figuresOf(report, sku, location), `${location}; ${context}`).toMatchObject({
        redis: { onHand: stock[location], reservedLive: total(location) },
        pg: { onHand: stock[location], reserved: total(location) },
      });
    }
  });
});
