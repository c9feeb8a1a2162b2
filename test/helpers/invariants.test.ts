import { describe, expect, it } from 'vitest';
import { HoldState } from '../../src/redis/status.js';
import { checkStores, pairKey, type CheckOptions, type StoreInvariant, type StoreState } from './invariants.js';

/**
 * The shared checker on hand-made snapshots: a consistent pair of stores passes, and each kind of damage is named
 * under its invariant, so no check the suites rely on can pass vacuously.
 */

const T = 1_700_000_000_000;
const A = pairKey('sku-a', 'default');
const [R1, R2, R3] = ['01890000-0000-7000-8000-000000000001', '01890000-0000-7000-8000-000000000002', '01890000-0000-7000-8000-000000000003'];

/** 12 supplied; R1 holds 2 until T + 60 s; R2 bought 2. */
function consistent(): StoreState {
  const line = (quantity: number) => [{ itemId: 'sku-a', location: 'default', quantity }];
  const movement = (kind: string, onHand: number, reserved: number, reservationId: string | null) => ({
    itemId: 'sku-a',
    location: 'default',
    kind,
    onHand,
    reserved,
    safety: 0,
    reservationId,
    reason: null,
  });
  return {
    postgres: {
      nowMs: T - 5,
      reservations: new Map([
        [R1, { id: R1, status: 'pending' as const, expiresAtMs: T + 60_000, updatedAtMs: T - 1_000, version: 1, lines: line(2) }],
        [R2, { id: R2, status: 'confirmed' as const, expiresAtMs: T + 60_000, updatedAtMs: T - 500, version: 2, lines: line(2) }],
      ]),
      stock: new Map([[A, { itemId: 'sku-a', location: 'default', onHand: 10, reserved: 2, safetyStock: 0 }]]),
      movements: [movement('set', 12, 0, null), movement('reserve', 0, 2, R1), movement('reserve', 0, 2, R2), movement('confirm', -2, -2, R2)],
      idempotency: [
        { scope: '_', key: 'k1', reservationId: R1, statusCode: 201, responseId: R1 },
        { scope: '_', key: 'k2', reservationId: R2, statusCode: 201, responseId: R2 },
      ],
    },
    redis: {
      nowMs: T,
      marker: '1',
      items: new Set(['sku-a']),
      stock: new Map([[A, { itemId: 'sku-a', location: 'default', onHand: 10, reserved: 2, pending: null, safety: null, safetyPending: null }]]),
      holds: [
        { itemId: 'sku-a', reservationId: R1, location: 'default', state: HoldState.pending, quantity: 2, expiresAtMs: T + 60_000, version: 1 },
        { itemId: 'sku-a', reservationId: R2, location: 'default', state: HoldState.confirmed, quantity: 2, expiresAtMs: T + 60_000, version: 2 },
      ],
      malformed: [],
    },
  };
}

const strict: CheckOptions = { redisMatchesPostgres: true, holdsWithinSupply: true };
const violated = (state: StoreState, options: CheckOptions = strict) =>
  Object.entries(checkStores(state, options).violations)
    .filter(([, vs]) => vs.length > 0)
    .map(([id]) => id as StoreInvariant);

