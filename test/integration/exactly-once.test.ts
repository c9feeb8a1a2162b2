import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReservationRequest } from '../../src/domain/schemas.js';
import {
  Api,
  availabilityOf,
  outcome,
  range,
  reservationOf,
  tally,
  startHttpApp,
  wipeRedisState,
  type Answer,
} from '../helpers/api.js';
import { newItem, newKey, type TestApp } from '../helpers/app.js';
import { checkInvariants } from '../helpers/invariants.js';
import { waitFor } from '../helpers/wait.js';

/** I2: one Idempotency-Key creates at most one reservation, under concurrency, retries and a Redis loss. */

describe('exactly-once creation (I2)', () => {
  let t: TestApp;
  let api: Api;
  const items: string[] = [];

  beforeAll(async () => {
    t = await startHttpApp();
    api = await Api.listen(t.app);
  });
  afterAll(async () => {
    await t?.close();
  });

  const stock = async (quantity: number): Promise<string> => {
    const sku = newItem('once');
    items.push(sku);
    await api.stock(sku, quantity);
    return sku;
  };

  const countRows = async (sku: string) => {
    const { rows } = await t.app.runtime.db.query<{ reservations: number; lines: number }>(
      `SELECT count(DISTINCT reservation_id)::int AS reservations, count(*)::int AS lines
       FROM reservation_lines WHERE item_id = $1`,
      [sku],
    );
    return rows[0]!;
  };

  const keyRows = async (key: string) => {
    const { rows } = await t.app.runtime.db.query<{ reservation_id: string }>(
      'SELECT reservation_id FROM idempotency_keys WHERE key = $1',
      [key],
    );
    return rows.map((r) => r.reservation_id);
  };

  /** Retries while the service answers 503 (Redis state being rebuilt), as a client is told to. */
  const reserveThroughRecovery = (key: string, body: ReservationRequest): Promise<Answer> =>
    waitFor(
      'an answer other than 503',
      async () => {
        const a = await api.reserve(body, key);
        return a.status === 503 ? undefined : a;
      },
      { timeoutMs: 20_000, intervalMs: 50 },
    );

  it('50 concurrent requests with one key and body: one reservation, one hold; the rest replay or are told it is in use', async () => {
    const sku = await stock(100);
    const key = newKey();
    const body: ReservationRequest = {
      lines: [{ itemId: sku, quantity: 3 }],
      reference: 'order-1',
      metadata: { channel: 'web', cart: 'c-9' },
    };

    const answers = await Promise.all(range(50).map(() => api.reserve(body, key)));

    const outcomes = tally(answers);
    expect(Object.keys(outcomes).every((o) => o === '201' || o === '409 idempotency_key_in_use'), JSON.stringify(outcomes)).toBe(true);
    const created = answers.filter((a) => a.status === 201);
    const originals = created.filter((a) => a.headers['idempotent-replayed'] === undefined);
    expect(originals, 'exactly one answer is the original (not flagged as a replay)').toHaveLength(1);
    const original = reservationOf(originals[0]!);
    for (const a of created) {
      expect(a.text, 'every 201 carries the first body, byte for byte').toBe(originals[0]!.text);
      if (a !== originals[0]) expect(a.headers['idempotent-replayed']).toBe('true');
    }
    expect(original).toMatchObject({ status: 'pending', reference: 'order-1', metadata: { channel: 'web', cart: 'c-9' } });

    await t.app.runtime.writer.drain();
    expect(await countRows(sku)).toEqual({ reservations: 1, lines: 1 });
    expect(await keyRows(key)).toEqual([original.id]);
    expect(availabilityOf(await api.availability(sku))).toMatchObject({ onHand: 100, reserved: 3, available: 97 });

    // Once settled, a retry replays the first answer: same status, same body, flagged; the same JSON value in
    // another key order and spacing is the same request.
    const retry = await api.reserve(body, key);
    expect(outcome(retry)).toBe('201');
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.text).toBe(originals[0]!.text);
    const reordered = `{ "metadata": {"cart":"c-9", "channel":"web"},\n  "reference":"order-1", "lines":[{"quantity":3,"itemId":"${sku}"}] }`;
    const again = await api.reserveRaw(reordered, key);
    expect(outcome(again)).toBe('201');
    expect(again.body).toEqual(original);

    expect(await countRows(sku)).toEqual({ reservations: 1, lines: 1 });
    expect(availabilityOf(await api.availability(sku))).toMatchObject({ reserved: 3 });
    await checkInvariants(t.app, [sku], { holdsWithinSupply: true });
  });

  it('the same key with another body is refused (422), also while the first request is in flight', async () => {
    const sku = await stock(100);
    const key = newKey();
    const bodyA: ReservationRequest = { lines: [{ itemId: sku, quantity: 1 }] };
    const bodyB: ReservationRequest = { lines: [{ itemId: sku, quantity: 2 }] };
    const sent = range(40).map((i) => (i % 2 === 0 ? bodyA : bodyB));

    const answers = await Promise.all(sent.map((body) => api.reserve(body, key)));

    const originals = answers.filter((a) => a.status === 201 && a.headers['idempotent-replayed'] === undefined);
    expect(originals).toHaveLength(1);
    const winner = reservationOf(originals[0]!);
    const winnerBody = winner.lines[0]!.quantity === 1 ? bodyA : bodyB;
    answers.forEach((a, i) => {
      const allowed = sent[i] === winnerBody ? ['201', '409 idempotency_key_in_use'] : ['422 idempotency_key_reused'];
      expect(allowed, `request ${i}: ${a.text}`).toContain(outcome(a));
      if (a.status === 201) expect(a.body).toEqual(winner);
    });

    await t.app.runtime.writer.drain();
    expect(await countRows(sku)).toEqual({ reservations: 1, lines: 1 });
    expect(availabilityOf(await api.availability(sku))).toMatchObject({ reserved: winner.lines[0]!.quantity });
    await checkInvariants(t.app, [sku], { holdsWithinSupply: true });
  });

  it('after Redis loses its state, the same key and body replay the original and hold nothing more', async () => {
    const sku = await stock(10);
    const key = newKey();
    const body: ReservationRequest = { lines: [{ itemId: sku, quantity: 4 }], reference: 'order-2' };
    const first = await api.reserve(body, key);
    expect(outcome(first)).toBe('201');
    const original = reservationOf(first);

    expect(await wipeRedisState(t.app)).toBeGreaterThan(0);
    expect(await t.app.runtime.redis.exists(t.app.runtime.keys.marker)).toBe(0);

    const replay = await reserveThroughRecovery(key, body);
    expect(outcome(replay), replay.text).toBe('201');
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.text).toBe(first.text);

    // Concurrent retries after the rebuild: each replays, none holds more.
    const retries = await Promise.all(range(20).map(() => api.reserve(body, key)));
    for (const a of retries) {
      expect(['201', '409 idempotency_key_in_use'], a.text).toContain(outcome(a));
      if (a.status === 201) expect(a.body).toEqual(original);
    }
    await t.app.runtime.writer.drain();
    expect(availabilityOf(await api.availability(sku))).toMatchObject({ onHand: 10, reserved: 4, available: 6 });
    expect(await countRows(sku)).toEqual({ reservations: 1, lines: 1 });
    expect(await keyRows(key)).toEqual([original.id]);
    await checkInvariants(t.app, [sku], { holdsWithinSupply: true });
  });

  // Regression (found by this suite, fixed in 0c236d9): the retry used to be decided in Redis before PostgreSQL's
  // idempotency record was looked at, so when the first reservation had taken the last units (or they were sold
  // since) a retry after a Redis loss answered 409 insufficient_stock instead of replaying the first 201.
  it('after Redis loses its state, a replay answers the first 201 even when no stock is left', async () => {
    const sku = await stock(3);
    const heldKey = newKey();
    const heldBody: ReservationRequest = { lines: [{ itemId: sku, quantity: 2 }] };
    const held = await api.reserve(heldBody, heldKey);
    expect(outcome(held)).toBe('201');
    const soldKey = newKey();
    const soldBody: ReservationRequest = { lines: [{ itemId: sku, quantity: 1 }], reference: 'sold' };
    const sold = await api.reserve(soldBody, soldKey);
    expect(outcome(sold)).toBe('201');
    expect(outcome(await api.confirm(reservationOf(sold).id))).toBe('200');
    expect(availabilityOf(await api.availability(sku))).toMatchObject({ onHand: 2, reserved: 2, available: 0 });

    await wipeRedisState(t.app);
    const replayHeld = await reserveThroughRecovery(heldKey, heldBody);
    const replaySold = await api.reserve(soldBody, soldKey);

    for (const [replay, first] of [[replayHeld, held], [replaySold, sold]] as const) {
      expect(outcome(replay), replay.text).toBe('201');
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.text, 'the same body as first sent, byte for byte').toBe(first.text);
    }
    // Another body under a known key is still refused, whatever the stock.
    expect(outcome(await api.reserve({ lines: [{ itemId: sku, quantity: 1 }] }, heldKey))).toBe('422 idempotency_key_reused');
    expect(availabilityOf(await api.availability(sku))).toMatchObject({ onHand: 2, reserved: 2, available: 0 });
    expect(await countRows(sku)).toEqual({ reservations: 2, lines: 2 });
    await checkInvariants(t.app, [sku], { holdsWithinSupply: true });
  });
});
