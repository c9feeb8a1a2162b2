import { beforeAll, describe, expect, it } from 'vitest';
import { newItem, newKey } from '../helpers/app.js';
import { expectInvalid, expectProblem, expectReservation, useHttpApp, wipeRedisState, type Answer } from '../helpers/api.js';
import { ANONYMOUS } from '../../src/http/access.js';
import { formatRecord, parseRecord } from '../../src/redis/layout.js';
import { requestHash } from '../../src/service/idempotency.js';

// api.md, "Reservations": Idempotency-Key.
const { t, api } = useHttpApp();

async function stocked(quantity: number): Promise<string> {
  const item = newItem();
  await api.stock(item, quantity);
  return item;
}

function expectReplayOf(replay: Answer, first: Answer): void {
  expect(replay.status).toBe(first.status);
  expect(replay.headers['idempotent-replayed']).toBe('true');
  expect(replay.text).toBe(first.text);
}

describe('the same key with the same body replays the first answer', () => {
  it('201 again, byte-identical body, Idempotent-Replayed: true, and nothing more held', async () => {
    const item = await stocked(10);
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 3 }], reference: 'order-9', metadata: { channel: 'web' } };
    const first = await api.reserve(body, key);
    expectReservation(first, 201);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    const replay = await api.reserve(body, key);
    expectReplayOf(replay, first);
    expectReplayOf(await api.reserve(body, key), first);
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 3, available: 7 });
  });

  it('treats another key order and other whitespace in the raw JSON as the same body', async () => {
    const item = await stocked(10);
    const key = newKey();
    const first = await api.reserveRaw(
      `{"lines":[{"itemId":"${item}","quantity":2,"location":"default"}],"ttlSeconds":600,"metadata":{"a":"1","b":"2"}}`,
      key,
    );
    expectReservation(first, 201);
    const replay = await api.reserveRaw(
      `\n{ "metadata" : { "b": "2", "a": "1" },\n  "ttlSeconds": 600,\n` +
        `  "lines": [ { "location": "default", "quantity": 2, "itemId": "${item}" } ] }\n`,
      key,
    );
    expectReplayOf(replay, first);
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 2, available: 8 });
  });

  it('replays metadata keys in the order first sent (byte-identical body)', async () => {
    const item = await stocked(10);
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 1 }], metadata: { 'zz-longer-key': 'a', b: 'c' } };
    const first = await api.reserve(body, key);
    expectReservation(first, 201);
    expectReplayOf(await api.reserve(body, key), first);
  });

  it('replays the first answer (status pending) after the reservation was confirmed, and sells nothing twice', async () => {
    const item = await stocked(10);
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 4 }] };
    const first = await api.reserve(body, key);
    const created = expectReservation(first, 201);
    expect(expectReservation(await api.confirm(created.id), 200).status).toBe('confirmed');
    const replay = await api.reserve(body, key);
    expectReplayOf(replay, first);
    expect((replay.body as { status: string }).status).toBe('pending');
    expect(expectReservation(await api.get(created.id), 200).status).toBe('confirmed');
    expect(await api.at(item)).toEqual({ onHand: 6, reserved: 0, available: 6 });
  });

  it('replays the first answer after the reservation was released, and holds nothing again', async () => {
    const item = await stocked(10);
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 4 }] };
    const first = await api.reserve(body, key);
    const created = expectReservation(first, 201);
    expectReservation(await api.release(created.id), 200);
    expectReplayOf(await api.reserve(body, key), first);
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 0, available: 10 });
  });

  it('replays even when the stock is gone by now (the first answer stands)', async () => {
    const item = await stocked(4);
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 4 }] };
    const first = await api.reserve(body, key);
    expectReservation(first, 201);
    expectReplayOf(await api.reserve(body, key), first);
    expect(await api.at(item)).toEqual({ onHand: 4, reserved: 4, available: 0 });
  });

  it('replays from PostgreSQL when Redis lost the idempotency record, and holds nothing more', async () => {
    const item = await stocked(10);
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 3 }] };
    const first = await api.reserve(body, key);
    expectReservation(first, 201);
    const { redis, keys } = t.app.runtime;
    expect(await redis.del(keys.idempotency(ANONYMOUS, key))).toBe(1);
    expectReplayOf(await api.reserve(body, key), first);
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 3, available: 7 });
    expectProblem(await api.reserve({ lines: [{ itemId: item, quantity: 2 }] }, key), 'idempotency_key_reused');
  });

  it('replays after Redis lost all its state and was rebuilt from PostgreSQL, and holds nothing more', async () => {
    const item = await stocked(10);
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 3 }] };
    const first = await api.reserve(body, key);
    expectReservation(first, 201);
    const { recovery } = t.app.runtime;
    await wipeRedisState(t.app);
    await recovery.ensure();
    expectReplayOf(await api.reserve(body, key), first);
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 3, available: 7 });
  });

  // The rebuild restores idempotency records from PostgreSQL, so the retry is recognised before any stock check.
  it('replays after Redis lost its state even when the first reservation took the last units', async () => {
    const item = await stocked(3);
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 3 }] };
    const first = await api.reserve(body, key);
    expectReservation(first, 201);
    const { recovery } = t.app.runtime;
    await wipeRedisState(t.app);
    await recovery.ensure();
    expectReplayOf(await api.reserve(body, key), first);
    expect(await api.at(item)).toEqual({ onHand: 3, reserved: 3, available: 0 });
  });

  it('under concurrency, one key makes one reservation: every 201 is the same body, the rest are in use', async () => {
    const item = await stocked(10);
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 2 }] };
    const answers = await Promise.all(Array.from({ length: 10 }, () => api.reserve(body, key)));
    const created = answers.filter((r) => r.status === 201);
    expect(created.length).toBeGreaterThanOrEqual(1);
    expect(new Set(created.map((r) => r.text)).size).toBe(1);
    expect(created.filter((r) => r.headers['idempotent-replayed'] === undefined)).toHaveLength(1);
    for (const r of answers.filter((x) => x.status !== 201)) expectProblem(r, 'idempotency_key_in_use');
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 2, available: 8 });
    expectReplayOf(await api.reserve(body, key), created.find((r) => r.headers['idempotent-replayed'] === undefined)!);
  });

  it('different keys with the same body make different reservations', async () => {
    const item = await stocked(10);
    const body = { lines: [{ itemId: item, quantity: 1 }] };
    const a = await api.hold(body, newKey());
    const b = await api.hold(body, newKey());
    expect(a.id).not.toBe(b.id);
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 2, available: 8 });
  });
});

