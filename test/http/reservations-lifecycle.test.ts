import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { formatHold, holdField, parseHold } from '../../src/redis/layout.js';
import { HoldState } from '../../src/redis/status.js';
import { newItem } from '../helpers/app.js';
import { expectProblem, expectReservation, useHttpApp } from '../helpers/api.js';
import { untilTime } from '../helpers/wait.js';

// api.md, "Reservations" (GET, confirm, release, expiry) and the on-hand-below-reserved rules of "Stock".
const { t, api } = useHttpApp();

async function stocked(quantity: number, location?: string): Promise<string> {
  const item = newItem();
  await api.stock(item, quantity, location);
  return item;
}

describe('GET /reservations/{id}', () => {
  it('reads the reservation as created', async () => {
    const item = await stocked(3);
    const doc = await api.hold({ lines: [{ itemId: item, quantity: 1 }], reference: 'cart-7', metadata: { a: 'b' } });
    expect(expectReservation(await api.get(doc.id), 200)).toEqual(doc);
  });

  it.each([
    ['an unknown UUID', randomUUID()],
    ['an unknown UUID in upper case', randomUUID().toUpperCase()],
    ['the nil UUID', '00000000-0000-0000-0000-000000000000'],
    ['a word', 'not-a-reservation'],
    ['a number', '12345'],
    ['an encoded space', 'a%20b'],
    ['encoded non-ASCII', '%C3%A9t%C3%A9'],
    ['SQL-ish text', "1'%20OR%20'1'='1"],
    ['100 characters', 'r'.repeat(100)],
  ])('answers 404 reservation_not_found for %s, on GET, confirm and release', async (_label, id) => {
    expectProblem(await api.get(id), 'reservation_not_found');
    expectProblem(await api.confirm(id), 'reservation_not_found');
    expectProblem(await api.release(id), 'reservation_not_found');
  });

  it('answers 404 reservation_not_found for a very long id (1,000 characters)', async () => {
    const id = 'r'.repeat(1000);
    expectProblem(await api.get(id), 'reservation_not_found');
    expectProblem(await api.confirm(id), 'reservation_not_found');
    expectProblem(await api.release(id), 'reservation_not_found');
  });
});

describe('POST /reservations/{id}/confirm', () => {
  it('answers 200 confirmed; the units leave on-hand for good and are no longer reserved', async () => {
    const item = await stocked(10);
    const held = await api.hold({ lines: [{ itemId: item, quantity: 4 }], reference: 'order-1' });
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 4, available: 6 });
    const doc = expectReservation(await api.confirm(held.id), 200);
    expect(doc).toEqual({ ...held, status: 'confirmed', updatedAt: doc.updatedAt, version: 2 });
    expect(Date.parse(doc.updatedAt)).toBeGreaterThanOrEqual(Date.parse(held.createdAt));
    expect(await api.at(item)).toEqual({ onHand: 6, reserved: 0, available: 6 });
    expect(expectReservation(await api.get(held.id), 200)).toEqual(doc);
  });

  it('confirms every line of a multi-line reservation across items and locations', async () => {
    const a = await stocked(5);
    const b = await stocked(5, 'wh-1');
    const held = await api.hold({
      lines: [
        { itemId: a, quantity: 2 },
        { itemId: b, quantity: 3, location: 'wh-1' },
      ],
    });
    expect(expectReservation(await api.confirm(held.id), 200).status).toBe('confirmed');
    expect(await api.at(a)).toEqual({ onHand: 3, reserved: 0, available: 3 });
    expect(await api.at(b, 'wh-1')).toEqual({ onHand: 2, reserved: 0, available: 2 });
  });

  it('confirming twice answers 200 with the same document and changes nothing twice', async () => {
    const item = await stocked(10);
    const held = await api.hold({ lines: [{ itemId: item, quantity: 4 }] });
    const first = await api.confirm(held.id);
    const second = await api.confirm(held.id);
    expect(expectReservation(second, 200)).toEqual(expectReservation(first, 200));
    expect(await api.at(item)).toEqual({ onHand: 6, reserved: 0, available: 6 });
  });

  it('answers 409 reservation_released for a released reservation, which stays released', async () => {
    const item = await stocked(10);
    const held = await api.hold({ lines: [{ itemId: item, quantity: 4 }] });
    const released = expectReservation(await api.release(held.id), 200);
    expectProblem(await api.confirm(held.id), 'reservation_released');
    expect(expectReservation(await api.get(held.id), 200)).toEqual(released);
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 0, available: 10 });
  });
});

