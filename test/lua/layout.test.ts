import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/metrics.js';
import { Decisions, type ReservationHeader } from '../../src/redis/decisions.js';
import { Keys } from '../../src/redis/keys.js';
import {
  formatHold,
  formatIntent,
  formatRecord,
  IntentKind,
  holdField,
  parseHeader,
  parseHold,
  parseHoldField,
  parseIntent,
  parseRecord,
  parseStock,
  parseStockField,
  recordPrefix,
  recordSuffix,
  stockField,
} from '../../src/redis/layout.js';
import { HoldState } from '../../src/redis/status.js';
import { newItem } from '../helpers/app.js';
import { testRedisUrl } from '../helpers/servers.js';

/**
 * Lua and TypeScript agree on what is inside the Redis values (src/redis/layout.ts): the real scripts run on a
 * real Redis, and what they write is read back with the TypeScript helpers; values the TypeScript helpers write
 * (as the rebuild writes them) are fed to the scripts, which must act on them.
 */

const RETENTION_MS = 60_000;
/** A location with the hold field's separator in it: a field splits at its first separator, not its last. */
const LOCATION = 'bay:3';

const redis = new Redis(testRedisUrl(), { lazyConnect: true });
const keys = new Keys(`test:layout:${randomBytes(4).toString('hex')}:`);
/** The node the reserve calls below claim keys for. */
const NODE = 'abcdef012345';
const decisions = new Decisions(redis, keys, createMetrics(), RETENTION_MS, () => {});
const GENERATION = '7';

beforeAll(async () => {
  await redis.set(keys.marker, GENERATION);
});
afterAll(async () => {
  const stream = redis.scanStream({ match: `${keys.prefix}*`, count: 1000 });
  for await (const batch of stream as AsyncIterable<string[]>) if (batch.length > 0) await redis.unlink(...batch);
  await redis.quit();
});

// In the order the reserve script writes the header's body: the lines it held first.
const header = (itemId: string, quantity: number, location = LOCATION): ReservationHeader => ({
  lines: [{ itemId, location, quantity }],
  reference: 'cart-1',
  metadata: { channel: 'web' },
  priority: 'normal',
  tenant: 'default',
  allocation: null,
});

async function reserve(itemId: string, quantity: number, ttlMs = 60_000, location = LOCATION) {
  const reservationId = uuidv7();
  const idempotencyKey = keys.idempotency('_', `key-${reservationId}`);
  const hash = `hash-${randomBytes(4).toString('hex')}`;
  const decision = await decisions.reserve({
    reservationId,
    lines: [{ itemId, location, quantity }],
    ttlMs,
    idempotencyKey,
    recordPrefix: recordPrefix(hash, reservationId),
    recordSuffix: recordSuffix(NODE),
    recordTtlMs: 60_000,
    header: header(itemId, quantity, location),
    lease: { key: keys.node(NODE), ttlMs: 3_000 },
  });
  if (decision.kind !== 'held') throw new Error(`reserve: ${JSON.stringify(decision)}`);
  return { reservationId, idempotencyKey, hash, nowMs: decision.nowMs };
}

const stockOf = async (itemId: string, location = LOCATION) => parseStock(await redis.hgetall(keys.item(itemId).stock)).get(location);
const holdOf = async (itemId: string, reservationId: string, location = LOCATION) =>
  parseHold((await redis.hget(keys.item(itemId).holds, holdField(reservationId, location))) ?? '');