describe('the same key with a different body', () => {
  it.each([
    ['another quantity', { lines: [{ itemId: 'ITEM', quantity: 2 }] }],
    ['another reference', { lines: [{ itemId: 'ITEM', quantity: 1 }], reference: 'other' }],
    ['extra metadata', { lines: [{ itemId: 'ITEM', quantity: 1 }], metadata: { a: 'b' } }],
    ['another item', { lines: [{ itemId: 'OTHER', quantity: 1 }] }],
  ])('answers 422 idempotency_key_reused (%s); nothing more is held and the first stands', async (_label, template) => {
    const item = await stocked(10);
    const other = await stocked(10);
    const key = newKey();
    const first = await api.reserve({ lines: [{ itemId: item, quantity: 1 }] }, key);
    const created = expectReservation(first, 201);
    const body = JSON.parse(JSON.stringify(template).replaceAll('ITEM', item).replaceAll('OTHER', other)) as unknown;
    expectProblem(await api.reserve(body, key), 'idempotency_key_reused');
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 1, available: 9 });
    expect(await api.at(other)).toEqual({ onHand: 10, reserved: 0, available: 10 });
    expect(expectReservation(await api.get(created.id), 200)).toEqual(created);
  });

  it('answers 422 also after the first was confirmed', async () => {
    const item = await stocked(10);
    const key = newKey();
    const created = await api.hold({ lines: [{ itemId: item, quantity: 1 }] }, key);
    expectReservation(await api.confirm(created.id), 200);
    expectProblem(await api.reserve({ lines: [{ itemId: item, quantity: 5 }] }, key), 'idempotency_key_reused');
    expect(await api.at(item)).toEqual({ onHand: 9, reserved: 0, available: 9 });
  });
});

