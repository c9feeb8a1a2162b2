import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { backoffMs } from '../../src/events/relay.js';
import { Pruner } from '../../src/events/pruner.js';
import { Lease } from '../../src/redis/lease.js';
import { createMetrics } from '../../src/metrics.js';
import { appendEvents } from '../helpers/events.js';
import { mulberry32 } from '../helpers/random.js';
import { testRedisUrl } from '../helpers/servers.js';
import { waitFor } from '../helpers/wait.js';
import {
  cursorOf,
  startAtEnd,
  interleaved,
  orderViolations,
  RecordingTransport,
  silentLog,
  useRelays,
} from './support.js';

// The relay against a real PostgreSQL (the outbox's tables, sealed events inserted as the sealer leaves them) and
// Redis (the leases), with a transport that records what it accepted and refuses what a test says.

const env = useRelays();

const SEED = Number(process.env.SEED ?? Date.now() % 1_000_000);

describe('backoff', () => {
  it('is full jitter: uniform below min(cap, base·2^attempt), never beyond the cap however many failures', () => {
    const backoff = { baseMs: 200, capMs: 30_000 };
    expect(backoffMs(0, backoff, () => 0.999_999)).toBeLessThan(200);
    expect(backoffMs(3, backoff, () => 0.999_999)).toBeLessThan(1_600);
    expect(backoffMs(3, backoff, () => 0.999_999)).toBeGreaterThan(1_599);
    for (const attempt of [8, 9, 50, 1_000, 1e9]) {
      const worst = backoffMs(attempt, backoff, () => 0.999_999);
      expect(worst).toBeLessThan(30_000);
      expect(worst).toBeGreaterThan(29_999);
    }
    expect(backoffMs(1_000, backoff, () => 0)).toBe(0);
  });

  it('spreads retries that failed together (jitter), each bounded', () => {
    const backoff = { baseMs: 200, capMs: 30_000 };
    for (const attempt of [0, 4, 20]) {
      const bound = Math.min(30_000, 200 * 2 ** attempt);
      const delays = Array.from({ length: 2_000 }, () => backoffMs(attempt, backoff));
      expect(Math.min(...delays)).toBeGreaterThanOrEqual(0);
      expect(Math.max(...delays)).toBeLessThan(bound);
      // Spread over the whole range, not one value: the lowest and highest tenths are both hit, the mean near half.
      expect(delays.filter((d) => d < bound / 10).length).toBeGreaterThan(100);
      expect(delays.filter((d) => d > (bound * 9) / 10).length).toBeGreaterThan(100);
      const mean = delays.reduce((a, b) => a + b, 0) / delays.length;
      expect(mean / bound).toBeGreaterThan(0.4);
      expect(mean / bound).toBeLessThan(0.6);
    }
  });
});

