import { describe, expect, it } from 'vitest';
import type { ReservationDocument } from '../../src/domain/schemas.js';
import { newItem } from '../helpers/app.js';
import {
  expectInvalidFields,
  expectPage,
  expectProblem,
  expectReleased,
  expectReservation,
  range,
  useHttpApp,
} from '../helpers/api.js';
import { untilTime } from '../helpers/wait.js';

// api.md, "Saga operations", by reference: GET /reservations?reference=… and POST /reservations/release.
const { api } = useHttpApp();

let refCounter = 0;
const newReference = (label = 'order') => `${label}-${process.pid}-${Date.now()}-${refCounter++}`;

async function stocked(quantity = 1_000): Promise<string> {
  const item = newItem();
  await api.stock(item, quantity);
  return item;
}

/** `n` reservations of one unit of `item` with `reference`, made one after the other (so created in this order). */
async function holdMany(item: string, reference: string, n: number, ttlSeconds?: number): Promise<ReservationDocument[]> {
  const docs: ReservationDocument[] = [];
  for (const _ of range(n)) {
    docs.push(await api.hold({ lines: [{ itemId: item, quantity: 1 }], reference, ...(ttlSeconds ? { ttlSeconds } : {}) }));
  }
  return docs;
}

/** Newest first, as the list orders them: createdAt descending, then id descending. */
const newestFirst = (docs: readonly ReservationDocument[]) =>
  [...docs].sort((a, b) => (a.createdAt !== b.createdAt ? (a.createdAt < b.createdAt ? 1 : -1) : a.id < b.id ? 1 : -1));

/** Every page of a list, following nextCursor; `between` runs before each next page is read. */
async function allPages(query: Record<string, string | number>, between?: () => Promise<void>): Promise<ReservationDocument[][]> {
  const pages: ReservationDocument[][] = [];
  let cursor: string | null = null;
  do {
    const page = expectPage(await api.listByReference(cursor === null ? query : { ...query, cursor }));
    pages.push(page.items);
    cursor = page.nextCursor;
    if (cursor !== null) await between?.();
  } while (cursor !== null);
  return pages;
}

describe('GET /reservations?reference=… validation', () => {
  it.each([
    ['no reference', '', 'reference'],
    ['only other parameters', 'status=pending&limit=5', 'reference'],
    ['an empty reference', 'reference=', 'reference'],
    ['a reference of 256 characters', `reference=${'r'.repeat(256)}`, 'reference'],
    ['a control character in the reference', 'reference=order%011', 'reference'],
    ['a C1 control character in the reference', 'reference=order%C2%85', 'reference'],
    ['the reference twice', 'reference=a&reference=b', 'reference'],
    ['an unknown status', 'reference=a&status=cancelled', 'status'],
    ['a status in capitals', 'reference=a&status=PENDING', 'status'],
    ['limit 0', 'reference=a&limit=0', 'limit'],
    ['limit 101', 'reference=a&limit=101', 'limit'],
    ['a negative limit', 'reference=a&limit=-1', 'limit'],
    ['a fractional limit', 'reference=a&limit=1.5', 'limit'],
    ['a limit that is no number', 'reference=a&limit=ten', 'limit'],
    ['an empty limit', 'reference=a&limit=', 'limit'],
    ['an empty cursor', 'reference=a&cursor=', 'cursor'],
    ['a cursor that is not base64url', 'reference=a&cursor=not%20a%20cursor', 'cursor'],
    ['a base64url cursor this service did not make', `reference=a&cursor=${Buffer.from('hello').toString('base64url')}`, 'cursor'],
    [
      'a cursor naming no UUID',
      `reference=a&cursor=${Buffer.from('1795694401250000.not-a-uuid').toString('base64url')}`,
      'cursor',
    ],
    ['a cursor of 201 characters', `reference=a&cursor=${'A'.repeat(201)}`, 'cursor'],
    ['an unknown parameter', 'reference=a&sort=asc', 'sort'],
  ])('%s → 400 naming %s', async (_label, query, field) => {
    expectInvalidFields(await api.listByReference(query), field);
  });

  it('names every field at once', async () => {
    expectInvalidFields(await api.listByReference('status=nope&limit=0'), 'reference', 'status', 'limit');
  });

  it('accepts a reference of 255 characters, limit 1 and limit 100, and each status', async () => {
    expect(expectPage(await api.listByReference({ reference: 'r'.repeat(255) })).items).toEqual([]);
    for (const limit of [1, 100]) expect(expectPage(await api.listByReference({ reference: 'a', limit })).nextCursor).toBeNull();
    for (const status of ['pending', 'confirmed', 'released', 'expired']) {
      expect(expectPage(await api.listByReference({ reference: 'a', status })).items).toEqual([]);
    }
  });

  it('an unknown reference → 200, no items, no next page', async () => {
    expect(expectPage(await api.listByReference({ reference: newReference() }))).toEqual({ items: [], nextCursor: null });
  });
});

