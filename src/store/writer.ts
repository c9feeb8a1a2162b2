import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import { newId } from '../domain/ids.js';
import type { Metrics } from '../metrics.js';
import { batchValues, RECORD_BATCH, RECORD_BATCH_WITHOUT_EVENTS, resultsOf, type Outcome } from './batch-statement.js';
import { checkOut } from './database.js';
import type { RecordOp, RecordResult } from './record.js';

// The operations and their results live in ./record.js, which the batch statement reads too.
export type { RecordOp, RecordResult, Transition } from './record.js';

/**
 * The batch did not commit (`committed: false`), or its fate could not be learned yet (`'unknown'`: PostgreSQL was
 * unreachable). Then `fate` keeps asking and settles to whether it committed, or 'unknown' once the batch's fate
 * deadline (FATE_DEADLINE_MS after it was sent) passed.
 */
export class RecordError extends Error {
  readonly fate: Promise<boolean | 'unknown'>;

  constructor(
    readonly committed: false | 'unknown',
    cause: unknown,
    fate?: Promise<boolean | 'unknown'>,
  ) {
    super(`PostgreSQL record failed (${committed === false ? 'not committed' : 'outcome unknown'})`, { cause });
    this.name = 'RecordError';
    this.fate = fate ?? Promise.resolve(committed);
  }
}

/**
 * PostgreSQL refused this operation alone, for its own values (`sqlState`: a NUL in a text or JSON value, a
 * violated constraint, a value over a limit): nothing of it was committed, and retrying it cannot help.
 */
export class RecordRejected extends RecordError {
  constructor(
    readonly sqlState: string,
    cause: unknown,
  ) {
    super(false, cause);
    this.name = 'RecordRejected';
    this.message = `PostgreSQL rejected the operation's values (SQLSTATE ${sqlState})`;
  }
}

interface Pending {
  op: RecordOp;
  resolve: (r: RecordResult) => void;
  reject: (e: unknown) => void;
}

/** The reservation a transition or extension changes (null for other operations). */
const reservationOf = (p: Pending): string | null =>
  p.op.kind === 'transition' || p.op.kind === 'extend' ? p.op.reservationId : null;

const RETRYABLE = new Set(['40001', '40P01']); // serialization failure, deadlock
const MAX_ATTEMPTS = 3;
/**
 * SQLSTATE classes one operation's own values can cause: 22 data exception (a NUL in a text or JSON value), 23
 * integrity constraint violation, 54 program limit exceeded. Not connection loss (08, or no SQLSTATE), timeouts
 * and cancellation (57), nor the retryable 40: those say nothing about any one operation.
 */
const DATA_CLASSES = new Set(['22', '23', '54']);

/** The SQLSTATE of a statement that failed with an ERROR (its transaction aborted, nothing committed), else null. */
function sqlStateOf(err: unknown): string | null {
  const cause = err instanceof RecordError ? (err.cause as { code?: unknown; severity?: unknown } | undefined) : undefined;
  return cause?.severity === 'ERROR' && typeof cause.code === 'string' && /^[0-9A-Z]{5}$/.test(cause.code) ? cause.code : null;
}

/**
 * Group commit: operations submitted while earlier batches are in flight are gathered into one statement of
 * multi-row inserts and updates (src/store/batch-statement.ts), committed on its own, with stock changes summed
 * per (item, location), so a hot SKU costs one row update per batch. At low load an operation is flushed on the
 * next tick, alone. Each caller waits for its own commit; a failed batch fails exactly its callers, and one that
 * PostgreSQL rejects for an operation's values is split until only that operation fails (`record`). A batch whose
 * answer is lost is looked up (`settleLost`) before its callers hear anything, off the flush slot so later batches
 * go on.
 */
export class BatchWriter {
  private queue: Pending[] = [];
  /** Write requests admitted and not yet finished (`admit`). */
  private admitted = 0;
  private inflight = 0;
  /** Reservations whose transition or extension a batch in flight records. */
  private readonly recording = new Set<string>();
  private scheduled = false;
  private closed = false;
  /** Lost batches whose fate is being looked up (off the flush slots, so later batches are not held up). */
  private settling = 0;

  /**
   * How long `write_batches` rows must be kept (src/jobs/sweeper.ts prunes older ones): the fate deadline plus a
   * margin, so no lookup this writer trusts can find a batch's row already pruned.
   */
  readonly batchRetentionMs: number;
  private readonly fateDeadlineMs: number;