describe('the relay', () => {
  it('delivers every sealed event once, in position order, and moves its cursor to the last; unsealed ones wait', async () => {
    const transport = new RecordingTransport('all-once');
    await startAtEnd(env.database.db, 'all-once');
    const appended = await appendEvents(env.database.db, interleaved(120, 7, mulberry32(SEED).next));
    await appendEvents(env.database.db, [{ subject: 'unsealed' }], { sealed: false });
    const relay = env.relays.relay(transport);
    relay.start();
    await waitFor('every event', async () => (transport.accepted.length >= appended.length ? true : undefined));
    await waitFor('the cursor', async () => ((await cursorOf(env.database.db, 'all-once')) === appended.at(-1)!.position ? true : undefined));
    await relay.stop();
    expect(transport.accepted.map((e) => e.id).sort()).toEqual(appended.map((e) => e.id).sort());
    expect(orderViolations(transport.accepted)).toEqual([]);
    expect(transport.accepted.some((e) => e.subject === 'unsealed')).toBe(false);
    const first = transport.accepted[0]!;
    expect(first).toMatchObject({ specversion: '1.0', source: '/test', datacontenttype: 'application/json' });
    expect(typeof first.sequence).toBe('string');
  });

  it(`keeps per-subject order while sends fail at random, and delivers everything in the end (SEED=${SEED})`, async () => {
    const rng = mulberry32(SEED);
    const transport = new RecordingTransport('flaky', 8);
    let refusals = 0;
    transport.refuse = () => refusals < 300 && rng.chance(0.3) && ++refusals > 0;
    const metrics = createMetrics();
    await startAtEnd(env.database.db, 'flaky');
    const appended = await appendEvents(env.database.db, interleaved(400, 12, rng.next, 'flaky'));
    const relay = env.relays.relay(transport, { metrics, batchSize: 40 });
    relay.start();
    await waitFor('every event', async () => (transport.ids().size >= appended.length ? true : undefined), { timeoutMs: 20_000 });
    await relay.stop();
    expect(refusals).toBeGreaterThan(50);
    expect(orderViolations(transport.accepted)).toEqual([]);
    expect([...transport.ids()].sort()).toEqual(appended.map((e) => e.id).sort());
    expect(await cursorOf(env.database.db, 'flaky')).toBe(appended.at(-1)!.position);
    const value = async (name: string) => (await metrics.registry.getSingleMetric(name)!.get()).values.find((v) => v.labels.transport === 'flaky')?.value;
    expect(await value('irs_events_failed_total')).toBe(refusals);
    expect(await value('irs_event_retries_total')).toBeGreaterThan(0);
    expect(await value('irs_events_delivered_total')).toBe(transport.accepted.length);
  });

  it('waits the backoff it drew between consecutive failed attempts, doubling up to the cap', async () => {
    const transport = new RecordingTransport('backoff');
    const attempts: number[] = [];
    transport.refuse = () => attempts.push(performance.now()) > 0;
    await startAtEnd(env.database.db, 'backoff');
    await appendEvents(env.database.db, [{ subject: 'backoff' }]);
    const relay = env.relays.relay(transport, { backoff: { baseMs: 40, capMs: 160 }, random: () => 0.99 });
    relay.start();
    await waitFor('five attempts', async () => (attempts.length >= 5 ? true : undefined));
    await relay.stop();
    const gaps = attempts.slice(1, 5).map((t, i) => t - attempts[i]!);
    // Lower bounds only (a slow machine only adds): 0.99 of 40, 80, then the cap of 160, twice.
    [40, 80, 160, 160].forEach((bound, i) => expect(gaps[i]).toBeGreaterThanOrEqual(0.99 * bound - 2));
  });

  it('moves the cursor only past events delivered: a relay stopped while failing is resumed from there by another, losing nothing', async () => {
    const first = new RecordingTransport('resume');
    first.refuse = () => first.accepted.length >= 7; // accepts seven, then every send fails
    await startAtEnd(env.database.db, 'resume');
    const appended = await appendEvents(env.database.db, interleaved(60, 1, Math.random, 'resume'));
    const a = env.relays.relay(first, { batchSize: 5, backoff: { baseMs: 1, capMs: 5 } });
    a.start();
    await waitFor('failures after seven', async () => ((await cursorOf(env.database.db, 'resume')) === appended[6]!.position && first.accepted.length === 7 ? true : undefined));
    await waitFor('retries', async () => (first.refused >= 3 ? true : undefined));
    await a.stop();
    expect(await cursorOf(env.database.db, 'resume')).toBe(appended[6]!.position);

    const second = new RecordingTransport('resume');
    const b = env.relays.relay(second);
    b.start();
    await waitFor('the rest', async () => (second.accepted.length >= appended.length - 7 ? true : undefined));
    await b.stop();
    // Resumed right after the last event recorded as delivered: nothing lost, nothing sent twice.
    expect(second.accepted.map((e) => e.id)).toEqual(appended.slice(7).map((e) => e.id));
    expect(await cursorOf(env.database.db, 'resume')).toBe(appended.at(-1)!.position);
  });

  it('is active on one node at a time per transport; a standby takes over when the active one stops or its lease lapses', async () => {
    const transports = [new RecordingTransport('one-active'), new RecordingTransport('one-active')];
    const [a, b] = transports.map((t) => env.relays.relay(t, { leaseTtlMs: 600 }));
    a!.start();
    b!.start();
    await startAtEnd(env.database.db, 'one-active');
    const appended = await appendEvents(env.database.db, interleaved(200, 20, Math.random, 'one'));
    const all = () => new Set([...transports[0]!.ids(), ...transports[1]!.ids()]);
    await waitFor('every event', async () => (all().size >= appended.length ? true : undefined));
    // One relay did it all, each event once (no failure, so no redelivery); the other never even connected.
    const [active, standby] = a!.active ? [a!, b!] : [b!, a!];
    expect(active.active && !standby.active).toBe(true);
    const accepted = (r: typeof a) => transports[r === a ? 0 : 1]!;
    expect(accepted(active).accepted.length).toBe(appended.length);
    expect(accepted(standby).accepted.length).toBe(0);
    expect(accepted(standby).opens).toBe(0);

    // A graceful stop gives the lease up: the standby takes over at once and goes on from the cursor.
    await active.stop();
    const more = await appendEvents(env.database.db, interleaved(30, 5, Math.random, 'more'));
    await waitFor('the standby to deliver', async () => (accepted(standby).accepted.length >= more.length ? true : undefined));
    expect(accepted(standby).accepted.map((e) => e.id).sort()).toEqual(more.map((e) => e.id).sort());
    await standby.stop();
  });

  it('a relay that can no longer renew its lease stops delivering, and another takes over once it lapses', async () => {
    const transports = [new RecordingTransport('lapse'), new RecordingTransport('lapse')];
    const own = new Redis(testRedisUrl(), { maxRetriesPerRequest: 0, enableOfflineQueue: false });
    own.on('error', () => {});
    const a = env.relays.relay(transports[0]!, { leaseTtlMs: 500, redis: own });
    a.start();
    await startAtEnd(env.database.db, 'lapse');
    await appendEvents(env.database.db, interleaved(20, 3, Math.random, 'lapse-a'));
    await waitFor('a to deliver', async () => (transports[0]!.accepted.length >= 20 ? true : undefined));
    const b = env.relays.relay(transports[1]!, { leaseTtlMs: 500 });
    b.start();
    own.disconnect(); // a's renewals fail from now on, as if its node hung or lost Redis
    await waitFor('a to stand by', async () => (a.active ? undefined : true));
    const later = await appendEvents(env.database.db, interleaved(20, 3, Math.random, 'lapse-b'));
    await waitFor('b to deliver', async () => (transports[1]!.ids().size >= later.length ? true : undefined));
    expect([...transports[1]!.ids()].sort()).toEqual(later.map((e) => e.id).sort());
    expect(transports[0]!.accepted.filter((e) => later.some((l) => l.id === e.id))).toEqual([]);
    await Promise.all([a.stop(), b.stop()]);
  });

  it('reports its lag: the age of the oldest undelivered event while failing, 0 once caught up', async () => {
    const metrics = createMetrics();
    const transport = new RecordingTransport('lag');
    let open = false;
    transport.refuse = () => !open;
    await startAtEnd(env.database.db, 'lag');
    await appendEvents(env.database.db, interleaved(5, 2, Math.random, 'lag'), { hoursAgo: 1 });
    const relay = env.relays.relay(transport, { metrics });
    relay.start();
    const lag = async () => (await metrics.registry.getSingleMetric('irs_events_relay_lag_seconds')!.get()).values.find((v) => v.labels.transport === 'lag')?.value;
    await waitFor('a lag of an hour', async () => ((await lag()) ?? 0) >= 3_600 ? true : undefined);
    open = true;
    await waitFor('no lag', async () => ((await lag()) === 0 ? true : undefined));
    await relay.stop();
    expect(await lag()).toBeUndefined(); // a relay standing by reports nothing: the active node does
  });
});

