import { setTimeout as delay } from 'node:timers/promises';
import type { FastifyBaseLogger as Logger } from 'fastify';
import type pg from 'pg';
import type { Metrics } from '../metrics.js';
import type { Lease } from '../redis/lease.js';
import { advanceCursor, readCursor } from '../store/event-cursors.js';
import { eventsAfter, type SealedEvent } from '../store/events.js';
import { toCloudEvent } from './envelope.js';
import type { Transport } from './transports/transport.js';

export interface Backoff {
  /** The bound of the first retry's delay; each further failure doubles it… */
  baseMs: number;
  /** …up to this. */
  capMs: number;
}

export interface RelayOptions {
  /** The CloudEvents `source` of every event (EVENTS_SOURCE). */
  source: string;
  /** Most events read and handed to the transport at once. */
  batchSize: number;
  /** How long a caught-up relay waits before it looks for new events again. */
  pollMs: number;
  backoff: Backoff;
  /** How often the lease is renewed (by its holder) or tried (by a standby): a third of its TTL. */
  leaseRenewMs: number;
  /** Math.random unless a test fixes it. */
  random?: () => number;
}

export const RELAY_DEFAULTS = {
  batchSize: 500,
  pollMs: 100,
  backoff: { baseMs: 200, capMs: 30_000 },
} as const;

/**
 * The delay before retry number `attempt` (0 for the first) after consecutive failures: "full jitter", uniform in
 * [0, min(cap, base·2^attempt)), so relays and endpoints that failed together do not retry in step.
 */
export function backoffMs(attempt: number, { baseMs, capMs }: Backoff, random: () => number = Math.random): number {
  return random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 52));
}

/** Waits `ms`, or less if `signal` aborts; never keeps the process alive. */
const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  delay(ms, undefined, { signal, ref: false }).catch(() => undefined);

/**
 * Delivers the committed events to one transport, in position order, at least once (api.md "Events"; the design:
 * architecture.md "Events: a transactional outbox"). Every node runs one per transport; the one holding the
 * transport's lease (src/redis/lease.ts) is active, the others stand by and take over when it lapses or is given up.
 *
 * The active relay reads sealed events after its cursor (`event_cursors`, in PostgreSQL: a restart, or another
 * node, resumes where it stopped), hands them to the transport, and moves the cursor past the events delivered
 * without a gap; a crash between a send and that update sends them again, under the same ids. An event the
 * transport fails is retried with exponential backoff and full jitter, and so is every later event of its subject
 * (the transport holds them back: per-subject order); later events of other subjects go ahead within the batch,
 * and a retry skips those already delivered (remembered above the cursor for as long as this relay stays active).
 * Each transport has its own relay, loop, cursor and lease: a failing one never holds back another, nor the
 * recording of decisions (the relays only read the outbox).
 */
export class Relay {
  private loop: Promise<void> | null = null;
  private readonly stopping = new AbortController();
  private renewTimer: NodeJS.Timeout | null = null;
  /** The cursor while this relay is active (null: standing by). */
  private cursor: number | null = null;
  /** Positions above the cursor the transport already accepted. */
  private readonly deliveredAbove = new Set<number>();
  /** Consecutive failed attempts (0: the last one succeeded). */
  private failures = 0;

  constructor(
    private readonly d: { db: pg.Pool; metrics: Metrics; log: Logger },
    readonly transport: Transport,
    readonly lease: Lease,
    private readonly options: RelayOptions,
  ) {}

  get name(): string {
    return this.transport.name;
  }

  /** True while this node's relay is the active one for its transport. */
  get active(): boolean {
    return this.cursor !== null;
  }

  start(): void {
    if (this.loop) return;
    const renew = () => void this.lease.renew();
    renew();
    this.renewTimer = setInterval(renew, this.options.leaseRenewMs);
    this.renewTimer.unref();
    this.loop = this.run();
  }

  /**
   * Stops: an attempt in flight is aborted (what it delivered is recorded first), the transport closed, and the
   * lease given up so a standby takes over at once.
   */
  async stop(): Promise<void> {
    this.stopping.abort();
    if (this.renewTimer) clearInterval(this.renewTimer);
    this.renewTimer = null;
    await this.loop;
    await this.lease.release();
  }