describe('GET /reservations?reference=…', () => {
  it('lists every reservation of the reference, newest first, as GET /reservations/{id} reads them; none of another', async () => {
    const item = await stocked();
    const reference = newReference();
    const mine = await holdMany(item, reference, 3);
    await holdMany(item, newReference(), 2);
    await api.hold({ lines: [{ itemId: item, quantity: 1 }] });
    const { items, nextCursor } = expectPage(await api.listByReference({ reference }));
    expect(items).toEqual(newestFirst(mine));
    expect(items.map((d) => d.id)).toEqual(mine.map((d) => d.id).reverse());
    expect(nextCursor).toBeNull();
    for (const doc of items) expect(expectReservation(await api.get(doc.id), 200)).toEqual(doc);
  });

  it('defaults to 20 items a page', async () => {
    const item = await stocked();
    const reference = newReference();
    await holdMany(item, reference, 21);
    const first = expectPage(await api.listByReference({ reference }));
    expect(first.items).toHaveLength(20);
    expect(first.nextCursor).not.toBeNull();
    const second = expectPage(await api.listByReference({ reference, cursor: first.nextCursor! }));
    expect(second.items).toHaveLength(1);
    expect(second.nextCursor).toBeNull();
  });

  it('pages through more than `limit` items in a stable order, without duplicates or gaps, while new ones are created', async () => {
    const item = await stocked();
    const reference = newReference();
    const before = await holdMany(item, reference, 23);
    const created: ReservationDocument[] = [];
    const pages = await allPages({ reference, limit: 5 }, async () => {
      created.push(...(await holdMany(item, reference, 2)));
    });
    expect(pages.map((p) => p.length)).toEqual([5, 5, 5, 5, 3]);
    // The pages read exactly the reservations there when paging began, newest first: the new ones sort above the
    // first page, never into a later one.
    expect(pages.flat().map((d) => d.id)).toEqual(newestFirst(before).map((d) => d.id));
    expect(created).toHaveLength(8);
    // And they are all there now, on top.
    const now = (await allPages({ reference, limit: 100 })).flat();
    expect(now.map((d) => d.id)).toEqual(newestFirst([...before, ...created]).map((d) => d.id));
  });

  it('pages of limit 1 and 100 agree with one page', async () => {
    const item = await stocked();
    const reference = newReference();
    const docs = await holdMany(item, reference, 4);
    const ones = await allPages({ reference, limit: 1 });
    expect(ones.map((p) => p.length)).toEqual([1, 1, 1, 1]);
    expect(ones.flat()).toEqual(newestFirst(docs));
    expect(await allPages({ reference, limit: 100 })).toEqual([newestFirst(docs)]);
  });

  it('filters by status as read now: a pending reservation past its TTL is expired, not pending', async () => {
    const item = await stocked();
    const reference = newReference();
    const [confirmed, released, pending] = await holdMany(item, reference, 3);
    const [expiring] = await holdMany(item, reference, 1, 1);
    expectReservation(await api.confirm(confirmed!.id), 200);
    expectReservation(await api.release(released!.id), 200);
    await untilTime(expiring!.expiresAt);
    const ids = async (status: string) => expectPage(await api.listByReference({ reference, status })).items.map((d) => [d.id, d.status]);
    expect(await ids('pending')).toEqual([[pending!.id, 'pending']]);
    expect(await ids('confirmed')).toEqual([[confirmed!.id, 'confirmed']]);
    expect(await ids('released')).toEqual([[released!.id, 'released']]);
    expect(await ids('expired')).toEqual([[expiring!.id, 'expired']]);
    const all = expectPage(await api.listByReference({ reference })).items;
    expect(all.find((d) => d.id === expiring!.id)).toMatchObject({ status: 'expired', updatedAt: expiring!.expiresAt });
  });

  it('pages a status filter with a cursor', async () => {
    const item = await stocked();
    const reference = newReference();
    const docs = await holdMany(item, reference, 7);
    for (const d of docs.filter((_, i) => i % 2 === 0)) expectReservation(await api.release(d.id), 200);
    const pages = await allPages({ reference, status: 'pending', limit: 2 });
    expect(pages.map((p) => p.length)).toEqual([2, 1]);
    expect(pages.flat().map((d) => d.id)).toEqual(newestFirst(docs.filter((_, i) => i % 2 === 1)).map((d) => d.id));
  });
});