describe('a failed request binds nothing: the key may be retried', () => {
  it('after 409 insufficient_stock, the same key and body succeed once stock is added', async () => {
    const item = await stocked(2);
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 5 }] };
    expectProblem(await api.reserve(body, key), 'insufficient_stock');
    await api.stock(item, 10);
    const created = await api.reserve(body, key);
    expectReservation(created, 201);
    expect(created.headers['idempotent-replayed']).toBeUndefined();
    expectReplayOf(await api.reserve(body, key), created);
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 5, available: 5 });
  });

  it('after 404 item_not_found, the same key and body succeed once the item is stocked', async () => {
    const item = newItem();
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 1 }] };
    expectProblem(await api.reserve(body, key), 'item_not_found');
    await api.stock(item, 1);
    const created = await api.reserve(body, key);
    expectReservation(created, 201);
    expect(created.headers['idempotent-replayed']).toBeUndefined();
  });

  it('after 400 validation_failed, the key takes a valid body', async () => {
    const item = await stocked(3);
    const key = newKey();
    expectInvalid(await api.reserve({ lines: [{ itemId: item, quantity: 0 }] }, key));
    expectInvalid(await api.reserve({ lines: [{ itemId: item, quantity: 1 }, { itemId: item, quantity: 1 }] }, key));
    expectReservation(await api.reserve({ lines: [{ itemId: item, quantity: 1 }] }, key), 201);
  });

  it('after a 409, the key takes a different body too (no 422)', async () => {
    const item = await stocked(2);
    const key = newKey();
    expectProblem(await api.reserve({ lines: [{ itemId: item, quantity: 3 }] }, key), 'insufficient_stock');
    expectReservation(await api.reserve({ lines: [{ itemId: item, quantity: 2 }] }, key), 201);
  });
});