  constructor(
    /** The writer's own pool (src/plugins/writer.ts): its batches and the lookups of lost ones. */
    readonly pool: pg.Pool,
    private readonly metrics: Metrics,
    private readonly options: {
      maxBatch: number;
      concurrency: number;
      fateWaitMs: number;
      /** FATE_DEADLINE_MS unless set (tests shorten it). */
      fateDeadlineMs?: number;
      /** Most write requests admitted at once (`admit`: new reservations; twice as many others); 0 or unset: no bound. */
      maxQueue?: number;
      /**
       * false: batches append no events (RECORD_BATCH_WITHOUT_EVENTS). Only the bench's `durable-no-outbox` design
       * sets it, to measure what the outbox costs; never a setting.
       */
      appendEvents?: boolean;
    },
  ) {
    this.fateDeadlineMs = options.fateDeadlineMs ?? FATE_DEADLINE_MS;
    this.batchRetentionMs = batchRetentionMs(this.fateDeadlineMs);
  }

  /**
   * Admission, asked by a write request before it decides anything: null when too many requests are already
   * admitted and unfinished (deciding, waiting for a batch, or in one), so the request can be refused having
   * changed nothing; else the function that ends the admission (call it once the request finished, however).
   *
   * Past saturation the backlog, and with it every admitted request's latency, would otherwise grow with the
   * offered load; bounded, an admitted request waits for at most about 2 × `maxQueue` operations to commit before
   * its own. Counted per request rather than per queued operation so that requests deciding at once (each a Redis
   * round trip away from `submit`) cannot all pass a check none of them has yet counted.
   *
   * A request that opens work (`'new'`: a reservation) is refused from `maxQueue` on; one that finishes or feeds it
   * (`'other'`: confirm, release, a stock change) only from twice that, so a flood of new reservations cannot keep
   * the buyers who hold units from checking out, nor an operator from restocking.
   */
  admit(kind: 'new' | 'other'): (() => void) | null {
    const max = (this.options.maxQueue ?? 0) * (kind === 'new' ? 1 : 2);
    if (max > 0 && this.admitted >= max) return null;
    this.admitted++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.admitted--;
    };
  }

  submit(op: RecordOp): Promise<RecordResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ op, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.pump();
        });
      }
    });
  }

  /** Resolves once every submitted operation has settled. */
  async drain(): Promise<void> {
    while (this.queue.length > 0 || this.inflight > 0 || this.settling > 0) await new Promise((r) => setTimeout(r, 5));
  }

  /** Graceful shutdown: drains, and stops asking after lost batches (reconciliation settles what is left). */
  async close(): Promise<void> {
    await this.drain();
    this.closed = true;
  }

  private pump(): void {
    while (this.inflight < this.options.concurrency && this.queue.length > 0) {
      const batch = this.takeBatch();
      // Every queued operation waits for a batch in flight that records its reservation.
      if (batch.length === 0) return;
      const ids = batch.map(reservationOf).filter((id) => id !== null);
      for (const id of ids) this.recording.add(id);
      this.inflight++;
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        for (const id of ids) this.recording.delete(id);
        this.inflight--;
        this.pump();
      };
      void this.flush(batch, release).finally(release);
    }
  }

  /**
   * Up to maxBatch operations, at most one transition or extension per reservation, and none of a reservation a
   * batch in flight records: a later one waits, so a reservation's changes commit in the order they were decided
   * (each adds one to its version).
   */
  private takeBatch(): Pending[] {
    const batch: Pending[] = [];
    const rest: Pending[] = [];
    const seen = new Set<string>(this.recording);
    for (const p of this.queue) {
      const id = reservationOf(p);
      if (batch.length >= this.options.maxBatch || (id && seen.has(id))) rest.push(p);
      else {
        if (id) seen.add(id);
        batch.push(p);
      }
    }
    this.queue = rest;
    return batch;
  }

  /** Records `batch`; `release` frees its flush slot (the caller calls it again once done: it acts once). */
  private async flush(batch: Pending[], release: () => void): Promise<void> {
    const end = this.metrics.pgBatchDuration.startTimer();
    this.metrics.pgBatchSize.observe(batch.length);
    await this.record(batch, release);
    end();
  }

  /**
   * Commits `batch` as one statement and answers its callers, retrying serialization failures and deadlocks.
   *
   * One statement means one operation's bad value (a NUL that PostgreSQL cannot store, a violated constraint)
   * aborts it for everyone in the batch, and would again on every retry. So when PostgreSQL rejects the statement
   * for something an operation's values can cause, the batch is split in halves, each committed as its own
   * statement, recursively: every operation that can be recorded is, and only one that fails alone is rejected
   * (`RecordRejected`). A bad operation costs up to about 2·log2(n) more statements; a fault of the statement
   * itself (our bug, rejecting every batch) would cost 2n−1 per batch and reject every operation. Both are rare
   * enough not to be worth a heuristic.
   */
  private async record(batch: Pending[], release?: () => void): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        const results = await this.commit(batch.map((p) => p.op));
        // The next batch goes out first, its callers' requests answered on the next turn of the event loop: answering
        // them (documents serialized, sockets written) took milliseconds a batch under load, PostgreSQL idle meanwhile.
        release?.();
        setImmediate(() => batch.forEach((p, i) => p.resolve(results[i]!)));
        return;
      } catch (err) {
        if (err instanceof LostAnswer) {
          void this.settleLost(batch, err);
          return;
        }
        const code = sqlStateOf(err);
        if (code && RETRYABLE.has(code) && attempt < MAX_ATTEMPTS) continue;
        if (code && DATA_CLASSES.has(code.slice(0, 2))) {
          if (batch.length > 1) {
            // One half after the other: a flush slot holds one connection at a time.
            const half = Math.ceil(batch.length / 2);
            await this.record(batch.slice(0, half));
            await this.record(batch.slice(half));
            return;
          }
          this.metrics.pgRejectedOperations.inc({ sqlstate: code });
          batch[0]!.reject(new RecordRejected(code, (err as RecordError).cause));
          return;
        }
        this.metrics.pgBatchFailures.inc();
        batch.forEach((p) => p.reject(err));
        return;
      }
    }
  }

  /**
   * Answers the callers of a batch whose answer was lost once its fate is known: waiting a while for PostgreSQL (a
   * request should not get 503 for a change that committed), then 'unknown', settled later by `fate`.
   */
  private async settleLost(batch: Pending[], lost: LostAnswer): Promise<void> {
    this.settling++;
    try {
      const outcome = await this.lookUpUntil(lost, Math.min(performance.now() + this.options.fateWaitMs, lost.fateDeadline));
      if (outcome !== false && outcome !== 'unknown') {
        const results = resultsOf(lost.ops, lost.generation, outcome); // the answer was lost, not the commit
        batch.forEach((p, i) => p.resolve(results[i]!));
        return;
      }
      this.metrics.pgBatchFailures.inc();
      const fate =
        outcome === false
          ? undefined
          : this.lookUpUntil(lost, lost.fateDeadline).then((o) => (o === 'unknown' ? o : o !== false));
      const error = new RecordError(outcome, lost.cause, fate);
      batch.forEach((p) => p.reject(error));
    } finally {
      this.settling--;
    }
  }

  /**
   * One autocommit statement per batch, one round trip: the rebuild fence, the records, and a `write_batches` row
   * with the outcome, so that a batch whose answer is lost can be looked up.
   */
  private async commit(ops: RecordOp[]): Promise<RecordResult[]> {
    // Generations only grow: an operation decided under an older one than the batch's newest is stale already.
    const generation = ops.reduce((max, op) => (BigInt(op.generation) > BigInt(max) ? op.generation : max), ops[0]!.generation);
    const batchId = newId();
    let client: pg.PoolClient;
    let session: Session;
    try {
      client = await checkOut(this.pool);
    } catch (err) {
      throw new RecordError(false, err);
    }
    try {
      session = await sessionOf(client);
    } catch (err) {
      client.release(err as Error);
      throw new RecordError(false, err); // the batch was not sent
    }
    let broken: Error | undefined;
    // Before the statement can start: its `write_batches` row is younger than anything measured from here.
    const fateDeadline = performance.now() + this.fateDeadlineMs;
    try {
      const events = this.options.appendEvents ?? true;
      const { rows } = await client.query<Outcome>({
        // A named statement: each connection parses and plans this large statement once, not per batch.
        name: events ? 'record_batch' : 'record_batch_without_events',
        text: events ? RECORD_BATCH : RECORD_BATCH_WITHOUT_EVENTS,
        values: [generation, batchId, ...batchValues(ops.filter((op) => op.generation === generation), { events })],
      });
      const outcome = rows[0]!;
      for (const [type, n] of Object.entries(outcome.appended ?? {})) this.metrics.eventsAppended.inc({ type }, n);
      return resultsOf(ops, generation, outcome);
    } catch (err) {
      broken = err as Error;
      // An ERROR aborts the statement's transaction: nothing committed. Anything else (the connection died, a
      // timeout, a FATAL) may have struck before or after the commit: look the batch up.
      if ((err as { severity?: string }).severity === 'ERROR') throw new RecordError(false, err);
      throw new LostAnswer(err, session, batchId, ops, generation, fateDeadline);
    } finally {
      // After any error the connection may be dead or mid-statement: destroy it rather than reuse it.
      client.release(broken);
    }
  }

  /**
   * The fate of a batch whose answer was lost, asked on another connection: first make sure its backend is gone
   * (its statement could still commit), then look for the batch's row.
   *
   * No row means "not committed" only if the answer came before the batch's fate deadline: rows are kept for
   * `batchRetentionMs`, longer than the deadline, so until then a committed batch's row cannot have been pruned.
   * Past it the row may be gone, and the answer is 'unknown' (reconciliation and the sweeper settle the decision),
   * never `false`, which would undo a committed change.
   */
  private async lookUp(lost: LostAnswer): Promise<Outcome | false | 'unknown'> {
    const { session, batchId } = lost;
    if (performance.now() >= lost.fateDeadline) return 'unknown';
    try {
      // The backend is named by its start time too: once it has exited, its process id may be another session's
      // (Linux reuses them within minutes on a busy host), and that session must not be ended.
      const { rows: gone } = await this.pool.query<{ gone: boolean }>(
        `SELECT coalesce((SELECT pg_terminate_backend(pid, $3) FROM pg_stat_activity
                          WHERE pid = $1 AND backend_start = $2::timestamptz), true) AS gone`,
        [session.pid, session.started, TERMINATE_WAIT_MS],
      );
      // False also when the backend exited on its own between the lookup and the signal (its client was closed):
      // then it is gone too. pg_stat_activity is read once per transaction, so that is asked in a statement of its own.
      if (!gone[0]?.gone && !(await this.backendGone(session))) return 'unknown';
      const { rows } = await this.pool.query<Outcome>(
        'SELECT fenced_in, created::text[], moved::text[], stocked::text[] FROM write_batches WHERE id = $1',
        [batchId],
      );
      if (rows[0]) return rows[0];
      // The read's snapshot was taken before its answer arrived: if that was before the deadline, so was the read.
      return performance.now() < lost.fateDeadline ? false : 'unknown';
    } catch {
      return 'unknown';
    }
  }

  private async backendGone(session: Session): Promise<boolean> {
    const { rows } = await this.pool.query<{ gone: boolean }>(
      'SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND backend_start = $2::timestamptz) AS gone',
      [session.pid, session.started],
    );
    return rows[0]?.gone === true;
  }

  /**
   * Looks up until PostgreSQL answers or `giveUpAt` (performance.now() time, at most the batch's fate deadline)
   * passes, backing off between tries.
   */
  private async lookUpUntil(lost: LostAnswer, giveUpAt: number): Promise<Outcome | false | 'unknown'> {
    for (let wait = 100; ; wait = Math.min(2 * wait, 2_000)) {
      const outcome = await this.lookUp(lost);
      if (outcome !== 'unknown' || this.closed || performance.now() + wait > giveUpAt) return outcome;
      await new Promise((resolve) => setTimeout(resolve, wait).unref());
    }
  }
}