  private async run(): Promise<void> {
    const signal = this.stopping.signal;
    while (!signal.aborted) {
      if (!this.lease.held) {
        await this.standBy();
        await sleep(this.options.leaseRenewMs, signal);
        continue;
      }
      try {
        if (this.cursor === null) await this.activate();
        const idle = await this.step(signal);
        if (this.failures > 0) {
          this.d.log.info({ transport: this.name, attempts: this.failures + 1 }, `events: delivering to ${this.transport.target} again`);
          this.failures = 0;
        }
        if (idle) await sleep(this.options.pollMs, signal);
      } catch (err) {
        if (signal.aborted) break;
        const waitMs = backoffMs(this.failures, this.options.backoff, this.options.random);
        this.failures++;
        this.d.metrics.eventRetries.inc({ transport: this.name });
        this.d.log.warn(
          { err, transport: this.name, attempt: this.failures, retryInMs: Math.round(waitMs) },
          `events: delivery to ${this.transport.target} failed; retrying`,
        );
        await sleep(waitMs, signal);
      }
    }
    await this.standBy();
  }

  /** Becomes the active relay: connects the transport, reads the cursor. */
  private async activate(): Promise<void> {
    await this.transport.open();
    this.cursor = await readCursor(this.d.db, this.name);
    this.deliveredAbove.clear();
    this.d.log.info({ transport: this.name, position: this.cursor }, `events: relaying to ${this.transport.target}`);
  }

  private async standBy(): Promise<void> {
    const wasActive = this.cursor !== null;
    this.cursor = null;
    this.deliveredAbove.clear();
    this.d.metrics.relayLagSince.delete(this.name);
    this.d.metrics.relayLag.remove({ transport: this.name });
    await this.transport.close().catch(() => undefined);
    if (wasActive) this.d.log.info({ transport: this.name }, `events: standing by for ${this.transport.target}`);
  }

  /**
   * One attempt: reads a batch after the cursor, delivers what it has not delivered yet, advances the cursor.
   * Resolves to true when there was nothing to deliver; throws when a delivery failed (after recording the rest).
   */
  private async step(signal: AbortSignal): Promise<boolean> {
    const { db, metrics } = this.d;
    const from = this.cursor!;
    const batch = await eventsAfter(db, from, this.options.batchSize);
    if (batch.length === 0) {
      metrics.relayLagSince.set(this.name, null);
      return true;
    }
    metrics.relayLagSince.set(this.name, batch[0]!.time);
    const pending = batch.filter((e) => !this.deliveredAbove.has(e.position));
    // The read may have outlasted the lease: deliver only while it is held still.
    if (!this.lease.held || signal.aborted) return false;
    const result = await this.transport.deliver(
      pending.map((e) => toCloudEvent(e, this.options.source)),
      signal,
    );
    let delivered = 0;
    pending.forEach((e, i) => {
      if (!result.delivered[i]) return;
      this.deliveredAbove.add(e.position);
      delivered++;
    });
    if (delivered > 0) metrics.eventsDelivered.inc({ transport: this.name }, delivered);
    if (result.failed > 0) metrics.eventsFailed.inc({ transport: this.name }, result.failed);

    const to = this.deliveredThrough(batch, from);
    if (to > from) {
      await advanceCursor(db, this.name, to);
      this.cursor = to;
      for (const position of this.deliveredAbove) if (position <= to) this.deliveredAbove.delete(position);
    }
    const oldest = batch.find((e) => e.position > to);
    metrics.relayLagSince.set(this.name, oldest?.time ?? (batch.length < this.options.batchSize ? null : batch.at(-1)!.time));
    if (result.failed > 0 || result.delivered.length < pending.length) throw result.error ?? new Error('delivery incomplete');
    if (signal.aborted) return false;
    if (to === from) throw new Error('nothing delivered'); // the transport failed without saying why
    return false;
  }

  /** The last position of the batch up to which every event is delivered (`from` if the first is not). */
  private deliveredThrough(batch: readonly SealedEvent[], from: number): number {
    let to = from;
    for (const e of batch) {
      if (!this.deliveredAbove.has(e.position)) break;
      to = e.position;
    }
    return to;
  }
}