describe('TypeScript reads what the scripts write', () => {
  it('stock fields: pending supply, on-hand and reserved, per location', async () => {
    const item = newItem();
    const opId = uuidv7();
    const decided = await decisions.changeStock(item, LOCATION, 'set', 10, { opId, nodeId: NODE });
    if (decided.kind !== 'changed') throw new Error(decided.kind);
    expect(await stockOf(item)).toEqual({ onHand: null, reserved: null, pending: 10, safety: null, safetyPending: null });
    // The script's reply is parsed by the same helper.
    expect(decided.stock.get(LOCATION)).toEqual({ onHand: null, reserved: null, pending: 10, safety: null, safetyPending: null });
    await decisions.endStockChange(item, 'apply', opId, decided);
    expect(await stockOf(item)).toEqual({ onHand: 10, reserved: 0, pending: null, safety: null, safetyPending: null });
    for (const field of Object.keys(await redis.hgetall(keys.item(item).stock))) {
      expect(parseStockField(field), field).toMatchObject({ location: LOCATION });
    }
  });

  it('the intent a stock decision records, until the decision ends', async () => {
    const item = newItem();
    const supply = uuidv7();
    const decided = await decisions.changeStock(item, LOCATION, 'set', 10, { opId: supply, nodeId: NODE });
    if (decided.kind !== 'changed') throw new Error(decided.kind);
    const [seconds] = await redis.time();
    const intent = parseIntent((await redis.hget(keys.item(item).intents, supply))!);
    expect(intent).toEqual({ location: LOCATION, delta: 10, safetyDelta: 0, kind: IntentKind.supply, decidedMs: expect.any(Number), nodeId: NODE });
    expect(Math.abs(intent!.decidedMs - Number(seconds) * 1000)).toBeLessThan(2_000);
    await decisions.endStockChange(item, 'apply', supply, decided);
    const debit = uuidv7();
    await decisions.changeStock(item, LOCATION, 'adjust', -4, { opId: debit, nodeId: NODE });
    expect(await redis.hgetall(keys.item(item).intents)).toEqual({ [debit]: expect.any(String) });
    expect(parseIntent((await redis.hget(keys.item(item).intents, debit))!)).toMatchObject({ delta: -4, kind: IntentKind.debit });
  });

  it('safety stock: an increase in s: at once, a decrease waiting in q:, the intent carrying the safety delta', async () => {
    const item = newItem();
    await stock(item, 10);
    const up = uuidv7();
    const raised = await decisions.changeStock(item, LOCATION, 'set', 10, { opId: up, nodeId: NODE }, 4);
    expect(raised).toMatchObject({ kind: 'changed', onHandDelta: 0, safetyDelta: 4, intent: true });
    if (raised.kind !== 'changed') throw new Error(raised.kind);
    expect(raised.stock.get(LOCATION)).toEqual({ onHand: 10, reserved: 0, pending: null, safety: 4, safetyPending: null });
    expect(parseIntent((await redis.hget(keys.item(item).intents, up))!)).toMatchObject({ delta: 0, safetyDelta: 4, kind: IntentKind.debit });
    await decisions.endStockChange(item, 'settle', up, raised);

    const down = uuidv7();
    const lowered = await decisions.changeStock(item, LOCATION, 'set', 12, { opId: down, nodeId: NODE }, 1);
    expect(lowered).toMatchObject({ kind: 'changed', onHandDelta: 2, safetyDelta: -3, pending: true });
    expect(await stockOf(item)).toEqual({ onHand: 10, reserved: 0, pending: 2, safety: 4, safetyPending: 3 });
    expect(parseIntent((await redis.hget(keys.item(item).intents, down))!)).toMatchObject({ delta: 2, safetyDelta: -3, kind: IntentKind.supply });
    await decisions.endStockChange(item, 'apply', down, lowered as Extract<typeof lowered, { kind: 'changed' }>);
    expect(await stockOf(item)).toEqual({ onHand: 12, reserved: 0, pending: null, safety: 1, safetyPending: null });
    for (const field of Object.keys(await redis.hgetall(keys.item(item).stock))) {
      expect(parseStockField(field), field).toMatchObject({ location: LOCATION });
    }
  });

  it('a hold, its field, the idempotency record and the header the reserve script writes', async () => {
    const item = newItem();
    await stock(item, 10);
    const { reservationId, idempotencyKey, hash, nowMs } = await reserve(item, 3, 45_000);

    const fields = Object.keys(await redis.hgetall(keys.item(item).holds));
    expect(fields.map(parseHoldField)).toEqual([{ reservationId, location: LOCATION }]);
    expect(await holdOf(item, reservationId)).toEqual({ state: HoldState.pending, quantity: 3, expiresAtMs: nowMs + 45_000, version: 1 });
    expect(await stockOf(item)).toEqual({ onHand: 10, reserved: 3, pending: null, safety: null, safetyPending: null });
    expect(parseRecord((await redis.get(idempotencyKey))!)).toEqual({
      hash,
      reservationId,
      claimedAtMs: nowMs,
      nodeId: NODE,
      outcomeUnknown: false,
    });
    expect(parseHeader(await redis.hgetall(keys.reservation(reservationId)))).toEqual({
      body: JSON.stringify(header(item, 3)),
      createdMs: nowMs,
      expiresMs: nowMs + 45_000,
    });
    expect(await decisions.header(reservationId)).toEqual({ ...header(item, 3), createdMs: nowMs, expiresMs: nowMs + 45_000 });
  });

  it('the final states settle writes: confirmed and released', async () => {
    const item = newItem();
    await stock(item, 10);
    const sold = await reserve(item, 4);
    const freed = await reserve(item, 2);
    expect((await decisions.settle('confirm', sold.reservationId, [{ itemId: item, location: LOCATION, quantity: 4 }])).kind).toBe('settled');
    expect((await decisions.settle('release', freed.reservationId, [{ itemId: item, location: LOCATION, quantity: 2 }])).kind).toBe('settled');
    expect(await holdOf(item, sold.reservationId)).toEqual({ state: HoldState.confirmed, quantity: 4, expiresAtMs: sold.nowMs + 60_000, version: 2 });
    expect(await holdOf(item, freed.reservationId)).toEqual({ state: HoldState.released, quantity: 2, expiresAtMs: freed.nowMs + 60_000, version: 2 });
    expect(await stockOf(item)).toEqual({ onHand: 6, reserved: 0, pending: null, safety: null, safetyPending: null });
  });

  it('for any location an identifier may be, the reserve script writes what the helpers parse', async () => {
    const item = newItem();
    const identifier = fc.stringMatching(/^[A-Za-z0-9._:-]{1,64}$/).filter((s) => s !== '.' && s !== '..');
    await fc.assert(
      fc.asyncProperty(identifier, fc.integer({ min: 1, max: 1_000 }), async (location, quantity) => {
        const opId = uuidv7();
        const decided = await decisions.changeStock(item, location, 'set', quantity, { opId, nodeId: NODE });
        if (decided.kind !== 'changed') throw new Error(decided.kind);
        if (decided.intent) await decisions.endStockChange(item, decided.pending ? 'apply' : 'settle', opId, decided);
        const { reservationId, nowMs } = await reserve(item, quantity, 60_000, location);
        expect(await holdOf(item, reservationId, location)).toEqual({ state: HoldState.pending, quantity, expiresAtMs: nowMs + 60_000, version: 1 });
        expect(parseHoldField(holdField(reservationId, location))).toEqual({ reservationId, location });
        expect(await stockOf(item, location)).toMatchObject({ onHand: quantity, reserved: quantity });
        expect((await decisions.settle('release', reservationId, [{ itemId: item, location, quantity }])).kind).toBe('settled');
      }),
      { numRuns: 30 },
    );
  });
});

