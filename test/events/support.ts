import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll } from 'vitest';
import type { CloudEvent } from '../../src/events/envelope.js';
import { Lease } from '../../src/redis/lease.js';
import { Relay, type RelayOptions } from '../../src/events/relay.js';
import { deliverBySubject, type Delivery, type Transport } from '../../src/events/transports/transport.js';
import { createMetrics, type Metrics } from '../../src/metrics.js';
import { Keys } from '../../src/redis/keys.js';
import { migrate } from '../../src/store/database.js';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres.js';
import { testRedisUrl } from '../helpers/servers.js';

/**
 * What the events tests share: a migrated database of their own, a transport that records what it accepted, and
 * the check of per-subject order. Events are appended straight into the outbox by test/helpers/events.ts.
 */

export const silentLog = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

export interface EventsDatabase extends TestDatabase {
  db: pg.Pool;
  close(): Promise<void>;
}

export async function eventsDatabase(): Promise<EventsDatabase> {
  const database = await createTestDatabase();
  await migrate(database.url, silentLog);
  const db = new pg.Pool({ connectionString: database.url, max: 6 });
  db.on('error', () => {});
  return {
    ...database,
    db,
    async close() {
      await db.end();
      await database.drop();
    },
  };
}

/** `count` events over `subjects` subjects, interleaved at random (seeded by `rng`). */
export function interleaved(count: number, subjects: number, next: () => number, label = 'sub'): { subject: string; type: string }[] {
  const names = Array.from({ length: subjects }, (_, i) => `${label}-${i}-${randomBytes(3).toString('hex')}`);
  const types = ['inventory.reservation.created', 'inventory.reservation.confirmed', 'inventory.stock.changed'];
  return Array.from({ length: count }, (_, i) => ({ subject: names[Math.floor(next() * subjects)]!, type: types[i % types.length]! }));
}

/**
 * Events received (duplicates included) where one arrived before an earlier one of its subject had ever arrived:
 * per-subject order broken. A duplicate (a sequence seen before) is fine: at least once.
 */
export function orderViolations(received: readonly { subject: string; sequence: string | number }[]): string[] {
  const highest = new Map<string, number>();
  const violations: string[] = [];
  for (const e of received) {
    const seq = Number(e.sequence);
    const top = highest.get(e.subject) ?? 0;
    if (seq > top + 1) violations.push(`${e.subject}: ${seq} arrived before ${top + 1}`);
    highest.set(e.subject, Math.max(top, seq));
  }
  return violations;
}

/** A transport that records the events it accepted, refusing those `refuse` says (the failures a test injects). */
export class RecordingTransport implements Transport {
  readonly target = 'the test';
  readonly accepted: CloudEvent[] = [];
  opens = 0;
  /** Sends refused so far. */
  refused = 0;
  refuse: (event: CloudEvent) => boolean = () => false;

  constructor(
    readonly name: string,
    private readonly concurrency = 4,
  ) {}

  async open(): Promise<void> {
    this.opens++;
  }

  deliver(events: readonly CloudEvent[], signal: AbortSignal): Promise<Delivery> {
    return deliverBySubject(
      events,
      async (event) => {
        await new Promise((resolve) => setImmediate(resolve)); // sends of several subjects interleave
        if (this.refuse(event)) {
          this.refused++;
          throw new Error(`refused ${event.id}`);
        }
        this.accepted.push(event);
      },
      this.concurrency,
      signal,
    );
  }

  async close(): Promise<void> {}

  /** The ids accepted, once each. */
  ids(): Set<string> {
    return new Set(this.accepted.map((e) => e.id));
  }
}

/** Fast timings for relays in tests: small backoff, a lease of `leaseTtlMs`. */
export const FAST: Omit<RelayOptions, 'source' | 'leaseRenewMs'> = { batchSize: 50, pollMs: 20, backoff: { baseMs: 5, capMs: 50 } };

export interface TestRelays {
  keys: Keys;
  metrics: Metrics;
  redis: Redis;
  /** A relay of `transport` on this database and key prefix (its own Redis client unless one is given). */
  relay(transport: Transport, options?: Partial<RelayOptions> & { leaseTtlMs?: number; redis?: Redis; metrics?: Metrics }): Relay;
  close(): Promise<void>;
}

/** Relays on `db` sharing one Redis key prefix (so their leases compete); `close` stops them and clears the keys. */
export function testRelays(db: pg.Pool): TestRelays {
  const keys = new Keys(`t${randomBytes(4).toString('hex')}:`);
  const redis = new Redis(testRedisUrl());
  const metrics = createMetrics();
  const relays: Relay[] = [];
  const clients: Redis[] = [redis];
  return {
    keys,
    metrics,
    redis,
    relay(transport, { leaseTtlMs = 600, redis: client, metrics: m = metrics, ...options } = {}) {
      let r = client;
      if (!r) {
        r = new Redis(testRedisUrl(), { maxRetriesPerRequest: 0, enableOfflineQueue: false });
        r.on('error', () => {});
        clients.push(r);
      }
      const lease = new Lease(r, keys.relayLease(transport.name), randomUUID().slice(0, 12), leaseTtlMs);
      const relay = new Relay({ db, metrics: m, log: silentLog }, transport, lease, {
        source: '/test',
        ...FAST,
        leaseRenewMs: Math.max(10, Math.floor(leaseTtlMs / 3)),
        ...options,
      });
      relays.push(relay);
      return relay;
    },
    async close() {
      await Promise.all(relays.map((r) => r.stop().catch(() => undefined)));
      const stale = await redis.keys(`${keys.prefix}*`);
      if (stale.length > 0) await redis.del(...stale);
      for (const c of clients) c.disconnect();
    },
  };
}

/** Sets the cursor of `transport` after every event there is: it will deliver only those appended from now (tests share a database). */
export async function startAtEnd(db: pg.Pool, transport: string): Promise<void> {
  await db.query(
    `INSERT INTO event_cursors (transport, position) SELECT $1, coalesce(max(position), 0) FROM event_feed
     ON CONFLICT (transport) DO UPDATE SET position = excluded.position`,
    [transport],
  );
}

/** The cursor of `transport` (0 without a row). */
export async function cursorOf(db: pg.Pool, transport: string): Promise<number> {
  const { rows } = await db.query<{ position: number }>('SELECT position FROM event_cursors WHERE transport = $1', [transport]);
  return rows[0]?.position ?? 0;
}

/**
 * The file's events database and relays, made before its tests and closed after them (`alsoClose`, if given, after
 * the relays and before the database). Read them from the returned object once the file's tests run.
 */
export function useRelays(alsoClose?: () => Promise<void>): { database: EventsDatabase; relays: TestRelays } {
  const env = {} as { database: EventsDatabase; relays: TestRelays };
  beforeAll(async () => {
    env.database = await eventsDatabase();
    env.relays = testRelays(env.database.db);
  });
  afterAll(async () => {
    await env.relays?.close();
    await alsoClose?.();
    await env.database?.close();
  });
  return env;
}
