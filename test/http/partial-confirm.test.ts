import { describe, expect, it } from 'vitest';
import type { ReservationDocument } from '../../src/domain/schemas.js';
import { newItem } from '../helpers/app.js';
import { expectInvalidFields, expectProblem, expectReservation, range, useHttpApp, type Figures } from '../helpers/api.js';
import { checkInvariants } from '../helpers/invariants.js';
import { untilTime } from '../helpers/wait.js';

/**
 * api.md "Saga operations", **Partial confirm**: `POST /reservations/{id}/confirm` with `{ "lines": [ { itemId,
 * location?, quantity } ] }` sells the units listed and releases everything else the reservation holds, in one
 * step; its lines then carry `confirmedQuantity`. Each pair at most once, held by the reservation, 1 ≤ quantity ≤
 * held, else 400 naming the field. No body, or no `lines`, confirms everything as before.
 */
const { t, api } = useHttpApp();

/** A cart over three items: 3 of `a` at default, 2 of `b` at wh-1, 1 of `c` at default; each stocked with 10. */
async function cart(ttlSeconds = 600): Promise<{ a: string; b: string; c: string; r: ReservationDocument }> {
  const [a, b, c] = [newItem('pc-a'), newItem('pc-b'), newItem('pc-c')];
  await api.stock(a, 10);
  await api.stock(b, 10, 'wh-1');
  await api.stock(c, 10);
  const r = await api.hold({
    lines: [
      { itemId: a, quantity: 3 },
      { itemId: b, quantity: 2, location: 'wh-1' },
      { itemId: c, quantity: 1 },
    ],
    ttlSeconds,
  });
  return { a, b, c, r };
}

/** Each item's figures at the cart's locations. */
const figuresOf = async (c: { a: string; b: string; c: string }): Promise<Figures[]> =>
  Promise.all([api.at(c.a), api.at(c.b, 'wh-1'), api.at(c.c)]);

/** The request changed nothing: the reservation reads as before and every figure is as before. */
async function expectUnchanged(c: { a: string; b: string; c: string; r: ReservationDocument }, before: Figures[]): Promise<void> {
  expect(expectReservation(await api.get(c.r.id), 200)).toEqual(c.r);
  expect(await figuresOf(c)).toEqual(before);
}

