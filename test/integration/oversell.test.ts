import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scanTargets } from '../../src/redis/client.js';
import type { ReservationRequest } from '../../src/domain/schemas.js';
import {
  Api,
  availabilityOf,
  outcome,
  problemOf,
  range,
  reservationOf,
  tally,
  startHttpApp,
  type Answer,
} from '../helpers/api.js';
import { newItem, newKey, type TestApp } from '../helpers/app.js';
import { checkInvariants, figuresOf } from '../helpers/invariants.js';
import { mulberry32 } from '../helpers/random.js';

/**
 * I1 (no oversell) and all-or-nothing holds under real concurrency: hundreds of requests over real sockets at once,
 * so the Lua decisions and the group-commit writer see genuinely concurrent traffic.
 */

interface Winner {
  id: string;
  lines: { itemId: string; location: string; quantity: number }[];
}

const pairKey = (itemId: string, location: string) => `${itemId}@${location}`;

describe('no oversell under concurrency (I1)', () => {
  let t: TestApp;
  let api: Api;
  const winners: Winner[] = [];
  const stocked = new Map<string, number>(); // item@location → initial on-hand
  const items: string[] = [];

  beforeAll(async () => {
    t = await startHttpApp();
    api = await Api.listen(t.app);
  });
  afterAll(async () => {
    await t?.close();
  });

  it('500 concurrent single-unit reservations on one SKU with stock 50: exactly 50 win, 450 are told why not', async () => {
    const sku = newItem('flash');
    items.push(sku);
    await api.stock(sku, 50);
    stocked.set(pairKey(sku, 'default'), 50);

    const answers = await Promise.all(range(500).map(() => api.reserve({ lines: [{ itemId: sku, quantity: 1 }] })));

    expect(tally(answers)).toEqual({ '201': 50, '409 insufficient_stock': 450 });
    const created = answers.filter((a) => a.status === 201).map(reservationOf);
    expect(new Set(created.map((r) => r.id)).size).toBe(50);
    for (const r of created) {
      expect(r.status).toBe('pending');
      expect(r.lines).toEqual([{ itemId: sku, location: 'default', quantity: 1 }]);
      winners.push({ id: r.id, lines: r.lines });
    }
    for (const a of answers.filter((x) => x.status === 409)) {
      expect(a.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(problemOf(a).lines).toEqual([{ itemId: sku, location: 'default', requested: 1, available: 0 }]);
    }

    expect(availabilityOf(await api.availability(sku))).toMatchObject({ onHand: 50, reserved: 50, available: 0 });
    const { rows } = await t.app.runtime.db.query<{ id: string }>(
      'SELECT DISTINCT reservation_id AS id FROM reservation_lines WHERE item_id = $1',
      [sku],
    );
    expect(new Set(rows.map((r) => r.id))).toEqual(new Set(created.map((r) => r.id)));

    const report = await checkInvariants(t.app, [sku], { holdsWithinSupply: true });
    expect(figuresOf(report, sku)).toMatchObject({
      redis: { onHand: 50, reservedLive: 50 },
      pg: { onHand: 50, reserved: 50 },
    });
  });

  it('400 concurrent multi-line carts over overlapping SKUs: all lines held or none', async () => {
    const rng = mulberry32(20_261_126);
    const skus = range(5).map(() => newItem('cart'));
    items.push(...skus);
    // Six (item, location) pairs; one SKU is stocked at two locations.
    const pairs: { itemId: string; location: string; stock: number }[] = [
      { itemId: skus[0]!, location: 'default', stock: 12 },
      { itemId: skus[0]!, location: 'wh-2', stock: 7 },
      { itemId: skus[1]!, location: 'default', stock: 8 },
      { itemId: skus[2]!, location: 'default', stock: 15 },
      { itemId: skus[3]!, location: 'default', stock: 10 },
      { itemId: skus[4]!, location: 'default', stock: 6 },
    ];
    for (const p of pairs) {
      await api.stock(p.itemId, p.stock, p.location);
      stocked.set(pairKey(p.itemId, p.location), p.stock);
    }

    const carts = range(400).map(() =>
      rng.sample(pairs, rng.int(2, 4)).map((p) => ({ itemId: p.itemId, location: p.location, quantity: rng.int(1, 3) })),
    );
    const bodies: ReservationRequest[] = carts.map((lines) => ({
      // "default" is left out half the time: the service must resolve it the same way.
      lines: lines.map((l) => (l.location === 'default' && rng.chance(0.5) ? { itemId: l.itemId, quantity: l.quantity } : l)),
    }));
    const answers = await Promise.all(bodies.map((body) => api.reserve(body)));

    const outcomes = tally(answers);
    expect(Object.keys(outcomes).sort()).toEqual(['201', '409 insufficient_stock']);

    const held = new Map<string, number>();
    answers.forEach((a, i) => {
      const cart = carts[i]!;
      if (a.status === 201) {
        const r = reservationOf(a);
        expect(r.lines).toEqual(cart);
        winners.push({ id: r.id, lines: r.lines });
        for (const l of cart) held.set(pairKey(l.itemId, l.location), (held.get(pairKey(l.itemId, l.location)) ?? 0) + l.quantity);
      } else {
        // The answer names each short line, and only lines of this cart.
        const short = problemOf(a).lines ?? [];
        expect(short.length).toBeGreaterThan(0);
        for (const s of short) {
          const line = cart.find((l) => l.itemId === s.itemId && l.location === s.location);
          expect(line, `409 names ${s.itemId}@${s.location}, not in the cart`).toBeDefined();
          expect(s.requested).toBe(line!.quantity);
          expect(s.available).toBeLessThan(s.requested);
        }
      }
    });

    // Every winner's lines are held, no loser holds anything: reserved is exactly the winners' sum, within stock.
    for (const p of pairs) {
      const reserved = held.get(pairKey(p.itemId, p.location)) ?? 0;
      expect(reserved).toBeLessThanOrEqual(p.stock);
      const doc = availabilityOf(await api.availability(p.itemId));
      expect(doc.locations.find((l) => l.location === p.location)).toEqual({
        location: p.location,
        onHand: p.stock,
        reserved,
        safetyStock: 0,
        available: p.stock - reserved,
        availableHighPriority: p.stock - reserved,
      });
    }
    const winnerIds = answers.filter((a) => a.status === 201).map((a) => reservationOf(a).id);
    const { rows } = await t.app.runtime.db.query<{ id: string; n: number }>(
      'SELECT reservation_id AS id, count(*)::int AS n FROM reservation_lines WHERE item_id = ANY($1) GROUP BY 1',
      [skus],
    );
    expect(new Map(rows.map((r) => [r.id, r.n]))).toEqual(
      new Map(answers.flatMap((a, i) => (a.status === 201 ? [[reservationOf(a).id, carts[i]!.length] as const] : []))),
    );
    expect(winnerIds.length).toBeGreaterThan(0);
    // The checker also matches every pending line to its Redis hold, one by one.
    await checkInvariants(t.app, skus, { holdsWithinSupply: true });
  });

  it('concurrent confirm / release / adjust on the winners keep Redis and PostgreSQL in step', async () => {
    expect(winners.length).toBeGreaterThan(50);
    const rng = mulberry32(7);
    type Call = { kind: 'confirm' | 'release'; winner: Winner } | { kind: 'adjust'; itemId: string; location: string; delta: number };
    const calls: Call[] = [];
    for (const w of winners) {
      const plan = rng.pick([['confirm'], ['release'], ['confirm', 'confirm'], ['confirm', 'release'], ['release', 'release'], ['release', 'confirm']] as const);
      for (const kind of plan) calls.push({ kind, winner: w });
    }
    for (const pair of stocked.keys()) {
      const sep = pair.lastIndexOf('@');
      for (const delta of [5, -3, -8, 2, -1]) calls.push({ kind: 'adjust', itemId: pair.slice(0, sep), location: pair.slice(sep + 1), delta });
    }
    const order = rng.shuffle(calls);
    const answers = await Promise.all(
      order.map((c) =>
        c.kind === 'adjust' ? api.adjust(c.itemId, { delta: c.delta, location: c.location, reason: 'cycle count' }) : api[c.kind](c.winner.id),
      ),
    );

    const allowed: Record<Call['kind'], string[]> = {
      confirm: ['200', '409 reservation_released', '409 insufficient_stock'],
      release: ['200', '409 reservation_confirmed'],
      adjust: ['200', '409 insufficient_stock'],
    };
    const byReservation = new Map<string, { kind: string; answer: Answer }[]>();
    const adjusted = new Map<string, number>();
    order.forEach((c, i) => {
      const a = answers[i]!;
      expect(allowed[c.kind], `${c.kind} answered ${outcome(a)}: ${a.text}`).toContain(outcome(a));
      if (c.kind === 'adjust') {
        if (a.status === 200) adjusted.set(pairKey(c.itemId, c.location), (adjusted.get(pairKey(c.itemId, c.location)) ?? 0) + c.delta);
        return;
      }
      if (a.status === 200) expect(reservationOf(a).status).toBe(c.kind === 'confirm' ? 'confirmed' : 'released');
      byReservation.set(c.winner.id, [...(byReservation.get(c.winner.id) ?? []), { kind: c.kind, answer: a }]);
    });

    // Each reservation ended one way only, and PostgreSQL recorded that way.
    await t.app.runtime.writer.drain();
    const { rows } = await t.app.runtime.db.query<{ id: string; status: string }>(
      'SELECT id, status FROM reservations WHERE id = ANY($1)',
      [winners.map((w) => w.id)],
    );
    const stored = new Map(rows.map((r) => [r.id, r.status]));
    const expectedOnHand = new Map(stocked);
    const expectedReserved = new Map<string, number>();
    for (const w of winners) {
      const results = byReservation.get(w.id) ?? [];
      const confirmed = results.some((r) => r.kind === 'confirm' && r.answer.status === 200);
      const released = results.some((r) => r.kind === 'release' && r.answer.status === 200);
      expect(confirmed && released, `reservation ${w.id} was both confirmed and released`).toBe(false);
      const status = confirmed ? 'confirmed' : released ? 'released' : 'pending';
      expect(stored.get(w.id), `reservation ${w.id}: ${results.map((r) => `${r.kind}→${outcome(r.answer)}`).join(', ')}`).toBe(status);
      for (const l of w.lines) {
        const k = pairKey(l.itemId, l.location);
        if (status === 'confirmed') expectedOnHand.set(k, expectedOnHand.get(k)! - l.quantity);
        if (status === 'pending') expectedReserved.set(k, (expectedReserved.get(k) ?? 0) + l.quantity);
      }
    }
    for (const [k, delta] of adjusted) expectedOnHand.set(k, expectedOnHand.get(k)! + delta);

    for (const [k, onHand] of expectedOnHand) {
      const sep = k.lastIndexOf('@');
      const doc = availabilityOf(await api.availability(k.slice(0, sep)));
      const reserved = expectedReserved.get(k) ?? 0;
      expect(doc.locations.find((l) => l.location === k.slice(sep + 1)), k).toEqual({
        location: k.slice(sep + 1),
        onHand,
        reserved,
        safetyStock: 0,
        available: Math.max(0, onHand - reserved),
        availableHighPriority: Math.max(0, onHand - reserved),
      });
    }
    await checkInvariants(t.app, items);
  });
});

describe('a refused cart takes nothing, not even for an instant', () => {
  let t: TestApp;
  let api: Api;
  beforeAll(async () => {
    t = await startHttpApp();
    api = Api.inject(t.app);
  });
  afterAll(() => t?.close());

  /** Every command that changes `key`, as Redis's keyspace notifications report it while `run` goes. */
  async function writesTo(key: string, run: () => Promise<void>): Promise<string[]> {
    const servers = scanTargets(t.app.runtime.redis);
    const seen: string[] = [];
    const listeners: Redis[] = [];
    const before = await Promise.all(servers.map(async (s) => ((await s.config('GET', 'notify-keyspace-events')) as string[])[1] ?? ''));
    try {
      for (const server of servers) {
        await server.config('SET', 'notify-keyspace-events', 'Kh');
        const listener = server.duplicate({ lazyConnect: true, enableOfflineQueue: true });
        await listener.connect();
        listeners.push(listener);
        listener.on('message', (_channel: string, event: string) => seen.push(event));
        await listener.subscribe(`__keyspace@0__:${key}`);
      }
      await run();
      // A notification is sent before the script's reply; a PING after it on each listener flushes what came first.
      await Promise.all(listeners.map((l) => l.ping()));
    } finally {
      for (const l of listeners) l.disconnect();
      await Promise.all(servers.map((s, i) => s.config('SET', 'notify-keyspace-events', before[i]!)));
    }
    return seen;
  }

  it('a cart refused in one slot does not hold (and give back) the units of its others', async () => {
    const { keys } = t.app.runtime;
    // On a cluster the slots are asked in ascending order: the short item's slot first, then the stocked one's.
    let short = newItem('short');
    let stocked = newItem('stocked');
    while (keys.groupOf(keys.item(short).stock) > keys.groupOf(keys.item(stocked).stock)) [short, stocked] = [newItem('short'), newItem('stocked')];
    await api.stock(short, 0);
    await api.stock(stocked, 5);

    const writes = await writesTo(keys.item(stocked).holds, async () => {
      const refused = await api.reserve({ lines: [{ itemId: short, quantity: 1 }, { itemId: stocked, quantity: 2 }] });
      expect(outcome(refused)).toBe('409 insufficient_stock');
      expect(problemOf(refused).lines).toEqual([{ itemId: short, location: 'default', requested: 1, available: 0 }]);
    });
    expect(writes).toEqual([]);
    // The check sees writes: a cart that is held writes its holds.
    const held = await writesTo(keys.item(stocked).holds, async () => {
      expect(outcome(await api.reserve({ lines: [{ itemId: stocked, quantity: 2 }] }))).toBe('201');
    });
    expect(held).toContain('hset');
  });
});