describe('POST /reservations/release', () => {
  it.each([
    ['no body', undefined, 'body'],
    ['an empty object', {}, 'reference'],
    ['an empty reference', { reference: '' }, 'reference'],
    ['a reference of 256 characters', { reference: 'r'.repeat(256) }, 'reference'],
    ['a control character in the reference', { reference: 'order\u0000' }, 'reference'],
    ['a reference that is not a string', { reference: 123 }, 'reference'],
    ['an unknown field', { reference: 'a', status: 'pending' }, 'status'],
    ['an array', [{ reference: 'a' }], 'body'],
  ])('%s → 400 naming %s, and nothing changes', async (_label, body, field) => {
    const item = await stocked();
    const [held] = await holdMany(item, 'a', 1);
    expectInvalidFields(await api.releaseByReference(body), field);
    expect(expectReservation(await api.get(held!.id), 200).status).toBe('pending');
    expectReservation(await api.release(held!.id), 200);
  });

  it('releases the pending reservations; confirmed, released and expired ones stay so; the units come back', async () => {
    const item = await stocked(10);
    const reference = newReference();
    const [confirmed, released, pendingA, pendingB] = await holdMany(item, reference, 4);
    const [expiring] = await holdMany(item, reference, 1, 1);
    const other = await api.hold({ lines: [{ itemId: item, quantity: 1 }], reference: newReference() });
    expectReservation(await api.confirm(confirmed!.id), 200);
    const releasedDoc = expectReservation(await api.release(released!.id), 200);
    await untilTime(expiring!.expiresAt);
    expect(await api.at(item)).toMatchObject({ onHand: 9, reserved: 3 });

    const answer = expectReleased(await api.releaseByReference({ reference }));
    expect(answer.reference).toBe(reference);
    expect(answer.items.map((d) => [d.id, d.status])).toEqual([
      [expiring!.id, 'expired'],
      [pendingB!.id, 'released'],
      [pendingA!.id, 'released'],
      [released!.id, 'released'],
      [confirmed!.id, 'confirmed'],
    ]);
    expect(answer.items.find((d) => d.id === released!.id)).toEqual(releasedDoc);
    // Each as GET reads it, and the list too.
    for (const doc of answer.items) expect(expectReservation(await api.get(doc.id), 200)).toEqual(doc);
    expect(expectPage(await api.listByReference({ reference })).items).toEqual(answer.items);
    expect(await api.at(item)).toMatchObject({ onHand: 9, reserved: 1, available: 8 });
    expect(expectReservation(await api.get(other.id), 200).status).toBe('pending');

    // Idempotent: again, nothing more released, the same answer.
    expect(expectReleased(await api.releaseByReference({ reference }))).toEqual(answer);
    expect(await api.at(item)).toMatchObject({ onHand: 9, reserved: 1 });
  });

  it('an unknown reference → 200 with no items', async () => {
    const reference = newReference();
    expect(expectReleased(await api.releaseByReference({ reference }))).toEqual({ reference, items: [] });
  });

  it('a reference of 100 reservations is released whole; one of 101 is refused whole, nothing released', async () => {
    const item = await stocked();
    const hundred = newReference();
    await holdMany(item, hundred, 100);
    const answer = expectReleased(await api.releaseByReference({ reference: hundred }));
    expect(answer.items).toHaveLength(100);
    expect(answer.items.every((d) => d.status === 'released')).toBe(true);

    const over = newReference();
    const docs = await holdMany(item, over, 101);
    const res = await api.releaseByReference({ reference: over });
    expectProblem(res, 'too_many_reservations');
    const left = (await allPages({ reference: over, limit: 100 })).flat();
    expect(left.map((d) => d.status)).toEqual(docs.map(() => 'pending'));
    expect(await api.at(item)).toMatchObject({ reserved: 101 });
  });

  it('does not collide with the routes of one reservation', async () => {
    const item = await stocked();
    const reference = newReference();
    const [held] = await holdMany(item, reference, 1);
    // "release" as an id names no reservation.
    expectProblem(await api.get('release'), 'reservation_not_found');
    expectProblem(await api.request({ method: 'POST', url: '/reservations/release/release' }), 'reservation_not_found');
    expectProblem(await api.request({ method: 'POST', url: '/reservations/release/confirm' }), 'reservation_not_found');
    expectProblem(await api.request({ method: 'PUT', url: '/reservations/release' }), 'method_not_allowed');
    // One reservation's release still is that.
    expect(expectReservation(await api.release(held!.id), 200).status).toBe('released');
    expect(expectReleased(await api.releaseByReference({ reference })).items.map((d) => d.status)).toEqual(['released']);
  });
});
