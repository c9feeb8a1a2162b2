import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReservationDocument } from '../../src/domain/schemas.js';
import { newItem, newKey, type TestApp } from '../helpers/app.js';
import { Api, type Answer, expectPage, expectProblem, expectReleased, expectReservation, outcome, range, startHttpApp, tally } from '../helpers/api.js';
import { checkInvariants, figuresOf } from '../helpers/invariants.js';

/**
 * By reference against the real stores: tenancy (a client key lists and releases only its tenant's reservations),
 * and release by reference racing individual confirms of the same reservations: each ends one way, the answers
 * agree with it, and Redis = PostgreSQL.
 */

const SECRETS = { shopA: 'shop-a-secret-0123456789', shopB: 'shop-b-secret-0123456789', root: 'root-secret-0123456789' };
type Who = keyof typeof SECRETS;
const API_KEYS = [
  `shop-a:${SECRETS.shopA}:client:shop-a`,
  `shop-b:${SECRETS.shopB}:client:shop-b`,
  `root:${SECRETS.root}:operator`,
].join(',');

let t: TestApp;
let api: Api;
beforeAll(async () => {
  t = await startHttpApp({ API_KEYS });
  api = Api.inject(t.app);
});
afterAll(() => t?.close());

const auth = (who: Who) => ({ authorization: `Bearer ${SECRETS[who]}` });
const call = (who: Who, method: 'GET' | 'POST' | 'PUT', url: string, payload?: unknown) =>
  api.request({ method, url, headers: auth(who), ...(payload === undefined ? {} : { payload }) });

let refCounter = 0;
const newReference = () => `saga-${process.pid}-${Date.now()}-${refCounter++}`;

async function stocked(quantity: number): Promise<string> {
  const item = newItem();
  expect((await call('root', 'PUT', `/items/${item}/stock`, { quantity })).status).toBe(200);
  return item;
}

async function hold(who: Who, item: string, reference: string): Promise<ReservationDocument> {
  const res = await api.request({
    method: 'POST',
    url: '/reservations',
    headers: { ...auth(who), 'idempotency-key': newKey() },
    payload: { lines: [{ itemId: item, quantity: 1 }], reference },
  });
  return expectReservation(res, 201);
}

const list = async (who: Who, reference: string) =>
  expectPage(await call(who, 'GET', `/reservations?reference=${encodeURIComponent(reference)}&limit=100`)).items;

describe('tenancy', () => {
  it('a client key lists and releases only its own tenant\'s reservations of a reference; an operator key all', async () => {
    const item = await stocked(10);
    const reference = newReference(); // both shops happen to use the same order id
    const a = [await hold('shopA', item, reference), await hold('shopA', item, reference)];
    const b = await hold('shopB', item, reference);

    expect((await list('shopA', reference)).map((d) => d.id)).toEqual([a[1]!.id, a[0]!.id]);
    expect((await list('shopB', reference)).map((d) => d.id)).toEqual([b.id]);
    expect((await list('root', reference)).map((d) => d.id)).toEqual([b.id, a[1]!.id, a[0]!.id]);
    for (const status of ['pending', 'released']) {
      const page = expectPage(await call('shopB', 'GET', `/reservations?reference=${reference}&status=${status}`));
      expect(page.items.every((d) => d.id === b.id)).toBe(true);
    }

    const released = expectReleased(await call('shopA', 'POST', '/reservations/release', { reference }));
    expect(released.items.map((d) => [d.id, d.status])).toEqual([
      [a[1]!.id, 'released'],
      [a[0]!.id, 'released'],
    ]);
    // Shop B's reservation of the same reference is untouched.
    expect((await list('shopB', reference)).map((d) => d.status)).toEqual(['pending']);
    const all = expectReleased(await call('root', 'POST', '/reservations/release', { reference }));
    expect(all.items.map((d) => d.status)).toEqual(['released', 'released', 'released']);
    await checkInvariants(t.app, [item]);
  });

  it('both operations need a key', async () => {
    expectProblem(await api.request({ method: 'GET', url: '/reservations?reference=x' }), 'unauthorized');
    expectProblem(await api.request({ method: 'POST', url: '/reservations/release', payload: { reference: 'x' } }), 'unauthorized');
  });
});

describe('release by reference racing individual confirms', () => {
  it('each of 100 reservations ends confirmed or released, as the answers say, and Redis = PostgreSQL', async () => {
    const n = 100;
    const LANES = 25;
    const item = await stocked(n + 20);
    const reference = newReference();
    const held = await Promise.all(range(n).map(() => hold('root', item, reference)));
    // A reservation of another reference stays pending throughout.
    const bystander = await hold('root', item, newReference());

    // 25 lanes confirm the reservations one after another while the release by reference runs: its first read of
    // the reference (PostgreSQL) finds the lanes' first confirms decided in Redis and not yet recorded, so its
    // releases of those meet a confirm (and wait for its record); the lanes' later confirms meet a release.
    const answers: Answer[] = [];
    const lane = async (from: number) => {
      for (let i = from; i < n; i += LANES) answers[i] = await call('root', 'POST', `/reservations/${held[i]!.id}/confirm`);
    };
    const [compensation] = await Promise.all([
      call('root', 'POST', '/reservations/release', { reference }),
      ...range(LANES).map(lane),
    ]);
    const released = expectReleased(compensation);

    // Every confirm was told one of the two outcomes.
    const told = tally(answers);
    expect(Object.keys(told).every((o) => o === '200' || o === '409 reservation_released'), JSON.stringify(told)).toBe(true);

    const finals = new Map((await list('root', reference)).map((d) => [d.id, d]));
    expect(finals.size).toBe(n);
    const byId = new Map(released.items.map((d) => [d.id, d]));
    expect(released.items).toHaveLength(n);
    held.forEach((d, i) => {
      const final = finals.get(d.id)!;
      expect(['confirmed', 'released']).toContain(final.status);
      // The confirm's answer and the release's answer both say how it ended.
      expect(outcome(answers[i]!), d.id).toBe(final.status === 'confirmed' ? '200' : '409 reservation_released');
      expect(byId.get(d.id), d.id).toEqual(final);
    });
    const confirmed = [...finals.values()].filter((d) => d.status === 'confirmed').length;

    // Again: the same states, nothing more released.
    const again = expectReleased(await call('root', 'POST', '/reservations/release', { reference }));
    expect(again.items).toEqual(released.items);
    expect(expectReservation(await call('root', 'GET', `/reservations/${bystander.id}`), 200).status).toBe('pending');

    const report = await checkInvariants(t.app, [item], { holdsWithinSupply: true });
    const figures = figuresOf(report, item);
    expect(figures.pg.onHand).toBe(n + 20 - confirmed);
    expect(figures.lines.confirmed).toBe(confirmed);
    expect(figures.lines.pending).toBe(1);
  });
});
