import { describe, expect, it } from 'vitest';
import { newItem, newKey } from '../helpers/app.js';
import {
  expectInvalid,
  expectInvalidFields,
  expectProblem,
  expectReservation,
  idOfLength,
  useHttpApp,
  type ReserveBody,
} from '../helpers/api.js';

// api.md, "Reservations" (POST /reservations) and the request rows of "Identifiers and limits".
const { api } = useHttpApp();

/** A fresh item with `quantity` units at "default", and a one-line body reserving `want` of it. */
async function stocked(quantity = 10): Promise<string> {
  const item = newItem();
  await api.stock(item, quantity);
  return item;
}

describe('POST /reservations: the created document', () => {
  it('answers 201 with the exact reservation document, and GET reads the same document', async () => {
    const a = await stocked(10);
    const b = newItem();
    await api.stock(b, 4, 'wh-2');
    const res = await api.reserve({
      lines: [
        { itemId: a, quantity: 2 },
        { itemId: b, quantity: 1, location: 'wh-2' },
      ],
      ttlSeconds: 600,
      reference: 'order-123',
      metadata: { channel: 'web', cart: 'c-9' },
    });
    const doc = expectReservation(res, 201);
    expect(doc).toEqual({
      id: doc.id,
      status: 'pending',
      reference: 'order-123',
      lines: [
        { itemId: a, location: 'default', quantity: 2 },
        { itemId: b, location: 'wh-2', quantity: 1 },
      ],
      expiresAt: doc.expiresAt,
      createdAt: doc.createdAt,
      updatedAt: doc.createdAt,
      metadata: { channel: 'web', cart: 'c-9' },
      priority: 'normal',
      allocation: null,
      version: 1,
    });
    expect(Date.parse(doc.expiresAt) - Date.parse(doc.createdAt)).toBe(600_000);
    expect(expectReservation(await api.get(doc.id), 200)).toEqual(doc);
    expect(await api.at(a)).toEqual({ onHand: 10, reserved: 2, available: 8 });
    expect(await api.at(b, 'wh-2')).toEqual({ onHand: 4, reserved: 1, available: 3 });
  });

  it('reads absent optional fields back as reference null, metadata {}, and a 900-second TTL', async () => {
    const item = await stocked();
    const doc = await api.hold({ lines: [{ itemId: item, quantity: 1 }] });
    expect(doc.reference).toBeNull();
    expect(doc.metadata).toEqual({});
    expect(doc.lines).toEqual([{ itemId: item, location: 'default', quantity: 1 }]);
    expect(Date.parse(doc.expiresAt) - Date.parse(doc.createdAt)).toBe(900_000);
    expect(expectReservation(await api.get(doc.id), 200)).toEqual(doc);
  });

  it('gives every reservation its own id', async () => {
    const item = await stocked();
    const body = { lines: [{ itemId: item, quantity: 1 }] };
    const first = await api.hold(body);
    const second = await api.hold(body);
    expect(second.id).not.toBe(first.id);
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 2, available: 8 });
  });

  it('accepts Content-Type application/json with a charset', async () => {
    const item = await stocked();
    const json = JSON.stringify({ lines: [{ itemId: item, quantity: 1 }] });
    const res = await api.reserveRaw(json, newKey(), 'application/json; charset=utf-8');
    expectReservation(res, 201);
  });

  it('holds exactly what is available, and no unit more', async () => {
    const item = await stocked(5);
    await api.hold({ lines: [{ itemId: item, quantity: 5 }] });
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 5, available: 0 });
    expectProblem(await api.reserve({ lines: [{ itemId: item, quantity: 1 }] }), 'insufficient_stock');
  });
});

