import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { FastifyBaseLogger as Logger } from 'fastify';
import type { Metrics } from '../metrics.js';
import type { Decisions } from '../redis/decisions.js';
import type { Keys } from '../redis/keys.js';
import { parseHold, parseHoldField } from '../redis/layout.js';
import { HoldState } from '../redis/status.js';
import { findPendingIds, sumLiveHolds } from '../store/reservations.js';
import { findStock, findStockedItemIds } from '../store/stock.js';
import type { Recovery } from './recovery.js';

export interface Figures {
  onHand: number;
  reserved: number;
  holds: number;
}

export interface DriftRow {
  itemId: string;
  location: string;
  redis: Figures;
  postgres: Figures;
}

export interface OrphanHold {
  itemId: string;
  field: string;
  reservationId: string;
  ageMs: number;
}

export interface ReconcileReport {
  checkedItems: number;
  drift: DriftRow[];
  orphanHolds: OrphanHold[];
  repair: { orphansDropped: number; rebuilt: boolean } | null;
}

/** Runs reconciliation every interval on one node at a time (a Redis lock), dropping orphaned holds. */
export class Reconciler {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;

  constructor(
    private readonly d: ReconcileDeps,
    private readonly options: { intervalMs: number; orphanAfterMs: number },
  ) {}

