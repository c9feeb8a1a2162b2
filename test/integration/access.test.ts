import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newItem, newKey, startTestApp, type TestApp } from '../helpers/app.js';

const CLIENT = 'client-secret-0123456789';
const OPERATOR = 'operator-secret-0123456789';
const OTHER_CLIENT = 'other-client-secret-0123456789';

describe('authentication and rate limits (when configured)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({
      API_KEYS: `checkout:${CLIENT}:client,ops:${OPERATOR}:operator,cart:${OTHER_CLIENT}:client`,
      RATE_LIMIT_MAX: 1000,
    });
  });
  afterAll(() => t.close());
  const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

  it('answers 401 unauthorized without a valid key, and public endpoints stay open', async () => {
    for (const headers of [{}, bearer('wrong-key-0123456789'), { authorization: CLIENT }]) {
      const res = await t.app.inject({ url: `/items/${newItem()}/availability`, headers });
      expect(res.statusCode).toBe(401);
      expect(res.headers['content-type']).toContain('application/problem+json');
      expect(res.json()).toMatchObject({ code: 'unauthorized', status: 401 });
    }
    expect((await t.app.inject({ url: '/health/live' })).statusCode).toBe(200);
    expect((await t.app.inject({ url: '/metrics' })).statusCode).toBe(200);
    expect((await t.app.inject({ url: '/openapi.json' })).statusCode).toBe(200);
  });

  it('takes the Bearer scheme in any case and with extra spaces (RFC 9110), the key as is', async () => {
    const url = `/items/${newItem()}/availability`;
    for (const authorization of [`bearer ${CLIENT}`, `BEARER ${CLIENT}`, `bEaReR ${CLIENT}`, `Bearer    ${CLIENT}   `, `Bearer\t${CLIENT}`]) {
      const res = await t.app.inject({ url, headers: { authorization } });
      expect(res.statusCode, authorization).toBe(404); // authenticated: the item simply does not exist
      expect(res.json()).toMatchObject({ code: 'item_not_found' });
    }
    for (const authorization of [`Bearer ${CLIENT.toUpperCase()}`, `Bearer${CLIENT}`, `Bearer ${CLIENT} extra`, `Basic ${CLIENT}`]) {
      expect((await t.app.inject({ url, headers: { authorization } })).statusCode, authorization).toBe(401);
    }
  });

  it('challenges every 401 with WWW-Authenticate, invalid_token when a bearer token was presented (RFC 6750)', async () => {
    const url = `/items/${newItem()}/availability`;
    const challenge = async (headers: Record<string, string>) => {
      const res = await t.app.inject({ url, headers });
      expect(res.statusCode).toBe(401);
      return res.headers['www-authenticate'];
    };
    expect(await challenge({})).toBe('Bearer realm="inventory"');
    expect(await challenge({ authorization: CLIENT })).toBe('Bearer realm="inventory"');
    expect(await challenge({ authorization: `Basic ${Buffer.from('a:b').toString('base64')}` })).toBe('Bearer realm="inventory"');
    expect(await challenge(bearer('wrong-key-0123456789'))).toBe('Bearer realm="inventory", error="invalid_token"');
    expect(await challenge({ authorization: 'bearer wrong-key-0123456789' })).toBe('Bearer realm="inventory", error="invalid_token"');
    // Not on the other answers.
    const ok = await t.app.inject({ url, headers: bearer(CLIENT) });
    expect(ok.headers['www-authenticate']).toBeUndefined();
    const forbidden = await t.app.inject({ method: 'PUT', url: `/items/${newItem()}/stock`, headers: bearer(CLIENT), payload: { quantity: 1 } });
    expect(forbidden.statusCode).toBe(403);
    expect(forbidden.headers['www-authenticate']).toBeUndefined();
  });

  it('answers 403 forbidden when a client key calls an operator endpoint, and changes nothing', async () => {
    const item = newItem();
    const res = await t.app.inject({ method: 'PUT', url: `/items/${item}/stock`, headers: bearer(CLIENT), payload: { quantity: 5 } });
    expect(res.statusCode).toBe(403);
    expect(res.json()).toMatchObject({ code: 'forbidden' });
    const read = await t.app.inject({ url: `/items/${item}/availability`, headers: bearer(CLIENT) });
    expect(read.json()).toMatchObject({ code: 'item_not_found' });
  });

  it('scopes idempotency keys per credential', async () => {
    const item = newItem();
    await t.app.inject({ method: 'PUT', url: `/items/${item}/stock`, headers: bearer(OPERATOR), payload: { quantity: 10 } });
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 1 }] };
    const a = await t.app.inject({ method: 'POST', url: '/reservations', headers: { ...bearer(CLIENT), 'idempotency-key': key }, payload: body });
    const b = await t.app.inject({ method: 'POST', url: '/reservations', headers: { ...bearer(OTHER_CLIENT), 'idempotency-key': key }, payload: body });
    expect(a.statusCode).toBe(201);
    expect(b.statusCode).toBe(201);
    expect(b.headers['idempotent-replayed']).toBeUndefined();
    expect(a.json().id).not.toBe(b.json().id);
    const replay = await t.app.inject({ method: 'POST', url: '/reservations', headers: { ...bearer(CLIENT), 'idempotency-key': key }, payload: body });
    expect(replay.json().id).toBe(a.json().id);
  });
});

describe('rate limit', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ RATE_LIMIT_MAX: 3, RATE_LIMIT_WINDOW_MS: 60_000 });
  });
  afterAll(() => t.close());

  it('answers 429 rate_limited past the configured rate, and never limits health checks', async () => {
    const item = newItem();
    const codes: number[] = [];
    for (let i = 0; i < 5; i++) codes.push((await t.app.inject({ url: `/items/${item}/availability` })).statusCode);
    expect(codes).toEqual([404, 404, 404, 429, 429]);
    const limited = await t.app.inject({ url: `/items/${item}/availability` });
    expect(limited.headers['content-type']).toContain('application/problem+json');
    expect(limited.json()).toMatchObject({ code: 'rate_limited', status: 429 });
    for (let i = 0; i < 5; i++) expect((await t.app.inject({ url: '/health/live' })).statusCode).toBe(200);
  });
});