describe('POST /reservations: limits accepted at their edge', () => {
  it('quantity 1 and 1,000,000', async () => {
    const item = await stocked(1_000_001);
    expect((await api.hold({ lines: [{ itemId: item, quantity: 1 }] })).lines[0]!.quantity).toBe(1);
    expect((await api.hold({ lines: [{ itemId: item, quantity: 1_000_000 }] })).lines[0]!.quantity).toBe(1_000_000);
    expect(await api.at(item)).toEqual({ onHand: 1_000_001, reserved: 1_000_001, available: 0 });
  });

  it('100 lines', async () => {
    const item = newItem();
    const locations = Array.from({ length: 100 }, (_, i) => `loc-${String(i).padStart(3, '0')}`);
    for (const location of locations) await api.stock(item, 1, location);
    const doc = await api.hold({ lines: locations.map((location) => ({ itemId: item, location, quantity: 1 })) });
    expect(doc.lines).toHaveLength(100);
    expect(doc.lines.map((l) => l.location)).toEqual(locations);
    const figures = await api.figures(item);
    expect({ onHand: figures.onHand, reserved: figures.reserved, available: figures.available }).toEqual({
      onHand: 100,
      reserved: 100,
      available: 0,
    });
  });

  it('the same item at two locations (only an identical (itemId, location) pair is a duplicate)', async () => {
    const item = await stocked(3);
    await api.stock(item, 3, 'wh-1');
    const doc = await api.hold({
      lines: [
        { itemId: item, quantity: 1 },
        { itemId: item, location: 'wh-1', quantity: 2 },
      ],
    });
    expect(doc.lines).toEqual([
      { itemId: item, location: 'default', quantity: 1 },
      { itemId: item, location: 'wh-1', quantity: 2 },
    ]);
  });

  it('a location of 64 characters', async () => {
    const item = newItem();
    const location = idOfLength(64, 'AZaz09._:-');
    await api.stock(item, 1, location);
    expect((await api.hold({ lines: [{ itemId: item, location, quantity: 1 }] })).lines[0]!.location).toBe(location);
  });

  it('an itemId of 128 characters passes validation (never stocked, so 404 rather than 400)', async () => {
    expectProblem(await api.reserve({ lines: [{ itemId: idOfLength(128, 'long'), quantity: 1 }] }), 'item_not_found');
  });

  it('ttlSeconds 1 and 86,400', async () => {
    const item = await stocked();
    for (const ttlSeconds of [1, 86_400]) {
      const doc = await api.hold({ lines: [{ itemId: item, quantity: 1 }], ttlSeconds });
      expect(Date.parse(doc.expiresAt) - Date.parse(doc.createdAt)).toBe(ttlSeconds * 1000);
    }
  });

  it('a reference of 1 and 255 characters, read back as sent', async () => {
    const item = await stocked();
    for (const reference of ['r', 'r'.repeat(255), 'any text: ünïcode ✓ / spaces']) {
      const doc = await api.hold({ lines: [{ itemId: item, quantity: 1 }], reference });
      expect(doc.reference).toBe(reference);
      expect(expectReservation(await api.get(doc.id), 200).reference).toBe(reference);
    }
  });

  it('metadata of 20 keys, keys of 1 and 64 characters, values of 0 and 500 characters', async () => {
    const item = await stocked();
    const metadata: Record<string, string> = { k: '', ['k'.repeat(64)]: 'v'.repeat(500) };
    for (let i = 0; i < 18; i++) metadata[`key-${i}`] = `value-${i}`;
    expect(Object.keys(metadata)).toHaveLength(20);
    const doc = await api.hold({ lines: [{ itemId: item, quantity: 1 }], metadata });
    expect(doc.metadata).toEqual(metadata);
    expect(expectReservation(await api.get(doc.id), 200).metadata).toEqual(metadata);
  });

  it('an Idempotency-Key of 1 and 255 visible ASCII characters (0x21–0x7E)', async () => {
    const item = await stocked();
    const visible = Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => String.fromCharCode(0x21 + i)).join('');
    for (const key of ['!', `${newKey()}~`.padEnd(255, 'k'), `${newKey()}-${visible}`]) {
      expect(key.length).toBeLessThanOrEqual(255);
      await api.hold({ lines: [{ itemId: item, quantity: 1 }] }, key);
    }
  });
});

