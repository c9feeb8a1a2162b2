import type pg from 'pg';
import type { FastifyBaseLogger as Logger } from 'fastify';
import { toDocument } from '../domain/reservation.js';
import type { Metrics } from '../metrics.js';
import type { Decisions } from '../redis/decisions.js';
import { deleteOldIdempotencyKeys, deleteOldWriteBatches, findOverdue } from '../store/reservations.js';
import type { BatchWriter } from '../store/writer.js';

const BATCH = 500;

/**
 * Records `expired` in PostgreSQL for reservations whose TTL passed. Goes through Redis first, so a confirm or
 * release that won the race is not overwritten; safe on several nodes at once (a recorded transition is
 * conditional on `pending`, so only one node's record applies).
 */
export class Sweeper {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private passes = 0;

  constructor(
    private readonly d: { db: pg.Pool; decisions: Decisions; writer: BatchWriter; metrics: Metrics; log: Logger },
    private readonly options: { intervalMs: number; unrecordedGraceMs: number; idempotencyRetentionHours: number },
  ) {}

  start(): void {
    this.timer ??= setInterval(() => void this.runOnce(), this.options.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  /** One pass; concurrent calls share it. Resolves to the number of reservations recorded as expired. */
  runOnce(): Promise<void> {
    this.running ??= this.pass()
      .then(() => this.d.metrics.sweeperRuns.inc({ result: 'ok' }))
      .catch((err: unknown) => {
        this.d.metrics.sweeperRuns.inc({ result: 'error' });
        this.d.log.warn({ err }, 'sweeper pass failed; next pass retries');
      })
      .finally(() => {
        this.running = null;
      });
    return this.running;
  }

  private async pass(): Promise<void> {
    const { db, decisions, writer, metrics } = this.d;
    const overdue = await findOverdue(db, BATCH);
    await Promise.all(
      overdue.map(async (r) => {
        const holds = await decisions.expire(r.id, r.lines, 'inspect');
        if (holds.pending > 0) return; // Redis' clock says not yet
        // A hold Redis confirmed or released that PostgreSQL has not recorded: its request, decided before the
        // TTL, may still be committing, and must win. After the grace its process is taken as dead: record the
        // expiry first, then (for a confirm) give the units back in Redis.
        const unrecordedConfirm = holds.confirmed > 0;
        const unrecorded = unrecordedConfirm || holds.released > 0;
        if (unrecorded && Date.now() < r.expiresAt.getTime() + this.options.unrecordedGraceMs) return;
        // At Redis' expiry and version where it has the holds: an extension decided there whose record never came
        // (its node died) is taken up here, as any later change of the reservation would.
        const expiry = holds.version === null || holds.expiresMs === null ? null : { version: holds.version, expiresAt: new Date(holds.expiresMs) };
        const expiredAt = expiry?.expiresAt ?? r.expiresAt;
        const result = await writer.submit({
          kind: 'transition',
          generation: holds.generation,
          reservationId: r.id,
          to: 'expired',
          at: expiredAt,
          lines: r.lines,
          ...(expiry ?? {}),
          // As it reads from its expiry on: expired, at the version the expiry makes.
          document: toDocument({ ...r, expiresAt: expiredAt }, expiredAt),
        });
        if (result !== 'recorded') return;
        metrics.sweeperExpired.inc();
        metrics.reservations.inc({ outcome: 'expired' });
        if (unrecordedConfirm) await decisions.expire(r.id, r.lines, 'revert');
      }),
    );
    if (this.passes++ % 60 === 0) {
      await deleteOldIdempotencyKeys(db, this.options.idempotencyRetentionHours, 10_000);
      await deleteOldWriteBatches(db, writer.batchRetentionMs);
    }
  }
}
