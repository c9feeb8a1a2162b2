import type { FastifyBaseLogger as Logger } from 'fastify';
import type pg from 'pg';
import type { Metrics } from '../metrics.js';

/**
 * Reads a PostgreSQL streaming replica may serve (DATABASE_REPLICA_URL), and how the replica is judged fit.
 *
 * Only three reads go there, none of them a decision or part of the write path: a reservation by id (its answer
 * taken only when the reservation has ended, so it never lags), the listing by reference and the events feed (both
 * may lag, at most DATABASE_REPLICA_MAX_LAG_MS). Everything else (the mutations' reads, idempotency replays,
 * recovery, reconciliation, the sweeper, the sealer, the relays, readiness) reads the primary, through the pool
 * itself rather than through `Reads`.
 */
export type ReplicaRead = 'reservation' | 'reference' | 'events';

/** Why a read went to the primary: the replica was not fit to ask, its attempt failed, or its answer may be stale. */
export type FallbackReason = 'down' | 'lagging' | 'error' | StaleAnswer;

/** What makes a replica's answer untrustworthy even within the lag bound (a reservation by id: see service). */
export type StaleAnswer = 'not_found' | 'pending';

export interface Reads {
  /**
   * `query` on the replica when it is up and within the lag bound, else on the primary; on the primary again when
   * the replica's attempt fails or `recheck` names a reason its answer cannot be taken. A failing replica never
   * fails the read: only the primary's failure does.
   */
  run<T>(read: ReplicaRead, query: (db: pg.Pool) => Promise<T>, recheck?: (answer: T) => StaleAnswer | null): Promise<T>;
}

/** Without a replica: every read on the primary. */
export function primaryReads(primary: pg.Pool, metrics: Metrics): Reads {
  return {
    async run(read, query) {
      const answer = await query(primary);
      metrics.pgReads.inc({ read, served_by: 'primary' });
      return answer;
    },
  };
}

/** A WAL position (`pg_lsn` as text, `16/B374D848`) as a number. */
export function parseLsn(text: string): bigint {
  const [high, low] = text.split('/');
  if (high === undefined || low === undefined) throw new Error(`not a WAL position: ${text}`);
  return (BigInt(`0x${high}`) << 32n) | BigInt(`0x${low}`);
}

/** Most primary positions kept while the replica is behind; beyond, every other one is dropped (the lag reads higher, never lower). */
const MAX_PENDING_POSITIONS = 1_000;

/**
 * The replica's lag as the age of the newest primary WAL position it has replayed. The primary's position is
 * sampled with the time just before asking: every commit acknowledged before that time is at or below it, so a
 * replica that has replayed up to it has every such commit. Unlike the replica's `now() -
 * pg_last_xact_replay_timestamp()` (the age of the last transaction replayed, which grows while the primary is idle
 * and the replica is exactly up to date), this is 0-ish when idle and grows only while the replica misses WAL the
 * primary has. It reads high by up to a sampling interval, never low.
 */
export class LagTracker {
  /** Primary positions the replica has not replayed yet, oldest first, with when each was sampled. */
  private readonly pending: { at: number; lsn: bigint }[] = [];
  /** When the primary was at the newest position the replica has replayed; null before the first. */
  private freshAsOf: number | null = null;

  constructor(private readonly maxPositions = MAX_PENDING_POSITIONS) {}

  /** The primary was at `lsn` at or after `at` (epoch ms). */
  primaryAt(at: number, lsn: bigint): void {
    this.pending.push({ at, lsn });
    if (this.pending.length > this.maxPositions) {
      // Keeps the oldest and the newest; a dropped position only makes the lag read higher until the next is covered.
      const kept = this.pending.filter((_, i) => i % 2 === 0 || i === this.pending.length - 1);
      this.pending.splice(0, this.pending.length, ...kept);
    }
  }

  /** The replica has replayed up to `lsn`. */
  replayedUpTo(lsn: bigint): void {
    while (this.pending.length > 0 && this.pending[0]!.lsn <= lsn) this.freshAsOf = this.pending.shift()!.at;
  }

  /** ms behind at `now`, or null before the replica was first seen to replay a sampled position. */
  lagMs(now = Date.now()): number | null {
    return this.freshAsOf === null ? null : Math.max(0, now - this.freshAsOf);
  }
}

/** How often the lag is sampled: a quarter of the bound (at most 250 ms), so a healthy replica reads well within it. */
export function lagSampleIntervalMs(maxLagMs: number): number {
  return Math.max(25, Math.min(250, Math.floor(maxLagMs / 4)));
}

/** What a sample reads on each server: its WAL position, and what names its cluster and database. */
interface Sample {
  /** pg_lsn as text; on the replica, null unless it is in recovery. */
  lsn: string | null;
  system: string;
  database: string;
}