  start(): void {
    if (this.options.intervalMs <= 0 || this.timer) return;
    this.timer = setInterval(() => {
      this.running ??= this.tick().finally(() => (this.running = null));
    }, this.options.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  private async tick(): Promise<void> {
    try {
      if ((await this.d.redis.set(this.d.keys.reconcileLock, '1', 'PX', this.options.intervalMs, 'NX')) !== 'OK') return;
      const report = await reconcile(this.d, {
        dropOrphans: true,
        rebuildOnDrift: false,
        orphanAfterMs: this.options.orphanAfterMs,
        settleMs: 1000,
      });
      if (report.drift.length > 0 || report.orphanHolds.length > 0) {
        this.d.log.warn(
          { drift: report.drift.length, orphanHolds: report.orphanHolds.length, repair: report.repair },
          'reconcile: Redis and PostgreSQL disagree',
        );
      }
    } catch (err) {
      this.d.log.warn({ err }, 'reconcile pass failed; next pass retries');
    }
  }
}

export interface ReconcileDeps {
  redis: Redis;
  db: pg.Pool;
  keys: Keys;
  decisions: Decisions;
  recovery: Recovery;
  metrics: Metrics;
  log: Logger;
}

export interface ReconcileOptions {
  /** Drop orphaned holds (always safe). */
  dropOrphans: boolean;
  /** Rebuild Redis from PostgreSQL if drift remains after that. */
  rebuildOnDrift: boolean;
  /** A hold unknown to PostgreSQL counts as orphaned once its reservation is older than this. */
  orphanAfterMs: number;
  /** Differences must persist across two looks this far apart (in-flight requests settle in between). */
  settleMs: number;
}

const CHUNK = 500;
const zero = (): Figures => ({ onHand: 0, reserved: 0, holds: 0 });
const same = (a: Figures, b: Figures) => a.onHand === b.onHand && a.reserved === b.reserved && a.holds === b.holds;
/** A UUIDv7 starts with its creation time in milliseconds. */
const createdAtMs = (uuid: string) => parseInt(uuid.replace(/-/g, '').slice(0, 12), 16);

/**
 * Compares Redis with PostgreSQL (the source of truth) per item and location: on-hand, reserved units and live
 * holds. Repair drops orphaned holds (granted in Redis, never recorded: always safe) and, if drift remains,
 * rebuilds Redis from PostgreSQL under the generation fence (mutations answer 503 for the seconds it takes).
 */
export async function reconcile(d: ReconcileDeps, options: ReconcileOptions): Promise<ReconcileReport> {
  const items = await listItems(d);
  let first = await compare(d, items);
  if (first.drift.length > 0 && options.settleMs > 0) {
    await new Promise((r) => setTimeout(r, options.settleMs));
    const again = await compare(d, [...new Set(first.drift.map((r) => r.itemId))]);
    const persisting = new Set(again.drift.map((r) => `${r.itemId}\u0000${r.location}`));
    first = { ...first, drift: first.drift.filter((r) => persisting.has(`${r.itemId}\u0000${r.location}`)) };
  }
  const orphanHolds = first.orphans.filter((o) => o.ageMs >= options.orphanAfterMs);
  d.metrics.reconcileDrift.set(first.drift.length);
  d.metrics.reconcileOrphans.set(orphanHolds.length);

  let repair: ReconcileReport['repair'] = null;
  if (options.dropOrphans || options.rebuildOnDrift) {
    let orphansDropped = 0;
    if (options.dropOrphans) {
      for (const o of orphanHolds) if (await d.decisions.dropHold(o.itemId, o.field)) orphansDropped++;
      d.metrics.reconcileRepairs.inc({ action: 'drop_orphan_hold' }, orphansDropped);
    }
    const remaining = orphansDropped > 0 ? (await compare(d, [...new Set(first.drift.map((r) => r.itemId))])).drift : first.drift;
    const rebuilt = options.rebuildOnDrift && remaining.length > 0;
    if (rebuilt) {
      d.log.warn({ rows: remaining.length }, 'reconcile: drift remains; rebuilding Redis from PostgreSQL');
      await d.redis.del(d.keys.marker);
      await d.recovery.ensure();
      d.metrics.reconcileRepairs.inc({ action: 'rebuild' });
    }
    repair = { orphansDropped, rebuilt };
  }
  return { checkedItems: items.length, drift: first.drift, orphanHolds, repair };
}

/** Every item either side knows: PostgreSQL's stock rows and Redis' set of stocked items (no keyspace scan). */
async function listItems(d: ReconcileDeps): Promise<string[]> {
  const ids = new Set<string>();
  for (const id of await findStockedItemIds(d.db)) ids.add(id);
  const stream = d.redis.sscanStream(d.keys.items, { count: 1000 });
  for await (const batch of stream as AsyncIterable<string[]>) for (const id of batch) ids.add(id);
  return [...ids].sort();
}

async function compare(d: ReconcileDeps, items: string[]): Promise<{ drift: DriftRow[]; orphans: OrphanHold[] }> {
  const drift: DriftRow[] = [];
  const orphans: OrphanHold[] = [];
  for (let i = 0; i < items.length; i += CHUNK) {
    const chunk = items.slice(i, i + CHUNK);
    const [redisSide, pgSide] = await Promise.all([readRedis(d, chunk), readPostgres(d, chunk)]);
    const recorded = await findPendingIds(d.db, [...new Set(redisSide.holds.map((h) => h.reservationId))]);
    const now = Date.now();
    for (const h of redisSide.holds) {
      if (!recorded.has(h.reservationId)) orphans.push({ ...h, ageMs: now - createdAtMs(h.reservationId) });
    }
    for (const key of new Set([...redisSide.figures.keys(), ...pgSide.keys()])) {
      const r = redisSide.figures.get(key) ?? zero();
      const p = pgSide.get(key) ?? zero();
      if (!same(r, p)) {
        const [itemId, location] = key.split('\u0000') as [string, string];
        drift.push({ itemId, location, redis: r, postgres: p });
      }
    }
  }
  return { drift, orphans };
}

/** Items read from Redis at once: enough to overlap round trips, few enough not to crowd out live traffic. */
const REDIS_CONCURRENCY = 20;

async function readRedis(d: ReconcileDeps, items: string[]) {
  const figures = new Map<string, Figures>();
  const holds: { itemId: string; field: string; reservationId: string }[] = [];
  for (let i = 0; i < items.length; i += REDIS_CONCURRENCY) {
    await Promise.all(items.slice(i, i + REDIS_CONCURRENCY).map((itemId) => readItem(d, itemId, figures, holds)));
  }
  return { figures, holds };
}

async function readItem(
  d: ReconcileDeps,
  itemId: string,
  figures: Map<string, Figures>,
  holds: { itemId: string; field: string; reservationId: string }[],
): Promise<void> {
  // The availability script expires due holds first, so Redis is compared as a decision would see it.
  const stock = (await d.decisions.availability(itemId)) ?? new Map();
  for (const [location, { onHand, reserved }] of stock) {
    if (onHand !== null) entry(figures, itemId, location).onHand = onHand;
    if (reserved !== null) entry(figures, itemId, location).reserved = reserved;
  }
  // HSCAN, not HGETALL: a hot item's hash also holds its recent tombstones, and must not block Redis.
  const stream = d.redis.hscanStream(d.keys.item(itemId).holds, { count: 1000 });
  for await (const chunk of stream as AsyncIterable<string[]>) {
    for (let i = 0; i < chunk.length; i += 2) {
      const field = chunk[i]!;
      const at = parseHoldField(field);
      if (!at || parseHold(chunk[i + 1]!)?.state !== HoldState.pending) continue;
      entry(figures, itemId, at.location).holds++;
      holds.push({ itemId, field, reservationId: at.reservationId });
    }
  }
}

async function readPostgres(d: ReconcileDeps, items: string[]): Promise<Map<string, Figures>> {
  const figures = new Map<string, Figures>();
  for (const r of await findStock(d.db, items)) entry(figures, r.itemId, r.location).onHand = r.onHand;
  for (const r of await sumLiveHolds(d.db, items)) Object.assign(entry(figures, r.itemId, r.location), { reserved: r.reserved, holds: r.holds });
  return figures;
}

function entry(map: Map<string, Figures>, itemId: string, location: string): Figures {
  const key = `${itemId}\u0000${location}`;
  let f = map.get(key);
  if (!f) map.set(key, (f = zero()));
  return f;
}
