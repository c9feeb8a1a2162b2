import { STATUS_CODES } from 'node:http';
import { beforeAll, describe, expect, it } from 'vitest';
import { errorCatalogue, type ErrorCode } from '../../src/domain/errors.js';
import { newItem, newKey } from '../helpers/app.js';
import { expectInvalidFields, expectProblem, useHttpApp } from '../helpers/api.js';
import { exchange, exchangeAll, listenLocal, type RawResponse } from '../helpers/raw-http.js';
import { REQUEST_TIMEOUT_MS } from '../../src/plugins/http.js';

// api.md, "Errors": every 4xx/5xx is problem+json, also where a request never reaches a route. These go over real
// sockets: app.inject bypasses Node's HTTP parser and normalises URLs.
const { t, api } = useHttpApp();
let port: number;

beforeAll(async () => {
  // A head that never completes is cut off after headersTimeout, checked every connectionsCheckingInterval (both read
  // when the server starts listening): short here, so the timeout case answers within a second.
  expect(t.app.server.requestTimeout, 'a whole request must arrive in bounded time').toBe(REQUEST_TIMEOUT_MS);
  t.app.server.headersTimeout = 1_000;
  t.app.server.requestTimeout = 1_500;
  (t.app.server as { connectionsCheckingInterval?: number }).connectionsCheckingInterval = 50;
  port = await listenLocal(t.app);
});

/** Every request below that should be refused carries this, to check no answer echoes what it was sent. */
const MARK = 'zqx';

/** A problem+json answer with the catalogue's status line for `code`, on a connection the server then closed. */
function expectClosingProblem(res: RawResponse, code: ErrorCode) {
  const { status } = errorCatalogue[code];
  expect(res.statusLine).toBe(`HTTP/1.1 ${status} ${STATUS_CODES[status]}`);
  const body = expectProblem(res, code);
  expect(res.headers.connection).toBe('close');
  expect(res.closed, 'the server closes the connection').toBe(true);
  expect(res.text.toLowerCase()).not.toContain(MARK);
  return body;
}

const host = 'Host: t\r\n';
const json = 'Content-Type: application/json\r\n';