describe('the relay lease', () => {
  it('is taken when free, renewed and given up by its owner only, and lapses when no longer renewed', async () => {
    const { redis } = env.relays;
    const key = env.relays.keys.relayLease('lease-test');
    const a = new Lease(redis, key, 'aaaaaaaaaaaa', 300);
    const b = new Lease(redis, key, 'bbbbbbbbbbbb', 300);
    expect(await a.renew()).toBe(true);
    expect(a.held).toBe(true);
    expect(await b.renew()).toBe(false);
    expect(b.held).toBe(false);
    await b.release(); // not b's to give up
    expect(await redis.get(key)).toBe(a.owner);
    expect(await a.renew()).toBe(true);
    expect(await redis.pttl(key)).toBeGreaterThan(0);
    await a.release();
    expect(a.held).toBe(false);
    expect(await redis.get(key)).toBeNull();
    expect(await b.renew()).toBe(true);
    await waitFor('the lease to lapse', async () => ((await redis.exists(key)) === 0 ? true : undefined));
    expect(b.held).toBe(false); // b's own clock agrees: it counts from before it asked
    expect(await a.renew()).toBe(true);
    await a.release();
  });
});

describe('pruning', () => {
  it('deletes, in batches, events past the retention that every configured transport delivered; keeps the rest', async () => {
    const { db } = env.database;
    await db.query('DELETE FROM events; DELETE FROM event_feed; DELETE FROM unsealed_events');
    const old = await appendEvents(db, interleaved(30, 3, Math.random, 'old'), { hoursAgo: 200 });
    const unsealed = await appendEvents(db, [{ subject: 'old-unsealed' }], { hoursAgo: 200, sealed: false });
    const young = await appendEvents(db, interleaved(5, 2, Math.random, 'young'));
    await db.query(`INSERT INTO event_cursors (transport, position) VALUES ('p-ahead', $1), ('p-behind', $2)`, [
      young.at(-1)!.position,
      old[19]!.position,
    ]);
    const pruner = (transports: string[]) =>
      new Pruner(
        { db, redis: env.relays.redis, keys: env.relays.keys, metrics: createMetrics(), log: silentLog },
        { retentionHours: 168, transports, intervalMs: 1, batchSize: 7, maxBatchesPerPass: 100 },
      );
    const lockLapses = () => new Promise((r) => setTimeout(r, 5)); // the pass lock (intervalMs: 1 ms)
    const remaining = async () => (await db.query<{ id: string }>('SELECT id FROM events')).rows.map((r) => r.id).sort();
    // An event's position goes with it, and only with it (migrations/011): the feed names no event that is gone.
    const positionsLeft = async () =>
      (await db.query<{ id: string }>('SELECT e.id FROM event_feed f LEFT JOIN events e USING (seq) ORDER BY f.position')).rows.map((r) => r.id);

    // A transport with no cursor row yet has delivered nothing: nothing goes.
    expect(await pruner(['p-ahead', 'p-new']).runOnce()).toBe(0);
    // Only what the slower transport delivered goes (in batches of 7: 20 takes three).
    await lockLapses();
    expect(await pruner(['p-ahead', 'p-behind']).runOnce()).toBe(20);
    expect(await remaining()).toEqual([...old.slice(20), ...unsealed, ...young].map((e) => e.id).sort());
    expect(await positionsLeft()).toEqual([...old.slice(20), ...young].map((e) => e.id));
    // With no transport configured, every sealed event past the retention goes; unsealed and young ones stay.
    await lockLapses();
    expect(await pruner([]).runOnce()).toBe(10);
    expect(await remaining()).toEqual([...unsealed, ...young].map((e) => e.id).sort());
    expect(await positionsLeft()).toEqual(young.map((e) => e.id));
  });
});

