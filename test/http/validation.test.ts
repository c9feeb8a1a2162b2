import type { TSchema } from 'typebox';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  IdempotencyHeaders,
  ItemParams,
  patternMessages,
  ReservationRequest,
  StockAdjustRequest,
  StockSetRequest,
} from '../../src/domain/schemas.js';
import { newItem } from '../helpers/app.js';
import { expectAvailability, expectProblem, expectReservation, useHttpApp, type Answer } from '../helpers/api.js';
import { exchange, listenLocal } from '../helpers/raw-http.js';

// What a stored string may contain (README, "API"; src/domain/schemas.ts), and the messages a client reads.
const { t, api } = useHttpApp();
let port: number;

beforeAll(async () => {
  port = await listenLocal(t.app);
});

/** Asserts a 400 whose `errors` are exactly these, and that `detail` says the same. */
function expectErrors(res: Answer, ...errors: [field: string, message: string][]): void {
  const body = expectProblem(res, 'validation_failed');
  expect(body.errors).toEqual(errors.map(([field, message]) => ({ field, message })));
  expect(body.detail).toBe(errors.map(([field, message]) => `${field}: ${message}`).join('; '));
}

const LABEL_MESSAGE = 'must not contain control characters or unpaired surrogates';
const TEXT_MESSAGE = 'must not contain control characters other than tab, line feed and carriage return, or unpaired surrogates';

/** A string the service stores: how to send a value in it, where a refusal points, and what was stored. */
interface StoredString {
  name: string;
  kind: 'label' | 'text';
  /** The request carrying `value`, for an item stocked with 5 units at "default". */
  send: (item: string, value: string) => Promise<Answer>;
  field: (value: string) => string;
  message: string;
  /** What the API answered and PostgreSQL holds for an accepted request: each must equal the value sent. */
  stored: (res: Answer, item: string) => Promise<string[]>;
}

const reserveWith = (item: string, extra: object) => api.reserve({ lines: [{ itemId: item, quantity: 1 }], ...extra });

/** The reservation a 201 created, as answered, as read, and as PostgreSQL holds it. */
async function reservationCopies(res: Answer) {
  const doc = expectReservation(res, 201);
  const read = expectReservation(await api.get(doc.id), 200);
  const { rows } = await t.app.runtime.db.query<{ reference: string | null; metadata: Record<string, string> }>(
    'SELECT reference, metadata FROM reservations WHERE id = $1',
    [doc.id],
  );
  return [doc, read, rows[0]!];
}

const metadataField = (key: string) => `metadata[${JSON.stringify(key)}]`;

const storedStrings: StoredString[] = [
  {
    name: 'reference',
    kind: 'label',
    send: (item, value) => reserveWith(item, { reference: value }),
    field: () => 'reference',
    message: LABEL_MESSAGE,
    stored: async (res) => (await reservationCopies(res)).map((r) => r.reference ?? ''),
  },
  {
    name: 'a metadata key',
    kind: 'label',
    send: (item, value) => reserveWith(item, { metadata: { [value]: 'v' } }),
    field: metadataField,
    message: `key ${LABEL_MESSAGE}`,
    stored: async (res) => (await reservationCopies(res)).map((r) => Object.keys(r.metadata).join()),
  },
  {
    name: 'a metadata value',
    kind: 'text',
    send: (item, value) => reserveWith(item, { metadata: { note: value } }),
    field: () => 'metadata.note',
    message: TEXT_MESSAGE,
    stored: async (res) => (await reservationCopies(res)).map((r) => r.metadata.note ?? ''),
  },
  {
    name: 'a stock adjustment reason',
    kind: 'text',
    send: (item, value) => api.adjust(item, { delta: 1, reason: value }),
    field: () => 'reason',
    message: TEXT_MESSAGE,
    stored: async (res, item) => {
      expectAvailability(res);
      const { rows } = await t.app.runtime.db.query<{ reason: string }>(
        "SELECT reason FROM stock_movements WHERE item_id = $1 AND kind = 'adjust' ORDER BY id DESC LIMIT 1",
        [item],
      );
      return [rows[0]!.reason];
    },
  },
];

