import { describe, expect, it } from 'vitest';
import { newItem, newKey } from '../helpers/app.js';
import {
  expectAvailability,
  expectInvalidFields,
  expectProblem,
  expectReservation,
  useHttpApp,
  type Request,
} from '../helpers/api.js';
import { MAX_BODY_BYTES } from '../../src/domain/schemas.js';

// api.md, "Errors: RFC 9457 problem details", and the body rules of "Identifiers and limits", across endpoints.
const { api } = useHttpApp();

interface BodyEndpoint {
  name: string;
  /** The request with this raw body (a fresh Idempotency-Key each time where one is needed). */
  request: (payload: string, contentType?: string) => Request;
  valid: object;
  status: number;
  /** The item the endpoint's valid body touches, to check that a rejected request changed nothing. */
  item: string;
}

/** The three endpoints that take a JSON body, each with a valid body for a fresh, stocked item. */
async function bodyEndpoints(): Promise<BodyEndpoint[]> {
  const item = newItem();
  await api.stock(item, 10);
  const json =
    (method: 'PUT' | 'POST', url: string, headers: () => Record<string, string> = () => ({})) =>
    (payload: string, contentType = 'application/json'): Request => ({
      method,
      url,
      headers: { ...headers(), 'content-type': contentType },
      payload,
    });
  return [
    { name: 'PUT stock', request: json('PUT', `/items/${item}/stock`), valid: { quantity: 10 }, status: 200, item },
    { name: 'POST adjustment', request: json('POST', `/items/${item}/stock/adjustments`), valid: { delta: 1 }, status: 200, item },
    {
      name: 'POST /reservations',
      request: json('POST', '/reservations', () => ({ 'idempotency-key': newKey() })),
      valid: { lines: [{ itemId: item, quantity: 1 }] },
      status: 201,
      item,
    },
  ];
}

/** `body` as JSON, padded with trailing whitespace to exactly `bytes` bytes. */
const padded = (body: object, bytes: number) => {
  const json = JSON.stringify(body);
  return json + ' '.repeat(bytes - Buffer.byteLength(json));
};

describe('request bodies', () => {
  it('accept a body of exactly 64 KiB and reject one byte more with 400 field body; nothing changes', async () => {
    for (const e of await bodyEndpoints()) {
      const before = await api.figures(e.item);
      const tooBig = await api.request(e.request(padded(e.valid, MAX_BODY_BYTES + 1)));
      expectInvalidFields(tooBig, 'body');
      expect(await api.figures(e.item), e.name).toEqual(before);
      const atLimit = await api.request(e.request(padded(e.valid, MAX_BODY_BYTES)));
      expect(atLimit.status, `${e.name}: ${atLimit.text}`).toBe(e.status);
    }
  });

  it('reject a body far over the limit (1 MiB) with 400 field body', async () => {
    for (const e of await bodyEndpoints()) {
      expectInvalidFields(await api.request(e.request(padded(e.valid, 1024 * 1024))), 'body');
    }
  });

  it.each([
    ['truncated JSON', '{"quantity": 1'],
    ['trailing garbage', '{"quantity": 1} x'],
    ['single quotes', "{'quantity': 1}"],
    ['a bare word', 'quantity'],
    ['a __proto__ key', '{"quantity": 1, "__proto__": {"admin": true}}'],
    ['a constructor.prototype key', '{"quantity": 1, "constructor": {"prototype": {"admin": true}}}'],
  ])('reject %s with 400 field body; nothing changes', async (_label, payload) => {
    for (const e of await bodyEndpoints()) {
      const before = await api.figures(e.item);
      expectInvalidFields(await api.request(e.request(payload)), 'body');
      expect(await api.figures(e.item), e.name).toEqual(before);
    }
  });

  it.each([
    ['an empty body', ''],
    ['null', 'null'],
    ['an array', '[]'],
    ['a string', '"quantity"'],
    ['a number', '1'],
  ])('reject %s where an object is required with 400 field body', async (_label, payload) => {
    for (const e of await bodyEndpoints()) expectInvalidFields(await api.request(e.request(payload)), 'body');
  });

  it.each([
    ['text/plain', 'TEXT'],
    ['application/x-www-form-urlencoded', 'quantity=1'],
    ['application/xml', '<quantity>1</quantity>'],
    ['multipart/form-data; boundary=x', '--x\r\ncontent-disposition: form-data; name="q"\r\n\r\n1\r\n--x--'],
  ])('answer %s with 415 unsupported_media_type; nothing changes', async (contentType, payload) => {
    for (const e of await bodyEndpoints()) {
      const before = await api.figures(e.item);
      const text = payload === 'TEXT' ? JSON.stringify(e.valid) : payload;
      expectProblem(await api.request(e.request(text, contentType)), 'unsupported_media_type');
      expect(await api.figures(e.item), e.name).toEqual(before);
    }
  });

  it('accept JSON with a charset parameter', async () => {
    for (const e of await bodyEndpoints()) {
      const res = await api.request(e.request(JSON.stringify(e.valid), 'application/json; charset=utf-8'));
      expect(res.status, `${e.name}: ${res.text}`).toBe(e.status);
    }
  });
});