describe('POST /reservations/{id}/release', () => {
  it('answers 200 released; the units are available again at once', async () => {
    const item = await stocked(10);
    const held = await api.hold({ lines: [{ itemId: item, quantity: 10 }] });
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 10, available: 0 });
    const doc = expectReservation(await api.release(held.id), 200);
    expect(doc).toEqual({ ...held, status: 'released', updatedAt: doc.updatedAt, version: 2 });
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 0, available: 10 });
    await api.hold({ lines: [{ itemId: item, quantity: 10 }] });
  });

  it('releasing twice answers 200 with the same document and changes nothing', async () => {
    const item = await stocked(10);
    await api.hold({ lines: [{ itemId: item, quantity: 1 }] });
    const held = await api.hold({ lines: [{ itemId: item, quantity: 4 }] });
    const first = expectReservation(await api.release(held.id), 200);
    expect(expectReservation(await api.release(held.id), 200)).toEqual(first);
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 1, available: 9 });
  });

  it('answers 409 reservation_confirmed for a confirmed reservation, which stays confirmed and sold', async () => {
    const item = await stocked(10);
    const held = await api.hold({ lines: [{ itemId: item, quantity: 4 }] });
    const confirmed = expectReservation(await api.confirm(held.id), 200);
    expectProblem(await api.release(held.id), 'reservation_confirmed');
    expect(expectReservation(await api.get(held.id), 200)).toEqual(confirmed);
    expect(expectReservation(await api.confirm(held.id), 200)).toEqual(confirmed);
    expect(await api.at(item)).toEqual({ onHand: 6, reserved: 0, available: 6 });
  });
});

describe('confirm and release take no body', () => {
  it.each([
    ['no body', {}],
    ['an empty JSON body', { headers: { 'content-type': 'application/json' }, payload: '' }],
    ['an empty JSON object', { headers: { 'content-type': 'application/json' }, payload: '{}' }],
  ])('accept %s', async (_label, extra) => {
    const item = await stocked(2);
    const a = await api.hold({ lines: [{ itemId: item, quantity: 1 }] });
    const b = await api.hold({ lines: [{ itemId: item, quantity: 1 }] });
    const confirm = await api.request({ method: 'POST', url: `/reservations/${a.id}/confirm`, ...extra });
    expect(expectReservation(confirm, 200).status).toBe('confirmed');
    const release = await api.request({ method: 'POST', url: `/reservations/${b.id}/release`, ...extra });
    expect(expectReservation(release, 200).status).toBe('released');
  });
});

describe('expiry: a reservation is expired from the instant now >= expiresAt', () => {
  it('reads expired at once, frees its units at once, cannot be confirmed, and releases as expired', async () => {
    const item = await stocked(5);
    const held = await api.hold({ lines: [{ itemId: item, quantity: 5 }], ttlSeconds: 1 });
    expect(Date.parse(held.expiresAt) - Date.parse(held.createdAt)).toBe(1000);
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 5, available: 0 });

    await untilTime(held.expiresAt);
    const read = expectReservation(await api.get(held.id), 200);
    expect(read).toEqual({ ...held, status: 'expired', updatedAt: read.updatedAt, version: 2 });
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 0, available: 5 });

    expectProblem(await api.confirm(held.id), 'reservation_expired');
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 0, available: 5 });
    const released = expectReservation(await api.release(held.id), 200);
    expect(released.status).toBe('expired');
    expect(expectReservation(await api.release(held.id), 200).status).toBe('expired');
    expectProblem(await api.confirm(held.id), 'reservation_expired');
    expect(expectReservation(await api.get(held.id), 200).status).toBe('expired');

    // The freed units can be held again straight away.
    await api.hold({ lines: [{ itemId: item, quantity: 5 }] });
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 5, available: 0 });
  });

  it('reads the same expired document, and answers the same, before and after the sweeper records the expiry', async () => {
    const item = await stocked(3);
    const held = await api.hold({ lines: [{ itemId: item, quantity: 3 }], ttlSeconds: 1 });
    await untilTime(held.expiresAt);
    const before = expectReservation(await api.get(held.id), 200);
    expect(before.status).toBe('expired');
    // Two passes: the first may be one the timer started before the TTL passed.
    await t.app.runtime.sweeper.runOnce();
    await t.app.runtime.sweeper.runOnce();
    expect(expectReservation(await api.get(held.id), 200)).toEqual(before);
    expectProblem(await api.confirm(held.id), 'reservation_expired');
    expect(expectReservation(await api.release(held.id), 200)).toEqual(before);
    expect(await api.at(item)).toEqual({ onHand: 3, reserved: 0, available: 3 });
  });

  it('releasing an expired reservation first (before any read) answers 200 expired', async () => {
    const item = await stocked(2);
    const held = await api.hold({ lines: [{ itemId: item, quantity: 2 }], ttlSeconds: 1 });
    await untilTime(held.expiresAt);
    expect(expectReservation(await api.release(held.id), 200).status).toBe('expired');
    expect(await api.at(item)).toEqual({ onHand: 2, reserved: 0, available: 2 });
  });

  it('terminal states stay: a confirmed or released reservation never turns expired', async () => {
    const item = await stocked(10);
    const confirmed = await api.hold({ lines: [{ itemId: item, quantity: 3 }], ttlSeconds: 1 });
    const released = await api.hold({ lines: [{ itemId: item, quantity: 2 }], ttlSeconds: 1 });
    expect(expectReservation(await api.confirm(confirmed.id), 200).status).toBe('confirmed');
    expect(expectReservation(await api.release(released.id), 200).status).toBe('released');
    await untilTime(confirmed.expiresAt);
    await untilTime(released.expiresAt);
    expect(expectReservation(await api.get(confirmed.id), 200).status).toBe('confirmed');
    expect(expectReservation(await api.get(released.id), 200).status).toBe('released');
    expect(expectReservation(await api.confirm(confirmed.id), 200).status).toBe('confirmed');
    expect(expectReservation(await api.release(released.id), 200).status).toBe('released');
    expect(await api.at(item)).toEqual({ onHand: 7, reserved: 0, available: 7 });
  });
});