/** Stock as the rebuild writes it: on-hand and a zero reserved, through the helpers. */
async function stock(itemId: string, onHand: number): Promise<void> {
  await redis.hset(keys.item(itemId).stock, stockField('onHand', LOCATION), onHand, stockField('reserved', LOCATION), 0);
  await redis.sadd(keys.items, itemId);
}

/** A pending hold as the rebuild writes it. */
async function writeHold(itemId: string, reservationId: string, quantity: number, expiresAtMs: number): Promise<void> {
  const k = keys.item(itemId);
  const field = holdField(reservationId, LOCATION);
  await redis.hincrby(k.stock, stockField('reserved', LOCATION), quantity);
  await redis.hset(k.holds, field, formatHold({ state: HoldState.pending, quantity, expiresAtMs, version: 1 }));
  await redis.zadd(k.exp, expiresAtMs, field);
}

describe('the scripts act on what TypeScript writes', () => {
  const redisNow = async () => {
    const [seconds, micros] = await redis.time();
    return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  };

  it('availability reads the stock fields and expires a hold whose TTL passed', async () => {
    const item = newItem();
    await stock(item, 10);
    const now = await redisNow();
    const due = uuidv7();
    const live = uuidv7();
    await writeHold(item, due, 4, now - 1_000);
    await writeHold(item, live, 2, now + 60_000);

    expect((await decisions.availability(item))?.get(LOCATION)).toEqual({ onHand: 10, reserved: 2, pending: null, safety: null, safetyPending: null });
    expect(await holdOf(item, due)).toEqual({ state: HoldState.expired, quantity: 4, expiresAtMs: now - 1_000, version: 2 });
    expect(await holdOf(item, live)).toEqual({ state: HoldState.pending, quantity: 2, expiresAtMs: now + 60_000, version: 1 });
  });

  it('settle, expire and drop_hold find the holds, their quantities and expiries', async () => {
    const item = newItem();
    await stock(item, 10);
    const expiresAtMs = (await redisNow()) + 60_000;
    const [sold, inspected, orphan] = [uuidv7(), uuidv7(), uuidv7()];
    await writeHold(item, sold, 3, expiresAtMs);
    await writeHold(item, inspected, 2, expiresAtMs);
    await writeHold(item, orphan, 1, expiresAtMs);

    expect((await decisions.settle('confirm', sold, [{ itemId: item, location: LOCATION, quantity: 3 }])).kind).toBe('settled');
    expect(await holdOf(item, sold)).toEqual({ state: HoldState.confirmed, quantity: 3, expiresAtMs, version: 2 });
    expect(await decisions.expire(inspected, [{ itemId: item, location: LOCATION, quantity: 2 }], 'inspect')).toMatchObject({
      generation: GENERATION,
      pending: 1,
      missing: 0,
    });
    expect(await decisions.dropHold(item, holdField(orphan, LOCATION))).toBe(true);
    expect(await stockOf(item)).toEqual({ onHand: 7, reserved: 2, pending: null, safety: null, safetyPending: null });
  });

  it('the stock script ends an intent TypeScript wrote, from the delta and location in it', async () => {
    const item = newItem();
    await stock(item, 10);
    const opId = uuidv7();
    const k = keys.item(item);
    await redis.hset(k.stock, stockField('pending', LOCATION), 6);
    await redis.hset(k.intents, opId, formatIntent({ location: LOCATION, delta: 6, kind: IntentKind.supply, decidedMs: 1, nodeId: NODE }));
    const applied = await decisions.endStockChange(item, 'apply', opId);
    expect(applied).toMatchObject({ kind: 'changed', onHandDelta: 6 });
    expect(await stockOf(item)).toEqual({ onHand: 16, reserved: 0, pending: null, safety: null, safetyPending: null });
    expect(await decisions.endStockChange(item, 'apply', opId)).toEqual({ kind: 'already' });
  });

  it('the stock script ends a safety stock decrease TypeScript wrote: recorded, it leaves s: and q:', async () => {
    const item = newItem();
    await stock(item, 10);
    const opId = uuidv7();
    const k = keys.item(item);
    await redis.hset(k.stock, stockField('safety', LOCATION), 5, stockField('safetyPending', LOCATION), 2);
    await redis.hset(k.intents, opId, formatIntent({ location: LOCATION, delta: 0, safetyDelta: -2, kind: IntentKind.debit, decidedMs: 1, nodeId: NODE }));
    expect(await decisions.endStockChange(item, 'settle', opId)).toMatchObject({ kind: 'changed', safetyDelta: -2 });
    expect(await stockOf(item)).toEqual({ onHand: 10, reserved: 0, pending: null, safety: 3, safetyPending: null });
  });

  it('reserve answers a record the rebuild wrote as the key taken, and undo_reserve frees only its own', async () => {
    const item = newItem();
    await stock(item, 10);
    const reservationId = uuidv7();
    const idempotencyKey = keys.idempotency('_', `key-${reservationId}`);
    const record = formatRecord({ hash: 'h1', reservationId, claimedAtMs: 1_700_000_000_000, nodeId: null, outcomeUnknown: false });
    await redis.set(idempotencyKey, record);

    const decision = await decisions.reserve({
      reservationId: uuidv7(),
      lines: [{ itemId: item, location: LOCATION, quantity: 1 }],
      ttlMs: 60_000,
      idempotencyKey,
      recordPrefix: recordPrefix('h1', uuidv7()),
      recordSuffix: recordSuffix(NODE),
      recordTtlMs: 60_000,
      header: header(item, 1),
      lease: { key: keys.node(NODE), ttlMs: 3_000 },
    });
    expect(decision).toEqual({ kind: 'idempotent', record });

    const undo = (prefix: string) =>
      decisions.undoReserve({ generation: GENERATION, reservationId, lines: [], idempotencyKey, recordPrefix: prefix });
    await undo(recordPrefix('h1', uuidv7()));
    expect(await redis.get(idempotencyKey), 'another reservation’s prefix leaves the record').toBe(record);
    await undo(recordPrefix('h1', reservationId));
    expect(await redis.get(idempotencyKey), 'its own prefix frees it').toBeNull();
  });
});

