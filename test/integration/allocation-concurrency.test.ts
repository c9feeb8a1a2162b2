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
});
