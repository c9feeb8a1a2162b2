import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { FastifyBaseLogger as Logger } from 'fastify';
import type { Metrics } from '../metrics.js';
import type { Decisions } from '../redis/decisions.js';
import type { Keys } from '../redis/keys.js';
import { HoldState } from '../redis/status.js';
import { formatRecord } from '../service/idempotency.js';
import { checkOut } from '../store/database.js';

export type RecoveryPhase = 'ready' | 'rebuilding' | 'waiting_for_rebuild' | 'redis_unreachable' | 'starting';

// Long enough for a rebuild of 100k items; short enough that a rebuilder that died is replaced quickly.
const LOCK_TTL_MS = 30_000;
const PIPELINE_CHUNK = 5_000;

/**
 * Rebuilds Redis from PostgreSQL when its generation marker is missing (flushed, or restarted empty). One node
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
      // The rebuild's transaction waits for writers and stays open while Redis is refilled: no timeouts in it.
      await client.query(
        "BEGIN; SET LOCAL statement_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0",
      );
      // The fence: this row lock waits for the batches holding the generation row, and holds new ones off until
      // the commit, after which they find the new generation and write nothing (src/store/batch-statement.ts).
      const gen = await client.query<{ generation: string }>(
        'UPDATE state_generation SET generation = generation + 1 RETURNING generation::text AS generation',
      );
      const generation = gen.rows[0]!.generation;
      await redis.set(keys.rebuilding, token);
      await this.clearItems();

      const stock = await client.query<{ item_id: string; location: string; on_hand: number }>(
        'SELECT item_id, location, on_hand FROM stock',
      );
      await this.inChunks(stock.rows, (p, row) => {
        const k = keys.item(row.item_id);
        p.hset(k.stock, `h:${row.location}`, row.on_hand, `r:${row.location}`, 0);
        p.sadd(keys.items, row.item_id);
      });

      const holds = await client.query<{ id: string; item_id: string; location: string; quantity: number; expires_ms: number }>(
        `SELECT l.reservation_id AS id, l.item_id, l.location, l.quantity,
                (extract(epoch FROM r.expires_at) * 1000)::bigint AS expires_ms
         FROM reservations r JOIN reservation_lines l ON l.reservation_id = r.id
         WHERE r.status = 'pending' AND r.expires_at > now()`,
      );
      await this.inChunks(holds.rows, (p, h) => {
        const k = keys.item(h.item_id);
        const field = `${h.id}:${h.location}`;
        p.hincrby(k.stock, `r:${h.location}`, h.quantity);
        p.hset(k.holds, field, `${HoldState.pending}:${h.quantity}:${h.expires_ms}`);
        p.zadd(k.exp, h.expires_ms, field);
      });

      // Idempotency records too, so a retry of a committed request replays it even when its units are gone.
      const records = await client.query<{ scope: string; key: string; request_hash: string; id: string; claimed_ms: number; ttl_ms: number }>(
        `SELECT scope, key, request_hash, reservation_id AS id,
                (extract(epoch FROM created_at) * 1000)::bigint AS claimed_ms,
                (extract(epoch FROM created_at + make_interval(hours => $1) - now()) * 1000)::bigint AS ttl_ms
         FROM idempotency_keys WHERE created_at > now() - make_interval(hours => $1)`,
        [this.options.idempotencyRetentionHours],
      );
      await this.inChunks(records.rows, (p, r) => {
        const record = formatRecord({ hash: r.request_hash, reservationId: r.id, claimedAtMs: r.claimed_ms, nodeId: null, outcomeUnknown: false });
        p.set(keys.idempotency(r.scope, r.key), record, 'PX', Math.max(1, r.ttl_ms));
      });

      if (!(await decisions.finishRebuild(token, generation))) {
        throw new Error('Redis lost the rebuild while it was written (flushed?); starting over');
      }
      markerSet = true;
      await client.query('COMMIT');
      const seconds = (performance.now() - started) / 1000;
      metrics.rebuilds.inc();
      metrics.rebuildDuration.set(seconds);
      log.info({ generation, items: stock.rowCount, holds: holds.rowCount, idempotencyKeys: records.rowCount, seconds }, 'rebuilt Redis state from PostgreSQL');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
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