/** Refused in every stored string: PostgreSQL or UTF-8 cannot keep them, or they are control characters. */
const refusedEverywhere: [string, string][] = [
  ['NUL', '\u0000'],
  ['a lone high surrogate', '\ud800'],
  ['a lone low surrogate', '\udfff'],
  ['a low surrogate before a high one', '\udc00\ud83d'],
  ['a C0 control (U+0001)', '\u0001'],
  ['ESC (U+001B)', '\u001b'],
  ['U+001F', '\u001f'],
  ['vertical tab', '\u000b'],
  ['form feed', '\u000c'],
  ['DEL (U+007F)', '\u007f'],
  ['a C1 control (U+0080)', '\u0080'],
  ['a C1 control (U+009F)', '\u009f'],
];
/** Allowed in free text, refused in labels. */
const textOnly: [string, string][] = [
  ['TAB', '\t'],
  ['LF', '\n'],
  ['CR', '\r'],
  ['CRLF', '\r\n'],
];
/** Allowed everywhere, and read back exactly. */
const acceptedEverywhere: [string, string][] = [
  ['an emoji (a surrogate pair)', '😀'],
  ['the last code point (U+10FFFF)', '\u{10ffff}'],
  ['a space', ' '],
  ['U+007E, just below DEL', '~'],
  ['U+00A0, just above the C1 controls', '\u00a0'],
  ['U+2028 LINE SEPARATOR (not a control character)', '\u2028'],
  ['U+FFFD', '\ufffd'],
  ['a CJK ideograph', '漢'],
];

describe('strings PostgreSQL or JSON cannot store faithfully, and control characters, are refused', () => {
  for (const s of storedStrings) {
    const refused = s.kind === 'label' ? [...refusedEverywhere, ...textOnly] : refusedEverywhere;
    const accepted = s.kind === 'label' ? acceptedEverywhere : [...acceptedEverywhere, ...textOnly];

    it.each(refused)(`${s.name} with %s → 400 naming it; nothing changes`, async (_label, char) => {
      const item = newItem();
      await api.stock(item, 5);
      const before = await api.figures(item);
      const value = `a${char}b`;
      expectErrors(await s.send(item, value), [s.field(value), s.message]);
      expect(await api.figures(item)).toEqual(before);
    });

    it.each(accepted)(`${s.name} with %s is stored and read back exactly`, async (_label, char) => {
      const item = newItem();
      await api.stock(item, 5);
      const value = `a${char}b`;
      const res = await s.send(item, value);
      expect(res.status, res.text).toBeLessThan(300);
      for (const copy of await s.stored(res, item)) expect(copy).toBe(value);
    });
  }

  it('lengths count code points: 255 emoji are a valid reference, 256 are not', async () => {
    const item = newItem();
    await api.stock(item, 5);
    const reference = '😀'.repeat(255);
    for (const copy of await storedStrings[0]!.stored(await reserveWith(item, { reference }), item)) expect(copy).toBe(reference);
    expectErrors(await reserveWith(item, { reference: '😀'.repeat(256) }), ['reference', 'must be 1–255 characters']);
  });

  it('a metadata key holding a line terminator has its value checked, and is answered and read back', async () => {
    const item = newItem();
    await api.stock(item, 5);
    const before = await api.figures(item);
    const key = 'a\u2028b';
    expectErrors(await reserveWith(item, { metadata: { [key]: 42 } }), [metadataField(key), 'must be a string']);
    expectErrors(await reserveWith(item, { metadata: { [key]: { nested: 'x' } } }), [metadataField(key), 'must be a string']);
    expect(await api.figures(item)).toEqual(before);
    for (const copy of await reservationCopies(await reserveWith(item, { metadata: { [key]: 'v', plain: 'w' } }))) {
      expect(copy.metadata).toEqual({ [key]: 'v', plain: 'w' });
    }
  });
});

