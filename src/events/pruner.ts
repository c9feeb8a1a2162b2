import type { FastifyBaseLogger as Logger } from 'fastify';
import type { RedisClient } from '../redis/client.js';
import type pg from 'pg';
import type { Metrics } from '../metrics.js';
import type { Keys } from '../redis/keys.js';
import { pruneDelivered } from '../store/event-cursors.js';

export interface PrunerOptions {
  retentionHours: number;
  /** The transports configured: an event goes once every one of them delivered it. */
  transports: readonly string[];
  intervalMs: number;
  /** Events deleted per statement (short transactions, no long lock on the outbox). */
  batchSize: number;
  /** Most statements per pass: a backlog is worked off over several passes. */
  maxBatchesPerPass: number;
}

export const PRUNER_DEFAULTS = { intervalMs: 60_000, batchSize: 1_000, maxBatchesPerPass: 100 } as const;

/**
 * Deletes events older than EVENTS_RETENTION_HOURS that every configured transport delivered, in batches, on one
 * node at a time (a Redis lock for the pass, like reconciliation's). Events a transport has not delivered stay,
 * however old: a transport that was down for longer than the retention still gets them.
 */
export class Pruner {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<number> | null = null;

  constructor(
    private readonly d: { db: pg.Pool; redis: RedisClient; keys: Keys; metrics: Metrics; log: Logger },
    private readonly options: PrunerOptions,
  ) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.runOnce(), this.options.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  /** One pass, if no other node is running one; concurrent calls share it. Resolves to the events deleted. */
  runOnce(): Promise<number> {
    this.running ??= this.pass()
      .catch((err: unknown) => {
        this.d.log.warn({ err }, 'events: pruning failed; next pass retries');
        return 0;
      })
      .finally(() => (this.running = null));
    return this.running;
  }

  private async pass(): Promise<number> {
    const { db, redis, keys, metrics } = this.d;
    const { retentionHours, transports, batchSize, maxBatchesPerPass, intervalMs } = this.options;
    if ((await redis.set(keys.eventsPruneLock, '1', 'PX', intervalMs, 'NX')) !== 'OK') return 0;
    let total = 0;
    for (let i = 0; i < maxBatchesPerPass; i++) {
      const deleted = await pruneDelivered(db, transports, retentionHours, batchSize);
      total += deleted;
      metrics.eventsPruned.inc(deleted);
      if (deleted < batchSize) break;
    }
    return total;
  }
}