describe('checkStores', () => {
  it('passes stores that agree, under every option', () => {
    expect(checkStores(consistent(), strict).violations).toEqual({ I1: [], I2: [], I3: [], I5: [] });
    expect(violated(consistent(), { ...strict, expiryMarginMs: 1_000, closedSupply: new Map([[A, 12]]) })).toEqual([]);
  });

  it('I1: units sold and held beyond what was supplied', () => {
    const s = consistent();
    s.postgres!.movements[0]!.onHand = 3;
    s.postgres!.stock.get(A)!.onHand = 1;
    s.redis!.stock.get(A)!.onHand = 1;
    const check = checkStores(s, { ...strict, explainOversell: (pair, excess) => ` [${pair} +${excess}]` });
    expect(check.violations.I1).toContain(`${A}: 2 confirmed + 2 held by pending reservations > 3 supplied (oversold by 1) [${A} +1]`);
    expect(check.violations.I1).toContain(`${A}: Redis reserved 2 > on-hand 1`);
  });

  it('I1 against a closed supply: more sold and held than seeded', () => {
    expect(violated(consistent(), { ...strict, closedSupply: new Map([[A, 3]]) })).toEqual(['I1', 'I5']);
  });

  it('I2: a reservation without its idempotency row, or a row naming another answer', () => {
    const s = consistent();
    s.postgres!.idempotency.pop();
    s.postgres!.idempotency[0]!.responseId = R3;
    const check = checkStores(s, strict);
    expect(check.violations.I2).toHaveLength(2);
    expect(violated(s)).toEqual(['I2']);
  });

  it('I3: a live reservation Redis does not hold, and a hold PostgreSQL does not know', () => {
    const s = consistent();
    s.redis!.holds[0]!.state = HoldState.released;
    s.redis!.holds.push({ itemId: 'sku-a', reservationId: R3, location: 'default', state: HoldState.pending, quantity: 1, expiresAtMs: T + 5_000, version: 1 });
    s.redis!.stock.get(A)!.reserved = 1;
    const check = checkStores(s, { expiryMarginMs: 1_000 });
    expect(check.violations.I3).toHaveLength(2);
    expect(violated(s, { expiryMarginMs: 1_000 })).toEqual(['I3']);
  });

  it('I3: holds within the expiry margin are left out of the comparison, and judged exactly without one', () => {
    const s = consistent();
    s.postgres!.reservations.get(R1)!.expiresAtMs = T + 500;
    s.redis!.holds[0]!.expiresAtMs = T + 400;
    expect(violated(s, { expiryMarginMs: 1_000 })).toEqual([]);
    expect(checkStores(s, {}).violations.I3).toHaveLength(1);
  });

  it('I3: a reservation confirmed after its TTL, and a Redis without its generation marker', () => {
    const s = consistent();
    s.postgres!.reservations.get(R2)!.updatedAtMs = T + 60_000;
    s.redis!.marker = null;
    expect(checkStores(s, strict).violations.I3).toHaveLength(2);
  });

  it('I5: PostgreSQL against its ledger, a line recorded twice, Redis against its holds, a malformed value', () => {
    const s = consistent();
    s.postgres!.stock.get(A)!.reserved = 3;
    s.postgres!.movements.push({ ...s.postgres!.movements[1]! });
    s.redis!.stock.get(A)!.reserved = 5;
    s.redis!.malformed.push('Redis k has a malformed hold f = v');
    const i5 = checkStores(s, {}).violations.I5;
    expect(i5.some((v) => v.includes('stock.reserved 3 ≠ Σ pending lines 2'))).toBe(true);
    expect(i5.some((v) => v.includes(`reservation ${R1}`) && v.includes('exactly once'))).toBe(true);
    expect(i5.some((v) => v.includes('Redis reserved (r:) 5 ≠ Σ its pending holds 2'))).toBe(true);
    expect(i5).toContain('Redis k has a malformed hold f = v');
  });

  it('Redis ≠ PostgreSQL is a violation only where the stores must match figure for figure', () => {
    const s = consistent();
    s.redis!.stock.get(A)!.onHand = 7;
    s.redis!.stock.get(A)!.pending = 3;
    s.redis!.holds[1]!.state = HoldState.released;
    expect(violated(s, { holdsWithinSupply: true })).toEqual([]);
    const check = checkStores(s, strict);
    expect(check.differences).toHaveLength(3);
    expect(check.violations.I5).toEqual(check.differences);
  });

  it('a partial confirm: the units sold leave on-hand, the rest is a release; each side of it is checked', () => {
    // R2 sold 1 of its 2 (confirmed_quantity 1): a confirm of 1 and a release of 1; on-hand 11, Redis' hold sold 1.
    const partly = () => {
      const s = consistent();
      s.postgres!.reservations.get(R2)!.lines[0]!.confirmedQuantity = 1;
      s.postgres!.movements.splice(3, 1, { ...s.postgres!.movements[3]!, onHand: -1, reserved: -1 });
      s.postgres!.movements.push({ ...s.postgres!.movements[3]!, kind: 'release', onHand: 0, reserved: -1 });
      s.postgres!.stock.get(A)!.onHand = 11;
      s.redis!.stock.get(A)!.onHand = 11;
      s.redis!.holds[1]!.quantity = 1;
      return s;
    };
    expect(checkStores(partly(), strict).violations).toEqual({ I1: [], I2: [], I3: [], I5: [] });
    // The ledger without the release of the rest.
    const noRelease = partly();
    noRelease.postgres!.movements.pop();
    noRelease.postgres!.stock.get(A)!.reserved = 3;
    expect(checkStores(noRelease, {}).violations.I5.some((v) => v.includes(`reservation ${R2}`) && v.includes('exactly once'))).toBe(true);
    // PostgreSQL's on-hand as if both units had been sold.
    const wholeOnHand = partly();
    wholeOnHand.postgres!.stock.get(A)!.onHand = 10;
    expect(checkStores(wholeOnHand, {}).violations.I5.some((v) => v.includes('on-hand 10 ≠ supplied 12 − confirmed lines 1'))).toBe(true);
    // Redis' hold says it sold both.
    const redisSoldAll = partly();
    redisSoldAll.redis!.holds[1]!.quantity = 2;
    expect(checkStores(redisSoldAll, strict).differences).toEqual([expect.stringContaining('sold 2, PostgreSQL 1')]);
    // A confirmed quantity on a line that is not confirmed.
    const onPending = partly();
    onPending.postgres!.reservations.get(R1)!.lines[0]!.confirmedQuantity = 1;
    expect(checkStores(onPending, {}).violations.I5.some((v) => v.includes('confirmed_quantity 1 on a pending line'))).toBe(true);
  });

  it('Redis ≠ PostgreSQL: a hold at another version than its reservation in the same state', () => {
    const s = consistent();
    s.redis!.holds[1]!.version = 3;
    expect(violated(s, { holdsWithinSupply: true })).toEqual([]);
    const check = checkStores(s, strict);
    expect(check.differences).toEqual([expect.stringContaining('is at version 3, PostgreSQL at 2')]);
    // An expiry the sweeper has not recorded yet: Redis is one version ahead, in another state.
    const t = consistent();
    t.redis!.holds[0]!.state = HoldState.expired;
    t.redis!.holds[0]!.version = 2;
    expect(checkStores(t, strict).differences.filter((d) => d.includes('version'))).toEqual([]);
  });
});