describe('routes', () => {
  it.each([
    ['GET', '/'],
    ['GET', '/items'],
    ['GET', '/items/sku-1'],
    ['GET', '/items/sku-1/availability/extra'],
    ['GET', '/item/sku-1/availability'],
    ['POST', '/reservations/abc/cancel'],
    ['POST', '/reservations/abc/confirm/now'],
    ['GET', '/health'],
    ['GET', '/v1/reservations'],
  ])('%s %s → 404 not_found', async (method, url) => {
    expectProblem(await api.request({ method: method as 'GET' | 'POST', url }), 'not_found');
  });

  it.each([
    ['DELETE', '/reservations', ['POST']],
    ['PUT', '/reservations', ['GET', 'POST']],
    ['GET', '/reservations/release/confirm', ['POST']],
    ['PUT', '/reservations/abc', ['GET']],
    ['DELETE', '/reservations/abc', ['GET']],
    ['GET', '/reservations/abc/confirm', ['POST']],
    ['PUT', '/reservations/abc/release', ['POST']],
    ['GET', '/items/sku-1/stock', ['PUT']],
    ['POST', '/items/sku-1/stock', ['PUT']],
    ['PATCH', '/items/sku-1/stock', ['PUT']],
    ['GET', '/items/sku-1/stock/adjustments', ['POST']],
    ['POST', '/items/sku-1/availability', ['GET']],
    ['DELETE', '/items/sku-1/availability', ['GET']],
    ['POST', '/health/live', ['GET']],
    ['PUT', '/health/ready', ['GET']],
    ['POST', '/metrics', ['GET']],
    ['DELETE', '/openapi.json', ['GET']],
  ] as const)('%s %s → 405 method_not_allowed with an Allow header', async (method, url, allowed) => {
    const res = await api.request({ method, url });
    expectProblem(res, 'method_not_allowed');
    const allow = String(res.headers.allow ?? '')
      .split(',')
      .map((m) => m.trim())
      .filter(Boolean);
    for (const m of allowed) expect(allow).toContain(m);
    expect(allow).not.toContain(method);
  });

  it('a 405 changes nothing', async () => {
    const item = newItem();
    await api.stock(item, 3);
    const before = await api.figures(item);
    expectProblem(await api.request({ method: 'POST', url: `/items/${item}/stock`, payload: { quantity: 9 } }), 'method_not_allowed');
    expectProblem(await api.request({ method: 'PATCH', url: `/items/${item}/stock`, payload: { quantity: 9 } }), 'method_not_allowed');
    expect(await api.figures(item)).toEqual(before);
  });

  it('an id with a malformed percent-escape → 404 reservation_not_found as problem+json', async () => {
    expectProblem(await api.get('%zz'), 'reservation_not_found');
  });
});

describe('precedence: validation (400), then not-found (404), then conflicts (409)', () => {
  it('PUT stock with an invalid itemId and an invalid body → 400', async () => {
    const res = await api.putStock('bad%20id', { quantity: -1 });
    expectProblem(res, 'validation_failed');
  });

  it('an adjustment of a never-stocked item with delta 0 → 400, not 404', async () => {
    expectInvalidFields(await api.adjust(newItem(), { delta: 0 }), 'delta');
  });

  it('an adjustment of a never-stocked item or location that would go below zero → 404, not 409', async () => {
    expectProblem(await api.adjust(newItem(), { delta: -5 }), 'item_not_found');
    const item = newItem();
    await api.stock(item, 1, 'wh-1');
    expectProblem(await api.adjust(item, { delta: -5, location: 'wh-2' }), 'item_not_found');
    expect(await api.at(item, 'wh-1')).toEqual({ onHand: 1, reserved: 0, available: 1 });
  });

  it('availability of an invalid, never-stocked itemId → 400, not 404', async () => {
    expectInvalidFields(await api.availability('no%20such'), 'itemId');
  });

  it('a reservation with an invalid line, an unknown item and a short line → 400', async () => {
    const item = newItem();
    await api.stock(item, 1);
    const res = await api.reserve({
      lines: [
        { itemId: item, quantity: 5 },
        { itemId: newItem(), quantity: 1 },
        { itemId: newItem(), quantity: 1, location: '' },
      ],
    });
    expectInvalidFields(res, 'lines[2].location');
    expect(await api.at(item)).toEqual({ onHand: 1, reserved: 0, available: 1 });
  });

  it('a reservation with an unknown location and a short line → 404', async () => {
    const item = newItem();
    await api.stock(item, 1);
    const res = await api.reserve({ lines: [{ itemId: item, quantity: 5 }, { itemId: item, location: 'nowhere', quantity: 1 }] });
    expectProblem(res, 'item_not_found');
  });

  it('a reused key with an invalid body → 400, not 422', async () => {
    const item = newItem();
    await api.stock(item, 5);
    const key = newKey();
    expectReservation(await api.reserve({ lines: [{ itemId: item, quantity: 1 }] }, key), 201);
    expectInvalidFields(await api.reserve({ lines: [{ itemId: item, quantity: 0 }] }, key), 'lines[0].quantity');
  });
});

describe('problem documents', () => {
  it('a 2xx is application/json, not a problem', async () => {
    const item = newItem();
    const res = await api.putStock(item, { quantity: 1 });
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expectAvailability(res);
  });

  it('name every problem of a request, each as { field, message }', async () => {
    const res = await api.reserve({ lines: [{ itemId: 'a b', quantity: 0, extra: true }], ttlSeconds: 'soon', metadata: { k: 1 } });
    expectInvalidFields(res, 'lines[0].itemId', 'lines[0].quantity', 'lines[0].extra', 'ttlSeconds', 'metadata.k');
  });
});