/** The batch statement's answer did not arrive: it may or may not have committed. */
class LostAnswer {
  constructor(
    readonly cause: unknown,
    /** The backend the batch was sent to. */
    readonly session: Session,
    readonly batchId: string,
    readonly ops: RecordOp[],
    readonly generation: string,
    /** performance.now() time after which a lookup cannot trust a missing `write_batches` row. */
    readonly fateDeadline: number,
  ) {}
}

/** How long a lookup waits for the lost batch's backend to exit. */
const TERMINATE_WAIT_MS = 5_000;
/**
 * How long after sending a batch the writer may still learn its fate (then 'unknown': reconciliation and the
 * sweeper settle what it decided). The one deadline of a batch's fate: `write_batches` rows are kept longer.
 */
export const FATE_DEADLINE_MS = 10 * 60_000;

/**
 * `write_batches` rows outlive their batch's fate deadline by half as long again: PostgreSQL stamps a row when its
 * statement starts, after the writer started the deadline's clock, so only a jump of PostgreSQL's clock could age a
 * row faster than the writer's deadline runs out; the margin absorbs one of minutes.
 */
export const batchRetentionMs = (fateDeadlineMs: number): number => Math.ceil(fateDeadlineMs * 1.5);

/** A PostgreSQL backend, exactly: its process id, and its start time as PostgreSQL prints it. */
interface Session {
  pid: number;
  started: string;
}

/** The backend of each writer connection, read once per connection (the pool reuses the client objects). */
const sessions = new WeakMap<pg.ClientBase, Promise<Session>>();

function sessionOf(client: pg.ClientBase): Promise<Session> {
  let session = sessions.get(client);
  if (!session) {
    session = client
      .query<Session>('SELECT pid, backend_start::text AS started FROM pg_stat_activity WHERE pid = pg_backend_pid()')
      .then(({ rows }) => {
        if (!rows[0]) throw new Error("PostgreSQL did not show the session's own backend");
        return rows[0];
      });
    sessions.set(client, session);
  }
  return session;
}

/**
 * Has each new connection of the writer's pool read its backend as it opens, ahead of anything sent on it, so that
 * its first batch goes out at once. (Without it, `commit` reads it before that batch.)
 */
export function readSessionsOnConnect(pool: pg.Pool): void {
  // A failure stays in the map: the batch that awaits it fails as not sent, and its connection is destroyed.
  pool.on('connect', (client) => void sessionOf(client).catch(() => {}));
}