describe('partial confirm: validation (400, nothing changed)', () => {
  it.each([
    ['lines empty', 'lines', { lines: [] }],
    ['101 lines', 'lines', { lines: range(101).map((n) => ({ itemId: `i-${n}`, quantity: 1 })) }],
    ['lines not an array', 'lines', { lines: { itemId: 'x', quantity: 1 } }],
    ['quantity 0', 'lines[0].quantity', { lines: [{ itemId: 'x', quantity: 0 }] }],
    ['a negative quantity', 'lines[0].quantity', { lines: [{ itemId: 'x', quantity: -1 }] }],
    ['a fractional quantity', 'lines[0].quantity', { lines: [{ itemId: 'x', quantity: 1.5 }] }],
    ['a quantity in a string', 'lines[0].quantity', { lines: [{ itemId: 'x', quantity: '1' }] }],
    ['quantity 1,000,001', 'lines[0].quantity', { lines: [{ itemId: 'x', quantity: 1_000_001 }] }],
    ['no quantity', 'lines[0].quantity', { lines: [{ itemId: 'x' }] }],
    ['no itemId', 'lines[0].itemId', { lines: [{ quantity: 1 }] }],
    ['an itemId that is not an identifier', 'lines[0].itemId', { lines: [{ itemId: 'a b', quantity: 1 }] }],
    ['a location that is not an identifier', 'lines[0].location', { lines: [{ itemId: 'x', location: '..', quantity: 1 }] }],
    ['another member in a line', 'lines[0].price', { lines: [{ itemId: 'x', quantity: 1, price: 3 }] }],
    ['another member in the body', 'all', { lines: [{ itemId: 'x', quantity: 1 }], all: true }],
    ['a body that is an array', 'body', [{ itemId: 'x', quantity: 1 }]],
  ])('%s → 400 naming %s', async (_label, field, body) => {
    const c = await cart();
    const before = await figuresOf(c);
    expectInvalidFields(await api.confirm(c.r.id, undefined, body), field);
    await expectUnchanged(c, before);
  });

  it('a pair named twice → 400 naming the second, even for an id that names no reservation (400 before 404)', async () => {
    const c = await cart();
    const before = await figuresOf(c);
    const twice = { lines: [{ itemId: c.a, quantity: 1 }, { itemId: c.c, quantity: 1 }, { itemId: c.a, location: 'default', quantity: 1 }] };
    expectInvalidFields(await api.confirm(c.r.id, undefined, twice), 'lines[2]');
    expectInvalidFields(await api.confirm('0190b1c2-0000-7000-8000-000000000000', undefined, twice), 'lines[2]');
    await expectUnchanged(c, before);
  });

  it('a valid body for an id that names no reservation → 404', async () => {
    expectProblem(await api.confirm('0190b1c2-0000-7000-8000-000000000000', undefined, { lines: [{ itemId: 'x', quantity: 1 }] }), 'reservation_not_found');
    expectProblem(await api.confirm('not-a-uuid', undefined, { lines: [{ itemId: 'x', quantity: 1 }] }), 'reservation_not_found');
  });

  it('a pair the reservation does not hold (another item, or a held item at another location) → 400 naming it', async () => {
    const c = await cart();
    const before = await figuresOf(c);
    expectInvalidFields(await api.confirm(c.r.id, undefined, { lines: [{ itemId: c.a, quantity: 1 }, { itemId: newItem(), quantity: 1 }] }), 'lines[1]');
    expectInvalidFields(await api.confirm(c.r.id, undefined, { lines: [{ itemId: c.b, quantity: 1 }] }), 'lines[0]'); // b is at wh-1
    expectInvalidFields(await api.confirm(c.r.id, undefined, { lines: [{ itemId: c.a, location: 'wh-1', quantity: 1 }] }), 'lines[0]');
    await expectUnchanged(c, before);
  });

  it('a quantity above what is held → 400 naming it; every wrong line is named at once', async () => {
    const c = await cart();
    const before = await figuresOf(c);
    const res = await api.confirm(c.r.id, undefined, { lines: [{ itemId: c.a, quantity: 4 }] });
    expectInvalidFields(res, 'lines[0].quantity');
    expect(expectProblem(res, 'validation_failed').detail).toContain('<= 3');
    expectInvalidFields(
      await api.confirm(c.r.id, undefined, {
        lines: [{ itemId: c.a, quantity: 3 }, { itemId: c.b, location: 'wh-1', quantity: 3 }, { itemId: 'nowhere', quantity: 1 }],
      }),
      'lines[1].quantity',
      'lines[2]',
    );
    await expectUnchanged(c, before);
  });

  it('judges the pairs whatever the state: a pair not held is 400 on a confirmed, released or expired reservation too', async () => {
    const confirmed = await cart();
    expectReservation(await api.confirm(confirmed.r.id), 200);
    const released = await cart();
    expectReservation(await api.release(released.r.id), 200);
    const expired = await cart(1);
    await untilTime(Date.parse(expired.r.expiresAt) + 50);
    for (const c of [confirmed, released, expired]) {
      expectInvalidFields(await api.confirm(c.r.id, undefined, { lines: [{ itemId: c.a, quantity: 9 }] }), 'lines[0].quantity');
    }
  });
});