describe('identifiers are never "." or ".."', () => {
  // Over a real socket: app.inject would resolve the dot segments before the router saw them.
  const request = (method: string, path: string, body?: object) => {
    const payload = body ? JSON.stringify(body) : '';
    const head = body ? `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(payload)}\r\n` : '';
    return exchange(port, `${method} ${path} HTTP/1.1\r\nHost: t\r\n${head}Connection: close\r\n\r\n${payload}`);
  };

  it.each(['.', '..', '%2e', '%2E', '%2e%2e', '.%2e', '%2E.'])('itemId %s in the path → 400 itemId; nothing is created', async (segment) => {
    const message = 'may contain only A–Z a–z 0–9 . _ : - and may not be "." or ".."';
    expectErrors(await request('PUT', `/items/${segment}/stock`, { quantity: 1 }), ['itemId', message]);
    expectErrors(await request('POST', `/items/${segment}/stock/adjustments`, { delta: 1 }), ['itemId', message]);
    expectErrors(await request('GET', `/items/${segment}/availability`), ['itemId', message]);
    const { rows } = await t.app.runtime.db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM stock WHERE item_id IN ('.', '..')",
    );
    expect(rows[0]!.n).toBe(0);
  });

  it.each(['...', '.a', 'a.', '..a', 'a..', '.-.'])('itemId %s is valid', async (itemId) => {
    const res = await request('PUT', `/items/${itemId}/stock`, { quantity: 2 });
    expect(expectAvailability(res).itemId).toBe(itemId);
    expect(expectAvailability(await request('GET', `/items/${itemId}/availability`)).itemId).toBe(itemId);
  });

  it.each(['.', '..'])('location %s in a body → 400 naming it; nothing changes', async (location) => {
    const item = newItem();
    await api.stock(item, 5);
    const before = await api.figures(item);
    const message = 'may contain only A–Z a–z 0–9 . _ : - and may not be "." or ".."';
    expectErrors(await api.putStock(item, { quantity: 1, location }), ['location', message]);
    expectErrors(await api.adjust(item, { delta: 1, location }), ['location', message]);
    expectErrors(await api.reserve({ lines: [{ itemId: item, quantity: 1, location }] }), ['lines[0].location', message]);
    expect(await api.figures(item)).toEqual(before);
  });

  it.each(['...', '.a', '..a'])('location %s is valid', async (location) => {
    const item = newItem();
    await api.stock(item, 5, location);
    expect(await api.at(item, location)).toEqual({ onHand: 5, reserved: 0, available: 5 });
  });
});