describe('on-hand set below what is reserved (a count found units missing)', () => {
  it('keeps the holds, reads available 0, refuses new holds, and confirms only while on-hand covers it', async () => {
    const item = await stocked(10);
    const big = await api.hold({ lines: [{ itemId: item, quantity: 6 }] });
    const small = await api.hold({ lines: [{ itemId: item, quantity: 4 }] });

    await api.stock(item, 5);
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 10, available: 0 });
    expect(expectReservation(await api.get(big.id), 200).status).toBe('pending');

    const refused = expectProblem(await api.reserve({ lines: [{ itemId: item, quantity: 1 }] }), 'insufficient_stock');
    expect(refused.lines).toEqual([{ itemId: item, location: 'default', requested: 1, available: 0 }]);

    // 6 held, 5 on hand: the confirm is refused and the hold stays pending.
    expectProblem(await api.confirm(big.id), 'insufficient_stock');
    expect(expectReservation(await api.get(big.id), 200).status).toBe('pending');
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 10, available: 0 });

    // 4 held, 5 on hand: covered, sold.
    expect(expectReservation(await api.confirm(small.id), 200).status).toBe('confirmed');
    expect(await api.at(item)).toEqual({ onHand: 1, reserved: 6, available: 0 });
    expectProblem(await api.confirm(big.id), 'insufficient_stock');

    // Restocked: the waiting hold can be confirmed, and on-hand never went negative.
    await api.stock(item, 20);
    expect(await api.at(item)).toEqual({ onHand: 20, reserved: 6, available: 14 });
    expect(expectReservation(await api.confirm(big.id), 200).status).toBe('confirmed');
    expect(await api.at(item)).toEqual({ onHand: 14, reserved: 0, available: 14 });
  });

  it('a confirm refused on one line changes no line (all or nothing)', async () => {
    const a = await stocked(5);
    const b = await stocked(5, 'wh-1');
    const held = await api.hold({
      lines: [
        { itemId: a, quantity: 2 },
        { itemId: b, location: 'wh-1', quantity: 4 },
      ],
    });
    await api.stock(b, 3, 'wh-1');
    const problem = expectProblem(await api.confirm(held.id), 'insufficient_stock');
    expect(problem.lines?.map((l) => [l.itemId, l.location, l.requested])).toEqual([[b, 'wh-1', 4]]);
    expect(expectReservation(await api.get(held.id), 200).status).toBe('pending');
    expect(await api.at(a)).toEqual({ onHand: 5, reserved: 2, available: 3 });
    expect(await api.at(b, 'wh-1')).toEqual({ onHand: 3, reserved: 4, available: 0 });
  });

  it('names the uncovered line of a refused confirm with its on-hand as available', async () => {
    const item = await stocked(8, 'wh-1');
    const held = await api.hold({ lines: [{ itemId: item, location: 'wh-1', quantity: 8 }] });
    await api.stock(item, 3, 'wh-1');
    const problem = expectProblem(await api.confirm(held.id), 'insufficient_stock');
    expect(problem.lines).toEqual([{ itemId: item, location: 'wh-1', requested: 8, available: 3 }]);
  });

  it('a hold on-hand no longer covers can still be released, and its units return', async () => {
    const item = await stocked(4);
    const held = await api.hold({ lines: [{ itemId: item, quantity: 4 }] });
    await api.stock(item, 1);
    expect(expectReservation(await api.release(held.id), 200).status).toBe('released');
    expect(await api.at(item)).toEqual({ onHand: 1, reserved: 0, available: 1 });
  });
});

describe('a settle that another request takes back', () => {
  it('a release that found the reservation confirmed waits, and releases it once that confirm is undone', async () => {
    const item = newItem('taken-back');
    await api.stock(item, 5);
    const held = expectReservation(await api.reserve({ lines: [{ itemId: item, quantity: 2 }] }), 201);
    const { redis, keys } = t.app.runtime;
    const holds = keys.item(item).holds;
    const field = holdField(held.id, 'default');
    const pending = (await redis.hget(holds, field))!;
    const hold = parseHold(pending)!;
    // What Redis shows while a confirm is decided slot by slot on a cluster, before a later slot refuses it.
    await redis.hset(holds, field, formatHold({ ...hold, state: HoldState.confirmed }));
    const release = api.release(held.id);
    await new Promise((resolve) => setTimeout(resolve, 300));
    // The confirm is taken back (its earlier slots undone): no record of it will come.
    await redis.hset(holds, field, pending);
    const released = expectReservation(await release, 200);
    expect(released.status).toBe('released');
    expect((await api.figures(item)).reserved).toBe(0);
  });
});
