import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { FastifyBaseLogger as Logger } from 'fastify';
import type { Metrics } from '../metrics.js';
import { isCluster, scanTargets, type RedisClient } from '../redis/client.js';
import { onEveryGroup } from '../redis/groups.js';
import type { Decisions } from '../redis/decisions.js';
import type { Keys } from '../redis/keys.js';
import { formatHold, formatRecord, holdField, stockField } from '../redis/layout.js';
import { serverRunIds } from '../redis/server-check.js';
import { HoldState } from '../redis/status.js';
import { checkOut } from '../store/database.js';
import { beginRebuild, commitRebuild, rollbackRebuild } from '../store/generation.js';
import { findLiveHolds, findRetainedIdempotency } from '../store/reservations.js';
import { findStock } from '../store/stock.js';

export type RecoveryPhase = 'ready' | 'rebuilding' | 'waiting_for_rebuild' | 'redis_unreachable' | 'starting';

// Long enough for a rebuild of 100k items; short enough that a rebuilder that died is replaced quickly.
const LOCK_TTL_MS = 30_000;
// Commands in flight at once while refilling (the client pipelines them per server).
const CHUNK = 5_000;

/**
 * Rebuilds Redis from PostgreSQL (on-hand, safety stock, live holds, idempotency records) when a generation marker
 * is missing (flushed, or restarted empty; on a cluster, also a slot whose master changed by a failover, which may
 * have lost the last writes). One node rebuilds (a lock in Redis); the others wait for the markers. Meanwhile every
 * script on a slot without state answers NO_STATE, so mutations and availability reads fail closed with 503.
 *
 * The rebuild is whole, on a cluster too: one generation in PostgreSQL fences every record (src/store/generation.ts),
 * so a rebuild of one shard would fence out the writes of all the others all the same, and a failover (the only
 * loss a cluster has that a single Redis has not) is rare; a whole rebuild of 100,000 items takes seconds.
 */
export class Recovery {
  phase: RecoveryPhase = 'starting';
  private running: Promise<void> | null = null;

  constructor(
    private readonly d: { redis: RedisClient; db: pg.Pool; keys: Keys; decisions: Decisions; metrics: Metrics; log: Logger },
    private readonly options: { idempotencyRetentionHours: number },
  ) {}

  /** Starts recovery if it is not running; resolves when Redis has a marker again (or recovery gave up this round). */
  ensure(): Promise<void> {
    this.running ??= this.recover().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  /**
   * The generation every group's state is of, or null when a group has none (or, mid-rebuild, groups differ). On a
   * cluster that asks every slot: 16,384 small script calls, one pipeline per master.
   */
  generation(): Promise<string | null> {
    return this.d.decisions.generation();
  }

  /** Drops every group's marker: every script then answers NO_STATE until a rebuild (reconciliation's last resort). */
  async dropState(): Promise<void> {
    const { redis, keys } = this.d;
    await onEveryGroup(redis, keys, (p, group) => p.del(keys.markerOf(group)));
  }

  /** True when Redis holds state this node may serve from. */
  async check(): Promise<boolean> {
    try {
      if (await this.generation()) {
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
        if (await this.generation()) {
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
      // A server that fails over or restarts mid-rebuild may lack part of what was written: its markers are then not set.
      const servers = await serverRunIds(redis);
      // Every slot without state until the markers are set again: on a cluster a failover took only some slots'
      // state, and the others' scripts must not decide on items while they are cleared and refilled.
      await this.dropState();
      await onEveryGroup(redis, keys, (p, group) => p.set(keys.rebuildingOf(group), token));
      await this.clearItems();

      const stock = await findStock(client);
      await this.inChunks(stock, (row) => {
        const k = keys.item(row.itemId);
        return [
          redis.hset(k.stock, stockField('onHand', row.location), row.onHand, stockField('reserved', row.location), 0),
          // Only a location with safety stock has the field (as the stock script keeps it).
          ...(row.safetyStock > 0 ? [redis.hset(k.stock, stockField('safety', row.location), row.safetyStock)] : []),
          redis.sadd(keys.itemsOf(keys.groupOf(k.stock)), row.itemId),
        ];
      });

      const holds = await findLiveHolds(client);
      await this.inChunks(holds, (h) => {
        const k = keys.item(h.itemId);
        const field = holdField(h.reservationId, h.location);
        return [
          redis.hincrby(k.stock, stockField('reserved', h.location), h.quantity),
          redis.hset(k.holds, field, formatHold({ state: HoldState.pending, quantity: h.quantity, expiresAtMs: h.expiresAtMs, version: h.version })),
          redis.zadd(k.exp, h.expiresAtMs, field),
        ];
      });

      // Idempotency records too, so a retry of a committed request replays it even when its units are gone.
      const records = await findRetainedIdempotency(client, this.options.idempotencyRetentionHours);
      await this.inChunks(records, (r) => {
        const record = formatRecord({ hash: r.requestHash, reservationId: r.reservationId, claimedAtMs: r.claimedAtMs, nodeId: null, outcomeUnknown: false });
        return [redis.set(keys.idempotency(r.scope, r.key), record, 'PX', Math.max(1, r.ttlMs))];
      });

      markerSet = true;
      if (!(await decisions.finishRebuild(token, generation, servers))) throw new Error('Redis lost the rebuild while it was written (flushed?); starting over');
      await commitRebuild(client);
      const seconds = (performance.now() - started) / 1000;
      metrics.rebuilds.inc();
      metrics.rebuildDuration.set(seconds);
      log.info({ generation, items: stock.length, holds: holds.length, idempotencyKeys: records.length, seconds }, 'rebuilt Redis state from PostgreSQL');
    } catch (err) {
      await rollbackRebuild(client).catch(() => {});
      // A marker whose generation PostgreSQL never committed would fence every write out: take them back.
      if (markerSet) await this.dropState().catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  private async clearItems(): Promise<void> {
    const { redis, keys } = this.d;
    await onEveryGroup(redis, keys, (p, group) => p.unlink(keys.itemsOf(group)));
    for (const server of scanTargets(redis)) {
      const stream = server.scanStream({ match: keys.itemPattern, count: 1000 });
      // One key a command: a cluster's keys of one batch lie in many slots.
      for await (const batch of stream as AsyncIterable<string[]>) await this.inChunks(batch, (key) => [redis.unlink(key)]);
    }
  }

  /** Sends the commands `add` makes for each row, `CHUNK` rows at a time; the first failure fails the rebuild. */
  private async inChunks<T>(rows: readonly T[], add: (row: T) => Promise<unknown>[]): Promise<void> {
    for (let i = 0; i < rows.length; i += CHUNK) await Promise.all(rows.slice(i, i + CHUNK).flatMap(add));
  }
}
