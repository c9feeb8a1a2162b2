import type pg from 'pg';
import type { FastifyBaseLogger as Logger } from 'fastify';
import { sealEvents } from '../store/events.js';

/** Most events one sealing transaction positions; a backlog is sealed in rounds of this many, back to back. */
const SEAL_LIMIT = 5_000;

/**
 * Gives committed events their feed position (src/store/events.ts) every `intervalMs`, on every node: one node's
 * transaction wins the advisory lock, the others skip that round. The delay between a commit and its event showing
 * in the feed and the transports is about one interval.
 */
export class EventSealer {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;

  constructor(
    private readonly d: { db: pg.Pool; log: Logger },
    private readonly options: { intervalMs: number },
  ) {}

  start(): void {
    this.timer ??= setInterval(() => void this.runOnce(), this.options.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  /** One round (until no full batch is left); concurrent calls share it. Never rejects: the next round retries. */
  runOnce(): Promise<void> {
    this.running ??= this.round()
      .catch((err: unknown) => this.d.log.warn({ err }, 'sealing events failed; the next round retries'))
      .finally(() => {
        this.running = null;
      });
    return this.running;
  }

  private async round(): Promise<void> {
    while ((await sealEvents(this.d.db, SEAL_LIMIT)) === SEAL_LIMIT && !this.stopped);
  }
}