const IDENTITY = '(SELECT system_identifier FROM pg_control_system())::text AS system, current_database() AS database';
const PRIMARY_SAMPLE = `SELECT pg_current_wal_lsn()::text AS lsn, ${IDENTITY}`;
const REPLICA_SAMPLE = `SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END AS lsn, ${IDENTITY}`;

type Verdict = 'ok' | 'lagging' | 'down';

/**
 * Serves the replica's reads when it is fit: reachable, a standby of the primary's cluster (same system identifier,
 * in recovery, the same database), and no further behind than `maxLagMs`. Fitness is sampled every
 * `lagSampleIntervalMs` off the request path (one small query on each server), so a read never waits to learn it; a
 * read that fails on the replica marks it down until the next sample finds it back, so the reads that follow do not
 * try it meanwhile.
 */
export class ReplicaRouter implements Reads {
  private readonly lag = new LagTracker();
  /** Why the replica is not fit to ask, or null when the last sample found it fine. */
  private downBecause: string | null = 'not reached yet';
  /** The last verdict logged: a change is logged once, not every sample. */
  private logged: Verdict | null = null;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(
    private readonly d: { primary: pg.Pool; replica: pg.Pool; metrics: Metrics; log: Logger },
    private readonly options: { maxLagMs: number },
  ) {
    d.metrics.reportReplicaLag(() => this.lag.lagMs());
  }

  start(): void {
    void this.sampleOnce();
    this.timer ??= setInterval(() => void this.sampleOnce(), lagSampleIntervalMs(this.options.maxLagMs));
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  /** One sample of the replica's fitness (concurrent calls share it). Never rejects. */
  sampleOnce(): Promise<void> {
    this.running ??= this.sample()
      .catch((err: unknown) => this.markDown(`sampling failed: ${(err as Error).message}`))
      .finally(() => {
        this.running = null;
      });
    return this.running;
  }

  /** Where a read goes now: the replica, or why not. */
  route(): 'replica' | 'down' | 'lagging' {
    if (this.downBecause !== null) return 'down';
    const lagMs = this.lag.lagMs();
    return lagMs !== null && lagMs <= this.options.maxLagMs ? 'replica' : 'lagging';
  }

  async run<T>(read: ReplicaRead, query: (db: pg.Pool) => Promise<T>, recheck?: (answer: T) => StaleAnswer | null): Promise<T> {
    const { metrics } = this.d;
    const route = this.route();
    let reason: FallbackReason;
    if (route !== 'replica') reason = route;
    else {
      try {
        const answer = await query(this.d.replica);
        const stale = recheck?.(answer) ?? null;
        if (stale === null) {
          metrics.pgReads.inc({ read, served_by: 'replica' });
          return answer;
        }
        reason = stale;
      } catch (err) {
        this.markDown(`a read failed: ${(err as Error).message}`);
        reason = 'error';
      }
    }
    metrics.replicaFallbacks.inc({ read, reason });
    const answer = await query(this.d.primary);
    metrics.pgReads.inc({ read, served_by: 'primary' });
    return answer;
  }

  private async sample(): Promise<void> {
    const sampledAt = Date.now();
    let primary: Sample;
    try {
      primary = (await this.d.primary.query<Sample>(PRIMARY_SAMPLE)).rows[0]!;
    } catch {
      // The primary's own trouble: readiness and the requests report it. The lag grows meanwhile.
      return;
    }
    let replica: Sample;
    try {
      replica = (await this.d.replica.query<Sample>(REPLICA_SAMPLE)).rows[0]!;
    } catch (err) {
      return this.markDown(`unreachable: ${(err as Error).message}`);
    }
    if (replica.system !== primary.system) {
      return this.markDown(`not a replica of DATABASE_URL's server (system identifier ${replica.system}, the primary's ${primary.system})`);
    }
    if (replica.database !== primary.database) return this.markDown(`it names the database ${replica.database}, DATABASE_URL ${primary.database}`);
    // A promoted or stand-alone server: its position says nothing about what it lacks.
    if (replica.lsn === null) return this.markDown('not a standby (not in recovery)');
    this.lag.primaryAt(sampledAt, parseLsn(primary.lsn!));
    this.lag.replayedUpTo(parseLsn(replica.lsn));
    this.downBecause = null;
    this.log(this.route() === 'lagging' ? 'lagging' : 'ok');
  }

  private markDown(why: string): void {
    this.downBecause = why;
    this.log('down', why);
  }

  private log(verdict: Verdict, why?: string): void {
    if (verdict === this.logged) return;
    const first = this.logged === null;
    this.logged = verdict;
    const { log } = this.d;
    if (verdict === 'ok') log.info(first ? 'read replica up: serving reads' : 'read replica back: serving reads');
    else if (verdict === 'lagging') log.warn({ lagMs: this.lag.lagMs() }, `read replica more than ${this.options.maxLagMs} ms behind: reads go to the primary`);
    else log.warn(`read replica down, reads go to the primary: ${why}`);
  }
}