describe('POST /reservations: rejected with 400 validation_failed naming the field; nothing is held', () => {
  const line = (item: string, extra: Record<string, unknown> = {}) => ({ itemId: item, quantity: 1, ...extra });
  const keys = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 'v']));
  const cases: [string, (item: string) => unknown, string[]][] = [
    ['quantity 0', (i) => ({ lines: [line(i, { quantity: 0 })] }), ['lines[0].quantity']],
    ['quantity 1,000,001', (i) => ({ lines: [line(i, { quantity: 1_000_001 })] }), ['lines[0].quantity']],
    ['a negative quantity', (i) => ({ lines: [line(i, { quantity: -1 })] }), ['lines[0].quantity']],
    ['a non-integer quantity', (i) => ({ lines: [line(i, { quantity: 1.5 })] }), ['lines[0].quantity']],
    ['quantity as a string', (i) => ({ lines: [line(i, { quantity: '1' })] }), ['lines[0].quantity']],
    ['a missing quantity', (i) => ({ lines: [{ itemId: i }] }), ['lines[0].quantity']],
    ['a missing itemId', () => ({ lines: [{ quantity: 1 }] }), ['lines[0].itemId']],
    ['an itemId of 129 characters', () => ({ lines: [line(idOfLength(129, 'long'))] }), ['lines[0].itemId']],
    ['an empty itemId', () => ({ lines: [line('')] }), ['lines[0].itemId']],
    ['an itemId with a space', () => ({ lines: [line('sku 1')] }), ['lines[0].itemId']],
    ['an itemId with a slash', () => ({ lines: [line('sku/1')] }), ['lines[0].itemId']],
    ['an itemId with a non-ASCII letter', () => ({ lines: [line('skü')] }), ['lines[0].itemId']],
    ['an itemId that is a number', () => ({ lines: [line(42 as unknown as string)] }), ['lines[0].itemId']],
    ['a location of 65 characters', (i) => ({ lines: [line(i, { location: 'l'.repeat(65) })] }), ['lines[0].location']],
    ['an empty location', (i) => ({ lines: [line(i, { location: '' })] }), ['lines[0].location']],
    ['a location outside the alphabet', (i) => ({ lines: [line(i, { location: 'wh#1' })] }), ['lines[0].location']],
    ['an unknown field in a line', (i) => ({ lines: [line(i, { price: 3 })] }), ['lines[0].price']],
    ['an error in the second line', (i) => ({ lines: [line(i), line(newItem(), { quantity: 0 })] }), ['lines[1].quantity']],
    ['no lines', () => ({ lines: [] }), ['lines']],
    ['101 lines', (i) => ({ lines: Array.from({ length: 101 }, (_, n) => line(i, { location: `l${n}` })) }), ['lines']],
    ['lines that is not an array', (i) => ({ lines: line(i) }), ['lines']],
    ['a line that is not an object', () => ({ lines: ['sku-1'] }), ['lines[0]']],
    ['a missing lines', () => ({ ttlSeconds: 60 }), ['lines']],
    ['ttlSeconds 0', (i) => ({ lines: [line(i)], ttlSeconds: 0 }), ['ttlSeconds']],
    ['ttlSeconds 86,401', (i) => ({ lines: [line(i)], ttlSeconds: 86_401 }), ['ttlSeconds']],
    ['a non-integer ttlSeconds', (i) => ({ lines: [line(i)], ttlSeconds: 1.5 }), ['ttlSeconds']],
    ['ttlSeconds as a string', (i) => ({ lines: [line(i)], ttlSeconds: '60' }), ['ttlSeconds']],
    ['a reference of 256 characters', (i) => ({ lines: [line(i)], reference: 'r'.repeat(256) }), ['reference']],
    ['an empty reference', (i) => ({ lines: [line(i)], reference: '' }), ['reference']],
    ['a reference that is a number', (i) => ({ lines: [line(i)], reference: 123 }), ['reference']],
    ['metadata of 21 keys', (i) => ({ lines: [line(i)], metadata: keys(21) }), ['metadata']],
    ['a metadata key of 65 characters', (i) => ({ lines: [line(i)], metadata: { ['k'.repeat(65)]: 'v' } }), [`metadata.${'k'.repeat(65)}`]],
    ['a metadata value of 501 characters', (i) => ({ lines: [line(i)], metadata: { note: 'v'.repeat(501) } }), ['metadata.note']],
    ['a metadata value that is a number', (i) => ({ lines: [line(i)], metadata: { count: 3 } }), ['metadata.count']],
    ['a metadata value that is null', (i) => ({ lines: [line(i)], metadata: { gone: null } }), ['metadata.gone']],
    ['a nested metadata object', (i) => ({ lines: [line(i)], metadata: { nested: { a: 'b' } } }), ['metadata.nested']],
    ['metadata that is an array', (i) => ({ lines: [line(i)], metadata: ['a'] }), ['metadata']],
    ['metadata that is a string', (i) => ({ lines: [line(i)], metadata: 'web' }), ['metadata']],
    ['an unknown top-level field', (i) => ({ lines: [line(i)], urgency: 'high' }), ['urgency']],
    [
      'a (itemId, location) pair named twice',
      (i) => ({ lines: [line(i, { location: 'wh-1' }), line(i), line(i, { location: 'wh-1', quantity: 2 })] }),
      ['lines[2]'],
    ],
    [
      'a pair named twice, once by omitting "default"',
      (i) => ({ lines: [line(i), line(i, { location: 'default' })] }),
      ['lines[1]'],
    ],
    [
      'several problems at once, each listed',
      (i) => ({ lines: [line(i, { quantity: 0, colour: 'red' })], ttlSeconds: 0, reference: '' }),
      ['lines[0].quantity', 'lines[0].colour', 'ttlSeconds', 'reference'],
    ],
  ];

  it.each(cases)('%s', async (_label, body, fields) => {
    const item = await stocked(5);
    await api.stock(item, 5, 'wh-1');
    const before = await api.figures(item);
    expectInvalidFields(await api.reserve(body(item)), ...fields);
    expect(await api.figures(item)).toEqual(before);
  });

  it.each([
    ['an empty metadata key', { '': 'v' }, 'metadata[""]'],
    ['a non-string value under a key with a dot', { 'a.b': 5 }, 'metadata["a.b"]'],
    ['a long value under a key with a dash', { 'x-1': 'v'.repeat(501) }, 'metadata["x-1"]'],
  ])('%s (a key that is not an identifier is quoted in the path)', async (_label, metadata, field) => {
    const item = await stocked(5);
    expectInvalidFields(await api.reserve({ lines: [{ itemId: item, quantity: 1 }], metadata }), field);
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 0, available: 5 });
  });

  it('a missing Idempotency-Key header (field Idempotency-Key)', async () => {
    const item = await stocked(5);
    expectInvalidFields(await api.reserve({ lines: [{ itemId: item, quantity: 1 }] }, null), 'Idempotency-Key');
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 0, available: 5 });
  });

  it.each([
    ['empty', ''],
    ['256 characters', 'k'.repeat(256)],
    ['containing a space', 'key 1'],
    ['containing a tab', 'key\t1'],
    ['containing a non-ASCII character', 'kéy'],
  ])('an Idempotency-Key %s (field Idempotency-Key)', async (_label, key) => {
    const item = await stocked(5);
    expectInvalidFields(await api.reserve({ lines: [{ itemId: item, quantity: 1 }] }, key), 'Idempotency-Key');
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 0, available: 5 });
  });
});

