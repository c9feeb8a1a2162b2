import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { Keys } from '../../src/redis/keys.js';
import { parseStock } from '../../src/redis/layout.js';
import type { Sku } from './load.js';

/**
 * I1 "at every instant", sampled: while the load runs, reads each SKU's counters straight from Redis and
 * PostgreSQL. The load never reduces stock, so in Redis 0 ≤ reserved ≤ on-hand must hold at every sample, and
 * PostgreSQL's on-hand must never go negative. Samples that fail (the fault is on) are skipped.
 */
/** One sample that broke the rule: which side, where, and the figures. */
export interface Sample {
  at: number;
  source: 'Redis' | 'PostgreSQL';
  itemId: string;
  location: string;
  onHand: number;
  reserved: number;
}

export class Monitor {
  readonly violations: Sample[] = [];
  samples = 0;
  private stopped = false;
  private loop: Promise<void> | null = null;

  constructor(
    private readonly d: { redis: Redis; db: pg.Pool; keys: Keys; skus: readonly Sku[]; intervalMs: number },
  ) {}

  start(): void {
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      await Promise.all([this.sampleRedis(), this.samplePostgres()]);
      await new Promise((r) => setTimeout(r, this.d.intervalMs));
    }
  }

  private note(sample: Omit<Sample, 'at'>): void {
    if (this.violations.length < 200) this.violations.push({ at: Date.now(), ...sample });
  }

  private async sampleRedis(): Promise<void> {
    const items = [...new Set(this.d.skus.map((s) => s.itemId))];
    let hashes: Record<string, string>[];
    try {
      hashes = await Promise.all(items.map((id) => this.d.redis.hgetall(this.d.keys.item(id).stock)));
    } catch {
      return;
    }
    this.samples++;
    for (const sku of this.d.skus) {
      const figures = parseStock(hashes[items.indexOf(sku.itemId)]!).get(sku.location);
      if (figures?.onHand == null) continue; // flushed, or being rebuilt
      const onHand = figures.onHand;
      const reserved = figures.reserved ?? 0;
      if (onHand < 0 || reserved < 0 || reserved > onHand) this.note({ source: 'Redis', ...sku, onHand, reserved });
    }
  }

  private async samplePostgres(): Promise<void> {
    let rows: { item_id: string; location: string; on_hand: number; reserved: number }[];
    try {
      rows = (await this.d.db.query<{ item_id: string; location: string; on_hand: number; reserved: number }>(
        'SELECT item_id, location, on_hand::float8 AS on_hand, reserved::float8 AS reserved FROM stock',
      )).rows;
    } catch {
      return;
    }
    for (const r of rows) {
      if (r.on_hand < 0 || r.reserved < 0) {
        this.note({ source: 'PostgreSQL', itemId: r.item_id, location: r.location, onHand: r.on_hand, reserved: r.reserved });
      }
    }
  }
}