describe('the same key while the first request is still in flight', () => {
  // No inject can pause a request between its Redis decision and its PostgreSQL commit, so these tests write the
  // record that request would have left (src/redis/layout.ts), naming the node that made it: LIVE has a
  // lease (another node of the cluster, still running), DEAD has none (its process died).
  const LIVE = 'aaaaaaaaaaaa';
  const DEAD = 'dddddddddddd';
  const UNKNOWN_ID = '00000000-0000-7000-8000-000000000000';

  beforeAll(async () => {
    const { redis, keys } = t.app.runtime;
    await redis.set(keys.node(LIVE), '1', 'PX', 600_000);
  });

  async function inFlight(
    key: string,
    body: unknown,
    claim: { nodeId?: string | null; claimedAtMs?: number; outcomeUnknown?: boolean } = {},
  ): Promise<string> {
    const { redis, keys } = t.app.runtime;
    const redisKey = keys.idempotency(ANONYMOUS, key);
    const record = formatRecord({
      hash: requestHash(body),
      reservationId: UNKNOWN_ID,
      claimedAtMs: claim.claimedAtMs ?? Date.now(),
      nodeId: claim.nodeId === undefined ? LIVE : claim.nodeId,
      outcomeUnknown: claim.outcomeUnknown ?? false,
    });
    await redis.set(redisKey, record, 'PX', 600_000);
    return redisKey;
  }

  const freed = async (reason: string) =>
    (await t.app.runtime.metrics.claimsFreed.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;

  it('the same body answers 409 idempotency_key_in_use and holds nothing', async () => {
    const item = await stocked(5);
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 2 }] };
    await inFlight(key, body);
    expectProblem(await api.reserve(body, key), 'idempotency_key_in_use');
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 0, available: 5 });
  });

  it('a different body answers 422 idempotency_key_reused', async () => {
    const item = await stocked(5);
    const key = newKey();
    await inFlight(key, { lines: [{ itemId: item, quantity: 2 }] });
    expectProblem(await api.reserve({ lines: [{ itemId: item, quantity: 3 }] }, key), 'idempotency_key_reused');
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 0, available: 5 });
  });

  it('a claim of this very node is in flight too', async () => {
    const item = await stocked(5);
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 2 }] };
    await inFlight(key, body, { nodeId: t.app.runtime.lease.nodeId });
    expectProblem(await api.reserve(body, key), 'idempotency_key_in_use');
  });

  it('once the in-flight record is gone, the key can be used', async () => {
    const item = await stocked(5);
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 2 }] };
    const redisKey = await inFlight(key, body);
    expectProblem(await api.reserve(body, key), 'idempotency_key_in_use');
    await t.app.runtime.redis.del(redisKey);
    expectReservation(await api.reserve(body, key), 201);
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 2, available: 3 });
  });

  it('a claim whose node died (no lease) is freed at once: the same body is created, not told "in use"', async () => {
    const item = await stocked(5);
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 2 }] };
    await inFlight(key, body, { nodeId: DEAD });
    const before = await freed('owner_lost');
    const created = await api.reserve(body, key);
    expectReservation(created, 201);
    expect(created.headers['idempotent-replayed']).toBeUndefined();
    expect((created.body as { id: string }).id).not.toBe(UNKNOWN_ID);
    expectReplayOf(await api.reserve(body, key), created);
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 2, available: 3 });
    expect(await freed('owner_lost')).toBe(before + 1);
  });

  it('a claim whose node died binds nothing: another body may use the key', async () => {
    const item = await stocked(5);
    const key = newKey();
    await inFlight(key, { lines: [{ itemId: item, quantity: 1 }] }, { nodeId: DEAD });
    expectReservation(await api.reserve({ lines: [{ itemId: item, quantity: 3 }] }, key), 201);
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 3, available: 2 });
  });

  it('a claim whose node answered 503 without learning the outcome: the same body is told to retry (503), never "in use"', async () => {
    const item = await stocked(5);
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 2 }] };
    await inFlight(key, body, { outcomeUnknown: true });
    const retry = await api.reserve(body, key);
    expectProblem(retry, 'unavailable');
    expect((retry.body as { detail: string }).detail).toMatch(/waiting to learn whether PostgreSQL recorded it/);
    expectProblem(await api.reserve({ lines: [{ itemId: item, quantity: 1 }] }, key), 'idempotency_key_reused');
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 0, available: 5 });
  });

  it('a record without a node id (an older version\'s) is in flight while young', async () => {
    const item = await stocked(5);
    const key = newKey();
    const body = { lines: [{ itemId: item, quantity: 1 }] };
    await inFlight(key, body, { nodeId: null });
    expectProblem(await api.reserve(body, key), 'idempotency_key_in_use');
  });

  it('a record without a node id a minute old that PostgreSQL never committed belongs to a request that died: the key is free', async () => {
    const item = await stocked(5);
    const key = newKey();
    await inFlight(key, { lines: [{ itemId: item, quantity: 1 }] }, { nodeId: null, claimedAtMs: Date.now() - 61_000 });
    // Failed requests bind nothing, so even another body may now use the key.
    const body = { lines: [{ itemId: item, quantity: 2 }] };
    const created = await api.reserve(body, key);
    expectReservation(created, 201);
    expectReplayOf(await api.reserve(body, key), created);
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 2, available: 3 });
  });

  it('a claim names its node, and the reserve script puts the node\'s lease back if Redis lost it', async () => {
    const item = await stocked(5);
    const key = newKey();
    const { redis, keys, lease } = t.app.runtime;
    await lease.stop(); // deletes the lease and stops renewing it, so only the script can set it again
    try {
      expect(await redis.exists(lease.key)).toBe(0);
      const created = expectReservation(await api.reserve({ lines: [{ itemId: item, quantity: 1 }] }, key), 201);
      const record = parseRecord((await redis.get(keys.idempotency(ANONYMOUS, key)))!);
      expect(record).toMatchObject({ reservationId: created.id, nodeId: lease.nodeId, outcomeUnknown: false });
      const ttl = await redis.pttl(lease.key);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(lease.ttlMs);
    } finally {
      lease.start();
    }
  });
});