describe('POST /reservations: 404 item_not_found and 409 insufficient_stock hold nothing', () => {
  it('an item never stocked → 404; the stocked line is not held', async () => {
    const item = await stocked(5);
    const res = await api.reserve({ lines: [{ itemId: item, quantity: 1 }, { itemId: newItem(), quantity: 1 }] });
    expectProblem(res, 'item_not_found');
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 0, available: 5 });
  });

  it('a location the item was never stocked at → 404, "default" included', async () => {
    const item = newItem();
    await api.stock(item, 5, 'wh-1');
    expectProblem(await api.reserve({ lines: [{ itemId: item, quantity: 1, location: 'wh-2' }] }), 'item_not_found');
    expectProblem(await api.reserve({ lines: [{ itemId: item, quantity: 1 }] }), 'item_not_found');
    expect(await api.at(item, 'wh-1')).toEqual({ onHand: 5, reserved: 0, available: 5 });
  });

  it('one short line → 409 naming only that line with requested and available; nothing held', async () => {
    const a = await stocked(5);
    const b = newItem();
    await api.stock(b, 2, 'wh-2');
    const res = await api.reserve({ lines: [{ itemId: a, quantity: 5 }, { itemId: b, location: 'wh-2', quantity: 3 }] });
    const problem = expectProblem(res, 'insufficient_stock');
    expect(problem.lines).toEqual([{ itemId: b, location: 'wh-2', requested: 3, available: 2 }]);
    expect(problem.detail).toEqual(expect.any(String));
    expect(await api.at(a)).toEqual({ onHand: 5, reserved: 0, available: 5 });
    expect(await api.at(b, 'wh-2')).toEqual({ onHand: 2, reserved: 0, available: 2 });
  });

  it('several short lines → 409 naming each, in request order, with what is available now', async () => {
    const a = await stocked(4);
    await api.hold({ lines: [{ itemId: a, quantity: 3 }] });
    const b = await stocked(1);
    const c = await stocked(9);
    const res = await api.reserve({
      lines: [
        { itemId: a, quantity: 2 },
        { itemId: c, quantity: 9 },
        { itemId: b, quantity: 2 },
      ],
    });
    expect(expectProblem(res, 'insufficient_stock').lines).toEqual([
      { itemId: a, location: 'default', requested: 2, available: 1 },
      { itemId: b, location: 'default', requested: 2, available: 1 },
    ]);
    expect(await api.at(a)).toEqual({ onHand: 4, reserved: 3, available: 1 });
    expect(await api.at(c)).toEqual({ onHand: 9, reserved: 0, available: 9 });
  });

  it('an item stocked with 0 units → 409 with available 0', async () => {
    const item = await stocked(0);
    const problem = expectProblem(await api.reserve({ lines: [{ itemId: item, quantity: 1 }] }), 'insufficient_stock');
    expect(problem.lines).toEqual([{ itemId: item, location: 'default', requested: 1, available: 0 }]);
  });
});

