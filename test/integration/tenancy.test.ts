import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newItem, newKey, startTestApp, type TestApp } from '../helpers/app.js';

/**
 * Tenancy with API keys on: a client key sees only its tenant's reservations (another tenant's answer exactly
 * as a missing one, and change nothing), operators see all, keys without a tenant share `default`. Checked on
 * the hot path (the header cached in Redis) and on the PostgreSQL path (header gone).
 */

const SECRETS = {
  shopA: 'shop-a-secret-0123456789',
  shopAPos: 'shop-a-pos-secret-0123456789',
  shopB: 'shop-b-secret-0123456789',
  plain: 'plain-secret-0123456789',
  opsB: 'ops-b-secret-0123456789',
  root: 'root-secret-0123456789',
};
type Who = keyof typeof SECRETS;
const API_KEYS = [
  `shop-a:${SECRETS.shopA}:client:shop-a`,
  `shop-a-pos:${SECRETS.shopAPos}:client:shop-a`,
  `shop-b:${SECRETS.shopB}:client:shop-b`,
  `plain:${SECRETS.plain}:client`,
  `ops-b:${SECRETS.opsB}:operator:shop-b`,
  `root:${SECRETS.root}:operator`,
].join(',');

/** The members of a reservation document: tenancy adds none. */
const DOCUMENT_MEMBERS = ['allocation', 'createdAt', 'expiresAt', 'id', 'lines', 'metadata', 'priority', 'reference', 'status', 'updatedAt', 'version'];

let t: TestApp;
let db: pg.Client;
beforeAll(async () => {
  t = await startTestApp({ API_KEYS });
  db = new pg.Client({ connectionString: t.databaseUrl });
  await db.connect();
});
afterAll(async () => {
  await db?.end();
  await t?.close();
});

const auth = (who: Who) => ({ authorization: `Bearer ${SECRETS[who]}` });

async function stockedItem(quantity = 10): Promise<string> {
  const item = newItem();
  const res = await t.app.inject({ method: 'PUT', url: `/items/${item}/stock`, headers: auth('root'), payload: { quantity } });
  expect(res.statusCode).toBe(200);
  return item;
}

async function reserve(who: Who, item: string, quantity = 3): Promise<string> {
  const res = await t.app.inject({
    method: 'POST',
    url: '/reservations',
    headers: { ...auth(who), 'idempotency-key': newKey() },
    payload: { lines: [{ itemId: item, quantity }] },
  });
  expect(res.statusCode, res.body).toBe(201);
  expect(Object.keys(res.json()).sort()).toEqual(DOCUMENT_MEMBERS);
  return res.json().id as string;
}

const routes = [
  { method: 'GET' as const, path: (id: string) => `/reservations/${id}` },
  { method: 'POST' as const, path: (id: string) => `/reservations/${id}/confirm` },
  { method: 'POST' as const, path: (id: string) => `/reservations/${id}/release` },
  { method: 'POST' as const, path: (id: string) => `/reservations/${id}/extend`, payload: { ttlSeconds: 60 } },
];

const call = (who: Who, method: 'GET' | 'POST', url: string, payload?: object) =>
  t.app.inject({ method, url, headers: auth(who), ...(payload ? { payload } : {}) });

/** Every reservation route answers `who` exactly as for an id that does not exist. */
async function expectInvisible(who: Who, id: string): Promise<void> {
  const missing = randomUUID();
  for (const route of routes) {
    const res = await call(who, route.method, route.path(id), route.payload);
    const none = await call(who, route.method, route.path(missing), route.payload);
    expect(res.statusCode, `${who} ${route.method} ${route.path('…')}`).toBe(404);
    expect(res.headers['content-type']).toBe(none.headers['content-type']);
    expect(res.json()).toEqual({ ...none.json(), detail: none.json().detail.replace(missing, id) });
    expect(res.json()).toMatchObject({ code: 'reservation_not_found', status: 404 });
  }
}

/** Still pending, its units still held, in Redis (availability) and in PostgreSQL. */
async function expectUntouched(id: string, item: string, held: number, onHand = 10): Promise<void> {
  const read = await call('root', 'GET', `/reservations/${id}`);
  expect(read.json().status).toBe('pending');
  const availability = await call('root', 'GET', `/items/${item}/availability`);
  expect(availability.json()).toMatchObject({ onHand, reserved: held, available: onHand - held });
  const row = await db.query<{ status: string }>('SELECT status FROM reservations WHERE id = $1', [id]);
  expect(row.rows[0]?.status).toBe('pending');
  const stock = await db.query<{ reserved: number }>('SELECT reserved FROM stock WHERE item_id = $1', [item]);
  expect(stock.rows[0]?.reserved).toBe(held);
}

async function forgetHeader(id: string): Promise<void> {
  const { redis, keys } = t.app.runtime;
  expect(await redis.del(keys.reservation(id))).toBe(1);
}