describe('messages say the rule, from its limit', () => {
  const keys = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 'v']));
  const line = (extra: object = {}) => ({ itemId: 'sku-1', quantity: 1, ...extra });
  const IDENTIFIER = 'may contain only A–Z a–z 0–9 . _ : - and may not be "." or ".."';
  const cases: [string, (item: string) => Promise<Answer>, [string, string][]][] = [
    ['type integer', (i) => api.putStock(i, { quantity: '1' }), [['quantity', 'must be an integer']]],
    ['type integer (a fraction)', () => api.reserve({ lines: [line()], ttlSeconds: 1.5 }), [['ttlSeconds', 'must be an integer']]],
    ['type string', () => api.reserve({ lines: [line()], reference: 7 }), [['reference', 'must be a string']]],
    ['type object', () => api.reserve({ lines: [line()], metadata: 'web' }), [['metadata', 'must be an object']]],
    ['type array', () => api.reserve({ lines: line() }), [['lines', 'must be an array']]],
    ['type object (the body)', (i) => api.putStock(i, [1]), [['body', 'must be an object']]],
    ['required', (i) => api.adjust(i, {}), [['delta', 'is required']]],
    ['required (a header)', () => api.reserve({ lines: [line()] }, null), [['Idempotency-Key', 'is required']]],
    ['additionalProperties', (i) => api.putStock(i, { quantity: 1, colour: 'red' }), [['colour', 'unknown field']]],
    ['minimum 0', (i) => api.putStock(i, { quantity: -1 }), [['quantity', 'must be at least 0']]],
    ['minimum 1', () => api.reserve({ lines: [line({ quantity: 0 })] }), [['lines[0].quantity', 'must be at least 1']]],
    ['maximum', () => api.reserve({ lines: [line({ quantity: 1_000_001 })] }), [['lines[0].quantity', 'must be at most 1000000']]],
    ['maximum (ttlSeconds)', () => api.reserve({ lines: [line()], ttlSeconds: 86_401 }), [['ttlSeconds', 'must be at most 86400']]],
    ['minimum (a negative delta)', (i) => api.adjust(i, { delta: -1_000_000_001 }), [['delta', 'must be at least -1000000000']]],
    ['not 0', (i) => api.adjust(i, { delta: 0 }), [['delta', 'must not be 0']]],
    ['minLength', () => api.reserve({ lines: [line()], reference: '' }), [['reference', 'must be 1–255 characters']]],
    ['maxLength', () => api.reserve({ lines: [line()], reference: 'r'.repeat(256) }), [['reference', 'must be 1–255 characters']]],
    ['minLength (itemId)', () => api.reserve({ lines: [line({ itemId: '' })] }), [['lines[0].itemId', 'must be 1–128 characters']]],
    ['maxLength (location)', (i) => api.putStock(i, { quantity: 1, location: 'l'.repeat(65) }), [['location', 'must be 1–64 characters']]],
    ['minLength (reason)', (i) => api.adjust(i, { delta: 1, reason: '' }), [['reason', 'must be 1–255 characters']]],
    [
      'maxLength without a minimum',
      () => api.reserve({ lines: [line()], metadata: { note: 'v'.repeat(501) } }),
      [['metadata.note', 'must be at most 500 characters']],
    ],
    [
      'a key too long',
      () => api.reserve({ lines: [line()], metadata: { ['k'.repeat(65)]: 'v' } }),
      [[`metadata.${'k'.repeat(65)}`, 'key must be 1–64 characters']],
    ],
    ['an empty key', () => api.reserve({ lines: [line()], metadata: { '': 'v' } }), [['metadata[""]', 'key must be 1–64 characters']]],
    ['minItems', () => api.reserve({ lines: [] }), [['lines', 'must have at least 1 item']]],
    [
      'maxItems',
      () => api.reserve({ lines: Array.from({ length: 101 }, (_, n) => line({ location: `l${n}` })) }),
      [['lines', 'must have at most 100 items']],
    ],
    ['maxProperties', () => api.reserve({ lines: [line()], metadata: keys(21) }), [['metadata', 'must have at most 20 keys']]],
    ['pattern (identifier)', () => api.reserve({ lines: [line({ itemId: 'sku 1' })] }), [['lines[0].itemId', IDENTIFIER]]],
    ['pattern (label)', () => api.reserve({ lines: [line()], reference: 'a\u0000' }), [['reference', LABEL_MESSAGE]]],
    ['pattern (text)', (i) => api.adjust(i, { delta: 1, reason: 'a\u0007' }), [['reason', TEXT_MESSAGE]]],
    [
      'pattern (Idempotency-Key)',
      () => api.reserve({ lines: [line()] }, 'has space'),
      [['Idempotency-Key', 'may contain only visible ASCII characters (0x21–0x7E)']],
    ],
    ['maxLength (Idempotency-Key)', () => api.reserve({ lines: [line()] }, 'k'.repeat(256)), [['Idempotency-Key', 'must be 1–255 characters']]],
    [
      'several at once, in order',
      () => api.reserve({ lines: [line({ quantity: 0, colour: 'red' })], ttlSeconds: 0 }),
      [
        ['lines[0].colour', 'unknown field'],
        ['lines[0].quantity', 'must be at least 1'],
        ['ttlSeconds', 'must be at least 1'],
      ],
    ],
  ];

  it.each(cases)('%s', async (_label, send, errors) => {
    expectErrors(await send(newItem()), ...errors);
  });

  it('every pattern a request schema uses has its sentence', () => {
    const patterns = new Set<string>();
    const walk = (node: unknown): void => {
      if (node === null || typeof node !== 'object') return;
      const { pattern } = node as { pattern?: unknown };
      if (typeof pattern === 'string') patterns.add(pattern);
      for (const child of Object.values(node)) walk(child);
    };
    const schemas: TSchema[] = [ReservationRequest, IdempotencyHeaders, StockSetRequest, StockAdjustRequest, ItemParams];
    for (const schema of schemas) walk(schema);
    expect(patterns.size).toBe(4);
    for (const pattern of patterns) expect(patternMessages[pattern], pattern).toBeDefined();
  });

  it('a long unknown field name is cut to its first 128 characters and …', async () => {
    const res = await api.putStock(newItem(), { quantity: 1, [`zqx${'k'.repeat(5000)}`]: 1 });
    // The cut key is no identifier any more (it ends in …), so it is written ["…"].
    expectErrors(res, [`["zqx${'k'.repeat(125)}…"]`, 'unknown field']);
  });

  it('a 400 never repeats the refused value', async () => {
    const res = await api.reserve({ lines: [line()], reference: `zqx\u0000${'r'.repeat(300)}` });
    expect(res.text).not.toContain('zqx');
  });
});