describe('POST /reservations: concurrent requests', () => {
  it('never hold more than is available: of 25 concurrent one-unit requests on 10 units, exactly 10 succeed', async () => {
    const item = await stocked(10);
    const answers = await Promise.all(Array.from({ length: 25 }, () => api.reserve({ lines: [{ itemId: item, quantity: 1 }] })));
    const created = answers.filter((r) => r.status === 201);
    expect(created).toHaveLength(10);
    for (const r of answers.filter((x) => x.status !== 201)) expectProblem(r, 'insufficient_stock');
    expect(new Set(created.map((r) => expectReservation(r, 201).id)).size).toBe(10);
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 10, available: 0 });
  });

  it('hold every line or none under contention: multi-line requests never leave a partial hold', async () => {
    const a = await stocked(6);
    const b = await stocked(4);
    const body = { lines: [{ itemId: a, quantity: 1 }, { itemId: b, quantity: 1 }] };
    const answers = await Promise.all(Array.from({ length: 12 }, () => api.reserve(body)));
    expect(answers.filter((r) => r.status === 201)).toHaveLength(4);
    expect(await api.at(a)).toEqual({ onHand: 6, reserved: 4, available: 2 });
    expect(await api.at(b)).toEqual({ onHand: 4, reserved: 4, available: 0 });
  });
});

describe('POST /reservations: precedence 400 → 404 → 409', () => {
  it('an invalid line beside an unknown item → 400', async () => {
    const res = await api.reserve({ lines: [{ itemId: newItem(), quantity: 1 }, { itemId: newItem(), quantity: 0 }] });
    expectInvalidFields(res, 'lines[1].quantity');
  });

  it('a duplicate pair of an unknown item → 400', async () => {
    const item = newItem();
    expectInvalidFields(await api.reserve({ lines: [{ itemId: item, quantity: 1 }, { itemId: item, quantity: 1 }] }), 'lines[1]');
  });

  it('a missing Idempotency-Key on a request for an unknown item → 400', async () => {
    expectInvalid(await api.reserve({ lines: [{ itemId: newItem(), quantity: 1 }] }, null));
  });

  it('a short line beside an unknown item → 404; the short line stays untouched', async () => {
    const item = await stocked(1);
    const body: ReserveBody = { lines: [{ itemId: item, quantity: 2 }, { itemId: newItem(), quantity: 1 }] };
    expectProblem(await api.reserve(body), 'item_not_found');
    expect(await api.at(item)).toEqual({ onHand: 1, reserved: 0, available: 1 });
  });
});