describe("what Node's parser refuses is a problem+json, and the connection is closed", () => {
  it.each<[string, string, ErrorCode]>([
    ['a control byte in the path', `GET /items/${MARK}\x01/availability HTTP/1.1\r\n${host}\r\n`, 'malformed_request'],
    ['a DEL in the path', `GET /items/${MARK}\x7f/availability HTTP/1.1\r\n${host}\r\n`, 'malformed_request'],
    ['a byte above 0x7F in the path', `GET /items/${MARK}\xff/availability HTTP/1.1\r\n${host}\r\n`, 'malformed_request'],
    ['a space in the path', `GET /items/${MARK} x/availability HTTP/1.1\r\n${host}\r\n`, 'malformed_request'],
    ['a lowercase method', `get /health/live?${MARK} HTTP/1.1\r\n${host}\r\n`, 'malformed_request'],
    ['a made-up method token', `${MARK.toUpperCase()} /health/live HTTP/1.1\r\n${host}\r\n`, 'malformed_request'],
    ['an unknown protocol version', `GET /health/live?${MARK} HTTP/9.9\r\n${host}\r\n`, 'malformed_request'],
    ['bare LF line ends', `GET /health/live?${MARK} HTTP/1.1\n${host.trim()}\n\n`, 'malformed_request'],
    ['HTTP/2 with prior knowledge', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'malformed_request'],
    [
      'Content-Length twice',
      `POST /reservations?${MARK} HTTP/1.1\r\n${host}${json}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}`,
      'malformed_request',
    ],
    [
      'Transfer-Encoding together with Content-Length',
      `POST /reservations?${MARK} HTTP/1.1\r\n${host}${json}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      'malformed_request',
    ],
    ['a Transfer-Encoding other than chunked', `POST /reservations HTTP/1.1\r\n${host}${json}Transfer-Encoding: ${MARK}\r\n\r\n`, 'malformed_request'],
    ['a Content-Length that is not a number', `POST /reservations HTTP/1.1\r\n${host}${json}Content-Length: ${MARK}\r\n\r\n{}`, 'malformed_request'],
    ['a negative Content-Length', `POST /reservations?${MARK} HTTP/1.1\r\n${host}${json}Content-Length: -1\r\n\r\n`, 'malformed_request'],
    ['a control byte in a header value', `GET /health/live HTTP/1.1\r\n${host}X-A: ${MARK}\x01\r\n\r\n`, 'malformed_request'],
    ['a NUL in a header value', `GET /health/live HTTP/1.1\r\n${host}X-A: ${MARK}\x00\r\n\r\n`, 'malformed_request'],
    ['a control byte in a header name', `GET /health/live HTTP/1.1\r\n${host}X-${MARK}\x01: a\r\n\r\n`, 'malformed_request'],
    ['a space before the colon', `GET /health/live HTTP/1.1\r\n${host}X-${MARK} : a\r\n\r\n`, 'malformed_request'],
    ['a folded header line', `GET /health/live HTTP/1.1\r\n${host}X-A: a\r\n ${MARK}\r\n\r\n`, 'malformed_request'],
    [
      'a chunk size that is not hexadecimal',
      `POST /reservations HTTP/1.1\r\n${host}${json}Idempotency-Key: k\r\nTransfer-Encoding: chunked\r\n\r\n${MARK}\r\n`,
      'malformed_request',
    ],
    // Routes that answer without waiting for a body: the parser's verdict on the bytes that came with the head must
    // still come first (src/http/framing.ts's async hook).
    ['a bad chunk on a route that reads no body', `GET /docs?${MARK} HTTP/1.1\r\n${host}Transfer-Encoding: chunked\r\n\r\nzz\r\n`, 'malformed_request'],
    [
      'an unknown Transfer-Encoding on a route that reads no body',
      `POST /reservations/0190c8a0-0000-7000-8000-000000000000/release?${MARK} HTTP/1.1\r\n${host}Transfer-Encoding: ${MARK}\r\n\r\n`,
      'malformed_request',
    ],
    ['a request line without a version', `POST /reservations?${MARK}\r\n${host}${json}Content-Length: 2\r\n\r\n{}`, 'malformed_request'],
    ['an HTTP/1.1 request without Host', `GET /health/live?${MARK} HTTP/1.1\r\n\r\n`, 'malformed_request'],
    ['two Host headers', `GET /health/live?${MARK} HTTP/1.1\r\n${host}Host: u\r\n\r\n`, 'malformed_request'],
    ['a header over 16 KiB', `GET /health/live HTTP/1.1\r\n${host}X-A: ${MARK}${'a'.repeat(16 * 1024)}\r\n\r\n`, 'request_header_too_large'],
    ['a URL over 16 KiB', `GET /items/${MARK}${'a'.repeat(16 * 1024)}/availability HTTP/1.1\r\n${host}\r\n`, 'request_header_too_large'],
    ['an Expect other than 100-continue', `GET /health/live HTTP/1.1\r\n${host}Expect: ${MARK}\r\n\r\n`, 'expectation_failed'],
    ['CONNECT', `CONNECT ${MARK}.example:443 HTTP/1.1\r\nHost: ${MARK}.example:443\r\n\r\n`, 'method_not_allowed'],
  ])('%s', async (_label, bytes, code) => {
    const body = expectClosingProblem(await exchange(port, bytes), code);
    expect(body.detail?.length).toBeGreaterThan(0);
  });

  it('a parser refusal says which rule was broken, not a generic sentence', async () => {
    const details = new Set<string>();
    for (const bytes of [
      `get / HTTP/1.1\r\n${host}\r\n`,
      `GET /a\x01 HTTP/1.1\r\n${host}\r\n`,
      `GET / HTTP/1.1\r\n${host}Content-Length: 1\r\nContent-Length: 2\r\n\r\n`,
      `GET / HTTP/1.1\r\n${host}X-A: \x01\r\n\r\n`,
    ]) {
      details.add(expectClosingProblem(await exchange(port, bytes), 'malformed_request').detail!);
    }
    expect(details.size).toBe(4);
  });

  it('CONNECT says no method is allowed (an empty Allow)', async () => {
    const res = await exchange(port, `CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n`);
    expect(res.headers.allow).toBe('');
  });

  it('a connection that ends in the middle of a head is answered 400 before it closes', async () => {
    const res = await exchange(port, `GET /health/live HTTP/1.1\r\n${host}X-${MARK}: a`, { endAfterWrite: true });
    expectClosingProblem(res, 'malformed_request');
  });

  it('a head that does not arrive in time → 408 request_timeout', async () => {
    // Never finishes its head: Node's headersTimeout (1 s here) ends it.
    const res = await exchange(port, `GET /health/live HTTP/1.1\r\n${host}X-${MARK}: a`);
    expectClosingProblem(res, 'request_timeout');
  });

  it('a body that does not arrive in time → 408 request_timeout, and nothing changes', async () => {
    const item = newItem();
    await api.stock(item, 5);
    const before = await api.figures(item);
    // The head is whole; the body trickles in and never ends: the request timeout (1.5 s here) ends it.
    const res = await exchange(
      port,
      `POST /items/${item}/stock/adjustments HTTP/1.1\r\n${host}${json}Content-Length: 40\r\n\r\n{"delta": ${MARK.length}`,
    );
    expectClosingProblem(res, 'request_timeout');
    expect(await api.figures(item)).toEqual(before);
  });

  it('a body that breaks mid-request changes nothing', async () => {
    const item = newItem();
    await api.stock(item, 5);
    const before = await api.figures(item);
    const body = JSON.stringify({ lines: [{ itemId: item, quantity: 1 }] });
    const res = await exchange(
      port,
      `POST /reservations HTTP/1.1\r\n${host}${json}Idempotency-Key: ${newKey()}\r\nTransfer-Encoding: chunked\r\n\r\n` +
        `${body.length.toString(16)}\r\n${body}\r\n${MARK}\r\n`,
    );
    expectClosingProblem(res, 'malformed_request');
    expect(await api.figures(item)).toEqual(before);
  });

  it('a Content-Length shorter than the body: 400 body, the connection is closed, nothing changes', async () => {
    const item = newItem();
    await api.stock(item, 5);
    const res = await exchange(port, `PUT /items/${item}/stock HTTP/1.1\r\n${host}${json}Content-Length: 2\r\n\r\n{"quantity":9}`);
    expectInvalidFields(res, 'body');
    expect(res.closed).toBe(true);
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 0, available: 5 });
  });

  it('a request followed by garbage on the same connection is answered first, and counted once', async () => {
    const item = newItem();
    await api.stock(item, 5);
    const body = JSON.stringify({ delta: 1 });
    const [first, second, ...more] = await exchangeAll(
      port,
      `POST /items/${item}/stock/adjustments HTTP/1.1\r\n${host}${json}Content-Length: ${body.length}\r\n\r\n${body}` +
        `${MARK} / HTTP/1.1\r\n\r\n`,
    );
    expect(first!.status, first!.text).toBe(200);
    expectClosingProblem(second!, 'malformed_request');
    expect(more).toEqual([]);
    expect(await api.at(item)).toEqual({ onHand: 6, reserved: 0, available: 6 });
  });

  it('Expect: 100-continue is still served', async () => {
    const item = newItem();
    const body = JSON.stringify({ quantity: 3 });
    const res = await exchange(
      port,
      `PUT /items/${item}/stock HTTP/1.1\r\n${host}${json}Content-Length: ${body.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n${body}`,
    );
    expect(res.status).toBe(200);
    expect(await api.at(item)).toEqual({ onHand: 3, reserved: 0, available: 3 });
  });

  it('an HTTP/1.0 request needs no Host', async () => {
    const res = await exchange(port, 'GET /health/live HTTP/1.0\r\n\r\n');
    expect(res.status).toBe(200);
  });
});

/** A request that keeps nothing open: the answer is read once the server closes. */
const request = (method: string, target: string, extra = '') => `${method} ${target} HTTP/1.1\r\n${host}${extra}Connection: close\r\n\r\n`;

describe("Fastify's early answers are problem+json with a catalogued code", () => {
  it.each([
    ['PROPFIND', '/reservations', 'POST'],
    ['OPTIONS', '/reservations', 'POST'],
    ['TRACE', '/reservations/abc', 'GET'],
    ['MKCOL', '/items/sku-1/stock', 'PUT'],
    ['PATCH', '/items/sku-1/availability', 'GET'],
  ])('%s %s → 405 with Allow', async (method, path, allowed) => {
    const res = await exchange(port, request(method, path));
    expectProblem(res, 'method_not_allowed');
    expect(res.headers.allow).toContain(allowed);
  });

  it.each([
    ['PROPFIND /'],
    ['OPTIONS *'],
    ['GET //health/live'],
    ['GET http://t/nowhere'],
    ['GET /docs/static/nope.js'],
    ['GET /docs/static/%2e%2e/%2e%2e/package.json'],
    ['GET /docs/static/..%2f..%2fpackage.json'],
    ['GET /docs/static/index.css%00'],
  ])('%s → 404 not_found', async (line) => {
    const [method, target] = line.split(' ') as [string, string];
    const res = await exchange(port, request(method, target));
    expectProblem(res, 'not_found');
    expect(res.text).not.toContain('"name"'); // not the package.json a traversal would reach
  });

  it('an empty item id → 400 itemId', async () => {
    expectInvalidFields(await exchange(port, request('GET', '/items//availability')), 'itemId');
  });

  it('a query string of garbage is ignored', async () => {
    expectProblem(await exchange(port, request('GET', `/items/${newItem()}/availability?%zz&&=?#x`)), 'item_not_found');
  });

  it('an absolute-form target is served like its path', async () => {
    const item = newItem();
    await api.stock(item, 2);
    expect((await exchange(port, request('GET', `http://t/items/${item}/availability`))).status).toBe(200);
    expectInvalidFields(await exchange(port, request('GET', 'http://t/items/%2e%2e/availability')), 'itemId');
  });

  it('a malformed percent-escape: 400 field url, or 404 for a reservation id (nothing echoed)', async () => {
    const res = await exchange(port, request('GET', `/items/${MARK}%zz/availability`));
    expectInvalidFields(res, 'url');
    expect(res.text).not.toContain(MARK);
    expectProblem(await exchange(port, request('POST', `/reservations/${MARK}%zz/confirm`)), 'reservation_not_found');
  });

  it('a Range a /docs asset cannot satisfy → 400 problem, not a 416 of another shape', async () => {
    const res = await exchange(port, request('GET', '/docs/static/index.css', 'Range: bytes=99999999-\r\n'));
    expectProblem(res, 'validation_failed');
  });

  it('HEAD answers every GET route with its status, no body, and the problem type on errors', async () => {
    const item = newItem();
    await api.stock(item, 1);
    const paths = [
      `/items/${item}/availability`,
      `/items/${newItem()}/availability`,
      '/items/%2e%2e/availability',
      '/reservations/abc',
      '/health/live',
      '/health/ready',
      '/metrics',
      '/openapi.json',
      '/docs',
      '/docs/json',
      '/docs/static/index.css',
      '/docs/static/nope.js',
      '/nowhere',
    ];
    for (const path of paths) {
      const get = await exchange(port, request('GET', path));
      const head = await exchange(port, request('HEAD', path), { head: true });
      expect(head.status, path).toBe(get.status);
      expect(head.text, path).toBe('');
      if (get.status >= 400) expect(head.headers['content-type'], path).toMatch(/^application\/problem\+json/);
    }
    // A HEAD the parser refuses gets its problem's head only: a body would read as garbage after the answer.
    const refused = await exchange(port, `HEAD /health/live HTTP/1.1\r\n${host}Content-Length: 1\r\nContent-Length: 2\r\n\r\n`, {
      head: true,
    });
    expect(refused.status).toBe(400);
    expect(refused.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(refused.text).toBe('');
    // A path with POST only (GET /reservations now lists by reference).
    const post = await exchange(port, request('HEAD', '/reservations/abc/confirm'), { head: true });
    expect(post.status).toBe(405);
    expect(post.headers['content-type']).toMatch(/^application\/problem\+json/);
  });
});

describe('no answer echoes more than a short prefix of what it was sent', () => {
  it('an 8,193-character item id reaches its route: 400 itemId must be 1–128 characters', async () => {
    const res = await exchange(port, request('GET', `/items/${'x'.repeat(8193)}/availability`));
    const body = expectProblem(res, 'validation_failed');
    expect(body.errors).toEqual([{ field: 'itemId', message: 'must be 1–128 characters' }]);
    expect(res.text.length).toBeLessThan(300);
  });

  it('an id as long as a head may be still reaches its route', async () => {
    const res = await exchange(port, request('GET', `/items/${'x'.repeat(16_000)}/availability`));
    expectInvalidFields(res, 'itemId');
    expect(res.text.length).toBeLessThan(300);
  });

  it('an unknown long path is cut to its first 128 characters and …', async () => {
    const path = `/${MARK}/${'y'.repeat(10_000)}`;
    const body = expectProblem(await exchange(port, request('GET', path)), 'not_found');
    expect(body.detail).toBe(`no route GET ${path.slice(0, 128)}…`);
  });
});
