import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { FastifyBaseLogger as Logger } from 'fastify';
import type { Metrics } from '../metrics.js';
import type { Decisions } from '../redis/decisions.js';
import type { Keys } from '../redis/keys.js';
import { formatHold, formatRecord, holdField, stockField } from '../redis/layout.js';
import { HoldState } from '../redis/status.js';
import { checkOut } from '../store/database.js';
import { beginRebuild, commitRebuild, rollbackRebuild } from '../store/generation.js';
import { findLiveHolds, findRetainedIdempotency } from '../store/reservations.js';
import { findStock } from '../store/stock.js';

export type RecoveryPhase = 'ready' | 'rebuilding' | 'waiting_for_rebuild' | 'redis_unreachable' | 'starting';

// Long enough for a rebuild of 100k items; short enough that a rebuilder that died is replaced quickly.
const LOCK_TTL_MS = 30_000;
const PIPELINE_CHUNK = 5_000;

/**
 * Rebuilds Redis from PostgreSQL (on-hand, safety stock, live holds, idempotency records) when its generation marker is missing (flushed, or restarted empty). One node
 * rebuilds (a lock in Redis); the others wait for the marker. Meanwhile every script answers NO_STATE, so
 * mutations and availability reads fail closed with 503.
 */
export class Recovery {
  phase: RecoveryPhase = 'starting';
  private running: Promise<void> | null = null;

  constructor(
    private readonly d: { redis: Redis; db: pg.Pool; keys: Keys; decisions: Decisions; metrics: Metrics; log: Logger },
    private readonly options: { idempotencyRetentionHours: number },
  ) {}

  /** Starts recovery if it is not running; resolves when Redis has a marker again (or recovery gave up this round). */
  ensure(): Promise<void> {
    this.running ??= this.recover().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  /** True when Redis holds state this node may serve from. */
  async check(): Promise<boolean> {
    try {
      const marker = await this.d.redis.get(this.d.keys.marker);
      if (marker) {
        this.phase = 'ready';
        return true;
      }
      void this.ensure();
      return false;
    } catch {
      this.phase = 'redis_unreachable';
      return false;
    }
  }

  private async recover(): Promise<void> {
    const { redis, keys, log } = this.d;
    for (let attempt = 0; attempt < 600; attempt++) {
      try {
        if (await redis.get(keys.marker)) {
          this.phase = 'ready';
          return;
        }
        const token = randomUUID();
        if ((await redis.set(keys.rebuildLock, token, 'PX', LOCK_TTL_MS, 'NX')) === 'OK') {
          this.phase = 'rebuilding';
          try {
            await this.rebuild(token);
          } finally {
            if ((await redis.get(keys.rebuildLock)) === token) await redis.del(keys.rebuildLock);
          }
          continue;
        }
        this.phase = 'waiting_for_rebuild';
      } catch (err) {
        this.phase = 'redis_unreachable';
        log.warn({ err }, 'recovery attempt failed; retrying');
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Under the fence: bump the generation, refill Redis from PostgreSQL, set the marker, commit. */
  async rebuild(token: string): Promise<void> {
    const { redis, db, keys, decisions, metrics, log } = this.d;
    const started = performance.now();
    const client = await checkOut(db);
    let markerSet = false;
    try {
      // Under the fence (src/store/generation.ts) until the commit: batches of the old generation write nothing.
      const generation = await beginRebuild(client);
      await redis.set(keys.rebuilding, token);
      await this.clearItems();

      const stock = await findStock(client);
      await this.inChunks(stock, (p, row) => {
        const k = keys.item(row.itemId);
        p.hset(k.stock, stockField('onHand', row.location), row.onHand, stockField('reserved', row.location), 0);
        // Only a location with safety stock has the field (as the stock script keeps it).
        if (row.safetyStock > 0) p.hset(k.stock, stockField('safety', row.location), row.safetyStock);
        p.sadd(keys.items, row.itemId);
      });

      const holds = await findLiveHolds(client);
      await this.inChunks(holds, (p, h) => {
        const k = keys.item(h.itemId);
        const field = holdField(h.reservationId, h.location);
        p.hincrby(k.stock, stockField('reserved', h.location), h.quantity);
        p.hset(k.holds, field, formatHold({ state: HoldState.pending, quantity: h.quantity, expiresAtMs: h.expiresAtMs, version: h.version }));
        p.zadd(k.exp, h.expiresAtMs, field);
      });

      // Idempotency records too, so a retry of a committed request replays it even when its units are gone.
      const records = await findRetainedIdempotency(client, this.options.idempotencyRetentionHours);
      await this.inChunks(records, (p, r) => {
        const record = formatRecord({ hash: r.requestHash, reservationId: r.reservationId, claimedAtMs: r.claimedAtMs, nodeId: null, outcomeUnknown: false });
        p.set(keys.idempotency(r.scope, r.key), record, 'PX', Math.max(1, r.ttlMs));
      });

      if (!(await decisions.finishRebuild(token, generation))) {
        throw new Error('Redis lost the rebuild while it was written (flushed?); starting over');
      }
      markerSet = true;
      await commitRebuild(client);
      const seconds = (performance.now() - started) / 1000;
      metrics.rebuilds.inc();
      metrics.rebuildDuration.set(seconds);
      log.info({ generation, items: stock.length, holds: holds.length, idempotencyKeys: records.length, seconds }, 'rebuilt Redis state from PostgreSQL');
    } catch (err) {
      await rollbackRebuild(client).catch(() => {});
      // A marker whose generation PostgreSQL never committed would fence every write out: take it back.
      if (markerSet) await redis.del(keys.marker).catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  private async clearItems(): Promise<void> {
    await this.d.redis.unlink(this.d.keys.items);
    const stream = this.d.redis.scanStream({ match: this.d.keys.itemPattern, count: 1000 });
    for await (const batch of stream as AsyncIterable<string[]>) {
      if (batch.length > 0) await this.d.redis.unlink(...batch);
    }
  }

  private async inChunks<T>(rows: T[], add: (p: ReturnType<Redis['pipeline']>, row: T) => void): Promise<void> {
    for (let i = 0; i < rows.length; i += PIPELINE_CHUNK) {
      const p = this.d.redis.pipeline();
      for (const row of rows.slice(i, i + PIPELINE_CHUNK)) add(p, row);
      const results = await p.exec();
      const failed = results?.find(([err]) => err);
      if (failed) throw failed[0];
    }
  }
}