describe('partial confirm', () => {
  it('sells the units named and releases the rest in one step; the lines carry confirmedQuantity', async () => {
    const c = await cart();
    const res = await api.confirm(c.r.id, undefined, { lines: [{ itemId: c.a, quantity: 2 }, { itemId: c.b, location: 'wh-1', quantity: 2 }] });
    const doc = expectReservation(res, 200);
    expect(doc).toMatchObject({ id: c.r.id, status: 'confirmed', version: 2, expiresAt: c.r.expiresAt, createdAt: c.r.createdAt });
    expect(doc.lines).toEqual([
      { itemId: c.a, location: 'default', quantity: 3, confirmedQuantity: 2 },
      { itemId: c.b, location: 'wh-1', quantity: 2, confirmedQuantity: 2 },
      { itemId: c.c, location: 'default', quantity: 1, confirmedQuantity: 0 },
    ]);
    expect(Date.parse(doc.updatedAt)).toBeGreaterThanOrEqual(Date.parse(c.r.createdAt));
    // Sold units left on-hand; released ones are available again at once.
    expect(await figuresOf(c)).toEqual([
      { onHand: 8, reserved: 0, available: 8 },
      { onHand: 8, reserved: 0, available: 8 },
      { onHand: 10, reserved: 0, available: 10 },
    ]);
    expect(expectReservation(await api.get(c.r.id), 200)).toEqual(doc);
    await checkInvariants(t.app, [c.a, c.b, c.c]);
  });

  it('confirming a confirmed reservation answers it unchanged, whatever the body or If-Match; release → 409', async () => {
    const c = await cart();
    const doc = expectReservation(await api.confirm(c.r.id, undefined, { lines: [{ itemId: c.c, quantity: 1 }] }), 200);
    const after = await figuresOf(c);
    expect(expectReservation(await api.confirm(c.r.id, undefined, { lines: [{ itemId: c.c, quantity: 1 }] }), 200)).toEqual(doc);
    expect(expectReservation(await api.confirm(c.r.id, undefined, { lines: [{ itemId: c.a, quantity: 3 }] }), 200)).toEqual(doc);
    expect(expectReservation(await api.confirm(c.r.id), 200)).toEqual(doc);
    expect(expectReservation(await api.confirm(c.r.id, '"1"', { lines: [{ itemId: c.a, quantity: 1 }] }), 200)).toEqual(doc);
    expectProblem(await api.release(c.r.id), 'reservation_confirmed');
    expect(await figuresOf(c)).toEqual(after);
    await checkInvariants(t.app, [c.a, c.b, c.c]);
  });

  it('every pair at its full quantity sells everything (and says so per line); the limits 1 and held are taken', async () => {
    const c = await cart();
    const all = { lines: [{ itemId: c.c, quantity: 1 }, { itemId: c.b, location: 'wh-1', quantity: 2 }, { itemId: c.a, location: 'default', quantity: 3 }] };
    const doc = expectReservation(await api.confirm(c.r.id, undefined, all), 200);
    expect(doc.lines.map((l) => l.confirmedQuantity)).toEqual([3, 2, 1]);
    expect(await figuresOf(c)).toEqual([
      { onHand: 7, reserved: 0, available: 7 },
      { onHand: 8, reserved: 0, available: 8 },
      { onHand: 9, reserved: 0, available: 9 },
    ]);
    await checkInvariants(t.app, [c.a, c.b, c.c]);
  });

  it('no body, {} or an empty JSON body confirms everything as before: no confirmedQuantity', async () => {
    for (const send of [
      (id: string) => api.confirm(id),
      (id: string) => api.confirm(id, undefined, {}),
      (id: string) => api.request({ method: 'POST', url: `/reservations/${id}/confirm`, headers: { 'content-type': 'application/json' }, payload: '' }),
    ]) {
      const c = await cart();
      const doc = expectReservation(await send(c.r.id), 200);
      expect(doc).toEqual({ ...c.r, status: 'confirmed', updatedAt: doc.updatedAt, version: 2 });
      expect(await figuresOf(c)).toEqual([
        { onHand: 7, reserved: 0, available: 7 },
        { onHand: 8, reserved: 0, available: 8 },
        { onHand: 9, reserved: 0, available: 9 },
      ]);
    }
  });

  it('If-Match: another version → 412, nothing changed; the current one → confirmed partly', async () => {
    const c = await cart();
    const before = await figuresOf(c);
    const body = { lines: [{ itemId: c.a, quantity: 1 }] };
    expectProblem(await api.confirm(c.r.id, '"2"', body), 'precondition_failed');
    expectInvalidFields(await api.confirm(c.r.id, 'W/"1"', body), 'If-Match');
    await expectUnchanged(c, before);
    const doc = expectReservation(await api.confirm(c.r.id, '"1"', body), 200);
    expect(doc.lines.map((l) => l.confirmedQuantity)).toEqual([1, 0, 0]);
  });

  it('released → 409 reservation_released; past its TTL → 409 reservation_expired; nothing changed', async () => {
    const released = await cart();
    const doc = expectReservation(await api.release(released.r.id), 200);
    const before = await figuresOf(released);
    expectProblem(await api.confirm(released.r.id, undefined, { lines: [{ itemId: released.a, quantity: 1 }] }), 'reservation_released');
    expect(expectReservation(await api.get(released.r.id), 200)).toEqual(doc);
    expect(await figuresOf(released)).toEqual(before);

    const expired = await cart(1);
    await untilTime(Date.parse(expired.r.expiresAt) + 50);
    expectProblem(await api.confirm(expired.r.id, undefined, { lines: [{ itemId: expired.a, quantity: 1 }] }), 'reservation_expired');
    expect(expectReservation(await api.get(expired.r.id), 200).status).toBe('expired');
    expect(await api.at(expired.a)).toEqual({ onHand: 10, reserved: 0, available: 10 });
  });

  it('on-hand set below what is held: a partial confirm succeeds while on-hand covers the units it sells', async () => {
    const c = await cart();
    await api.stock(c.a, 1); // 3 held, 1 on hand
    const short = await api.confirm(c.r.id, undefined, { lines: [{ itemId: c.a, quantity: 2 }] });
    expect(expectProblem(short, 'insufficient_stock').lines).toEqual([{ itemId: c.a, location: 'default', requested: 2, available: 1 }]);
    expect(expectReservation(await api.get(c.r.id), 200)).toEqual(c.r);
    const doc = expectReservation(await api.confirm(c.r.id, undefined, { lines: [{ itemId: c.a, quantity: 1 }] }), 200);
    expect(doc.lines.map((l) => l.confirmedQuantity)).toEqual([1, 0, 0]);
    expect(await api.at(c.a)).toEqual({ onHand: 0, reserved: 0, available: 0 });
    await checkInvariants(t.app, [c.a, c.b, c.c]);
  });

  it('acts on the lines as allocated: a split line is confirmed per location', async () => {
    const item = newItem('pc-split');
    await api.stock(item, 3, 'wh-berlin');
    await api.stock(item, 5, 'wh-paris');
    const r = await api.hold({ lines: [{ itemId: item, quantity: 5 }], allocation: { strategy: 'ordered', locations: ['wh-berlin', 'wh-paris'], split: true } });
    expect(r.lines).toEqual([
      { itemId: item, location: 'wh-berlin', quantity: 3 },
      { itemId: item, location: 'wh-paris', quantity: 2 },
    ]);
    // The request's line (5 units, allocated) is not a held pair: the pairs are (item, wh-berlin) and (item, wh-paris).
    expectInvalidFields(await api.confirm(r.id, undefined, { lines: [{ itemId: item, quantity: 4 }] }), 'lines[0]');
    const doc = expectReservation(await api.confirm(r.id, undefined, { lines: [{ itemId: item, location: 'wh-paris', quantity: 2 }] }), 200);
    expect(doc.lines.map((l) => l.confirmedQuantity)).toEqual([0, 2]);
    expect(await api.at(item, 'wh-berlin')).toEqual({ onHand: 3, reserved: 0, available: 3 });
    expect(await api.at(item, 'wh-paris')).toEqual({ onHand: 3, reserved: 0, available: 3 });
    await checkInvariants(t.app, [item]);
  });
});