describe.each([
  { path: 'the hot path (header cached in Redis)', lose: async (_id: string) => {} },
  { path: 'the PostgreSQL path (Redis lost the header)', lose: forgetHeader },
])('tenancy on $path', ({ lose }) => {
  it("hides tenant A's reservation from tenant B's and the default tenant's client keys, changing nothing", async () => {
    const item = await stockedItem();
    const id = await reserve('shopA', item);
    await lose(id);
    await expectInvisible('shopB', id);
    await expectInvisible('plain', id);
    await expectUntouched(id, item, 3);
  });

  it("lets every key of tenant A read and settle A's reservation", async () => {
    const item = await stockedItem();
    const id = await reserve('shopA', item);
    await lose(id);
    expect((await call('shopAPos', 'GET', `/reservations/${id}`)).json()).toMatchObject({ id, status: 'pending' });
    const confirmed = await call('shopAPos', 'POST', `/reservations/${id}/confirm`);
    expect(confirmed.statusCode, confirmed.body).toBe(200);
    expect(Object.keys(confirmed.json()).sort()).toEqual(DOCUMENT_MEMBERS);
    expect((await call('shopA', 'GET', `/reservations/${id}`)).json().status).toBe('confirmed');

    const other = await reserve('shopA', item);
    await lose(other);
    expect((await call('shopA', 'POST', `/reservations/${other}/release`)).json().status).toBe('released');
    // Settled, it stays invisible to the other tenant.
    await expectInvisible('shopB', other);
  });

  it('lets operators of any tenant (or none) read, confirm and release every tenant’s reservations', async () => {
    const item = await stockedItem();
    const first = await reserve('shopA', item);
    await lose(first);
    expect((await call('opsB', 'GET', `/reservations/${first}`)).json()).toMatchObject({ id: first, status: 'pending' });
    expect((await call('opsB', 'POST', `/reservations/${first}/confirm`)).json().status).toBe('confirmed');

    const second = await reserve('shopA', item);
    await lose(second);
    expect((await call('root', 'POST', `/reservations/${second}/release`)).json().status).toBe('released');
    expect((await call('shopA', 'GET', `/reservations/${second}`)).json().status).toBe('released');
    const availability = await call('shopB', 'GET', `/items/${item}/availability`);
    expect(availability.json()).toMatchObject({ onHand: 7, reserved: 0, available: 7 });
  });

  it("hides the default tenant's reservations from a tenant's client keys", async () => {
    const item = await stockedItem();
    const id = await reserve('plain', item);
    await lose(id);
    await expectInvisible('shopA', id);
    await expectUntouched(id, item, 3);
    expect((await call('plain', 'POST', `/reservations/${id}/confirm`)).json().status).toBe('confirmed');
  });
});

describe('what tenancy keeps and shares', () => {
  it('records the tenant with the reservation, in PostgreSQL and in the cached header', async () => {
    const item = await stockedItem();
    const a = await reserve('shopA', item, 1);
    const plain = await reserve('plain', item, 1);
    const opsB = await reserve('opsB', item, 1);
    const { rows } = await db.query<{ id: string; tenant: string }>('SELECT id, tenant FROM reservations WHERE id = ANY($1)', [[a, plain, opsB]]);
    expect(Object.fromEntries(rows.map((r) => [r.id, r.tenant]))).toEqual({ [a]: 'shop-a', [plain]: 'default', [opsB]: 'shop-b' });
    expect((await t.app.runtime.decisions.header(a))?.tenant).toBe('shop-a');
  });

  it('shares stock across tenants: a hold of one tenant is unavailable to every other', async () => {
    const item = await stockedItem(3);
    await reserve('shopA', item, 3);
    const res = await t.app.inject({
      method: 'POST',
      url: '/reservations',
      headers: { ...auth('shopB'), 'idempotency-key': newKey() },
      payload: { lines: [{ itemId: item, quantity: 1 }] },
    });
    expect(res.json()).toMatchObject({ code: 'insufficient_stock' });
  });

  it('scopes idempotency keys per credential, not per tenant', async () => {
    const item = await stockedItem();
    const key = newKey();
    const post = (who: Who) =>
      t.app.inject({
        method: 'POST',
        url: '/reservations',
        headers: { ...auth(who), 'idempotency-key': key },
        payload: { lines: [{ itemId: item, quantity: 1 }] },
      });
    const a = await post('shopA');
    const pos = await post('shopAPos');
    expect(pos.headers['idempotent-replayed']).toBeUndefined();
    expect(pos.json().id).not.toBe(a.json().id);
    expect((await post('shopA')).json().id).toBe(a.json().id);
  });

  it('has no tenancy once authentication is off: everyone sees everything', async () => {
    const item = await stockedItem();
    const id = await reserve('shopA', item);
    const open = await startTestApp({ DATABASE_URL: t.databaseUrl, REDIS_KEY_PREFIX: t.config.REDIS_KEY_PREFIX });
    try {
      expect((await open.app.inject({ url: `/reservations/${id}` })).json()).toMatchObject({ id, status: 'pending' });
      expect((await open.app.inject({ method: 'POST', url: `/reservations/${id}/release` })).json().status).toBe('released');
    } finally {
      await open.app.close(); // not open.close(): the keys and database are t's
    }
  });
});