describe('the helpers', () => {
  it('format and parse are inverses', () => {
    const hold = { state: HoldState.confirmed, quantity: 12, expiresAtMs: 1_700_000_000_123, version: 2 };
    expect(parseHold(formatHold(hold))).toEqual(hold);
    // A hold of an older version has no version: it reads as the one it would have had.
    expect(parseHold('p:3:1700000000123')).toEqual({ state: HoldState.pending, quantity: 3, expiresAtMs: 1_700_000_000_123, version: 1 });
    expect(parseHold('x:3:1700000000123')).toEqual({ state: HoldState.expired, quantity: 3, expiresAtMs: 1_700_000_000_123, version: 2 });
    const restored = { hash: 'abc_-', reservationId: uuidv7(), claimedAtMs: 1_700_000_000_123, nodeId: null, outcomeUnknown: false };
    expect(parseRecord(formatRecord(restored))).toEqual(restored);
    expect(formatRecord(restored)).toBe(recordPrefix(restored.hash, restored.reservationId) + restored.claimedAtMs);
    const claimed = { ...restored, nodeId: NODE, outcomeUnknown: false };
    expect(parseRecord(formatRecord(claimed))).toEqual(claimed);
    expect(formatRecord(claimed)).toBe(recordPrefix(claimed.hash, claimed.reservationId) + claimed.claimedAtMs + recordSuffix(NODE));
    const marked = { ...claimed, outcomeUnknown: true };
    expect(parseRecord(formatRecord(marked))).toEqual(marked);
    const intent = { location: 'a:b', delta: -3, safetyDelta: 0, kind: IntentKind.debit, decidedMs: 1_700_000_000_123, nodeId: NODE };
    expect(parseIntent(formatIntent(intent))).toEqual(intent);
    const withSafety = { ...intent, safetyDelta: -2 };
    expect(parseIntent(formatIntent(withSafety))).toEqual(withSafety);
    // A change without a safety delta keeps the older five fields (what a node of an older version reads).
    expect(formatIntent(intent).split('|')).toHaveLength(5);
    expect(formatIntent(withSafety).split('|')).toHaveLength(6);
    for (const figure of ['onHand', 'reserved', 'pending', 'safety', 'safetyPending'] as const) {
      expect(parseStockField(stockField(figure, 'a:b'))).toEqual({ figure, location: 'a:b' });
    }
  });

  it('refuse what is not of the layout', () => {
    expect(parseHold('p:1')).toBeNull();
    expect(parseHold('q:1:2')).toBeNull();
    expect(parseHold('p:-1:2')).toBeNull();
    expect(parseHold('p:1:2:x')).toBeNull();
    expect(parseHold('p:1:2:3:4')).toBeNull();
    expect(parseHoldField('no-separator')).toBeNull();
    expect(parseStockField('x:default')).toBeNull();
    expect(parseHeader({})).toBeNull();
    expect(parseIntent('default|3|supply|1')).toBeNull();
    expect(parseIntent('default|3|other|1|n')).toBeNull();
    expect(parseIntent('|3|supply|1|n')).toBeNull();
  });

  it('a record with fewer fields still parses (an older writer; a newer reader)', () => {
    expect(parseRecord('h|id')).toEqual({ hash: 'h', reservationId: 'id', claimedAtMs: 0, nodeId: null, outcomeUnknown: false });
    expect(parseRecord('h|id|5')).toEqual({ hash: 'h', reservationId: 'id', claimedAtMs: 5, nodeId: null, outcomeUnknown: false });
  });
});
