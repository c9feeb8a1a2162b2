import type pg from 'pg';
import type { FastifyBaseLogger as Logger } from 'fastify';
import { requestedLines, type RequestedLine } from '../domain/allocation.js';
import { decodeCursor, encodeCursor } from '../domain/cursor.js';
import { ProblemError, unavailable } from '../domain/errors.js';
import { newId } from '../domain/ids.js';
import { confirmedPairs, partlyConfirmed, type ConfirmedPair } from '../domain/partial-confirm.js';
import { effectiveStatus, pendingReservation, toDocument, type Line, type ReservationRecord } from '../domain/reservation.js';
import {
  DEFAULT_LIMIT,
  DEFAULT_LOCATION,
  DEFAULT_PRIORITY,
  DEFAULT_TTL_SECONDS,
  MAX_RELEASE_BY_REFERENCE,
  type ConfirmRequest,
  type ReferenceListQuery,
  type ReleasedByReference,
  type ReservationDocument,
  type ReservationPage,
  type ReservationRequest,
} from '../domain/schemas.js';
import { canAccess, visibleTenant, type Caller } from '../domain/tenancy.js';
import type { NodeLease } from '../jobs/node-lease.js';
import type { Metrics } from '../metrics.js';
import { mayHaveRun } from '../redis/client.js';
import type { Decisions, ReserveDecision, ReserveInput, SettleAction, SettleDecision } from '../redis/decisions.js';
import type { Keys } from '../redis/keys.js';
import { formatRecord, parseRecord, recordPrefix, recordSuffix } from '../redis/layout.js';
import { endSessionsOf } from '../store/nodes.js';
import type { Reads } from '../store/read-replica.js';
import { findByReference, findIdempotency, findReservation } from '../store/reservations.js';
import { RecordError, type BatchWriter, type RecordOp, type RecordResult } from '../store/writer.js';
import { admitted } from './admission.js';
import type { ReservationApi, ReserveAnswer } from './api.js';
import { compensate, recordFailed } from './compensation.js';
import { requestHash } from './idempotency.js';

export interface ReservationDeps {
  db: pg.Pool;
  /** The reads a replica may serve: GET by id and the listing by reference; every other read is the primary's (db). */
  reads: Reads;
  keys: Keys;
  decisions: Decisions;
  writer: BatchWriter;
  metrics: Metrics;
  log: Logger;
  idempotencyRetentionMs: number;
  /** This node's lease: its id goes into every claim, and other nodes' leases say whether theirs are in flight. */
  lease: NodeLease;
  /** How long ending a dead node's PostgreSQL sessions may wait for them to exit (below the query timeout). */
  sessionEndWaitMs: number;
}

/**
 * A record without a node id (written by a version before node leases) that PostgreSQL has no commit for is taken
 * as in flight while younger than this (longer than any request can take), and as left by a request that died
 * once older.
 */
const LEGACY_CLAIM_STALE_MS = 60_000;

type FreedReason = 'request_failed' | 'owner_lost' | 'outcome_never_learned' | 'legacy_timeout';
/** How long a duplicate confirm/release waits for the first one's commit before answering 503. */
const DUPLICATE_WAIT_MS = 2_000;
/** How often it asks Redis again meanwhile (`afterAnotherSettle`). */
const REDECIDE_MS = 100;

const lineLabel = (l: RequestedLine) =>
  l.location === null ? `${l.itemId} (allocated)` : l.location === DEFAULT_LOCATION ? l.itemId : `${l.itemId}@${l.location}`;

/**
 * Reserve, read, confirm and release: each mutation decides in Redis (one script), records in PostgreSQL
 * (group commit), and answers only after the commit; a failed record undoes the decision and answers 503.
 */
export class ReservationService implements ReservationApi {
  constructor(private readonly d: ReservationDeps) {}

  reserve(caller: Caller, key: string, request: ReservationRequest): Promise<ReserveAnswer> {
    return admitted(this.d, 'reserve', () => this.reserveAdmitted(caller, key, request));
  }

  private async reserveAdmitted(caller: Caller, key: string, request: ReservationRequest): Promise<ReserveAnswer> {
    const lines = requestedLines(request);
    const hash = requestHash(request);
    // A second try only follows freeing the key of a first request that died; a third would be a loop.
    const answer =
      (await this.tryReserve(caller, key, request, lines, hash)) ?? (await this.tryReserve(caller, key, request, lines, hash));
    if (!answer) throw inUse();
    return answer;
  }

  /** One attempt; null when the key's record belonged to a request that died and was just freed. */
  private async tryReserve(
    caller: Caller,
    key: string,
    request: ReservationRequest,
    requested: RequestedLine[],
    hash: string,
  ): Promise<ReserveAnswer | null> {
    const id = newId();
    const scope = caller.name;
    const ttlMs = (request.ttlSeconds ?? DEFAULT_TTL_SECONDS) * 1000;
    const idempotencyKey = this.d.keys.idempotency(scope, key);
    const prefix = recordPrefix(hash, id);
    const { lease } = this.d;

    const decision = await this.decideReserve(idempotencyKey, prefix, {
      reservationId: id,
      lines: requested,
      ttlMs,
      idempotencyKey,
      recordPrefix: prefix,
      recordSuffix: recordSuffix(lease.nodeId),
      recordTtlMs: this.d.idempotencyRetentionMs,
      header: {
        reference: request.reference ?? null,
        metadata: request.metadata ?? {},
        priority: request.priority ?? DEFAULT_PRIORITY,
        tenant: caller.tenant,
        allocation: request.allocation ?? null,
      },
      lease: { key: lease.key, ttlMs: lease.ttlMs },
    });
    switch (decision.kind) {
      case 'idempotent':
        return this.answerDuplicate(scope, key, idempotencyKey, hash, decision.record);
      case 'not_found':
        throw new ProblemError(
          'item_not_found',
          `not stocked: ${decision.lineIndexes.map((i) => notStockedLabel(requested[i]!)).join(', ')}`,
        );
      case 'insufficient': {
        this.d.metrics.reservations.inc({ outcome: 'insufficient' });
        const short = decision.short.map(({ lineIndex, available }) => ({ ...requested[lineIndex]!, available }));
        throw new ProblemError(
          'insufficient_stock',
          short.map((s) => `${lineLabel(s)}: requested ${s.quantity}, available ${s.available}`).join('; '),
          { lines: short.map((s) => ({ itemId: s.itemId, location: s.location, requested: s.quantity, available: s.available })) },
        );
      }
    }

    // What is held where: the script allocated the lines without a location.
    const { lines } = decision;
    const createdAt = new Date(decision.nowMs);
    const reservation = pendingReservation(id, request, lines, createdAt, caller.tenant);
    const body = toDocument(reservation, createdAt);
    const undo = () =>
      this.d.decisions.undoReserve({ generation: decision.generation, reservationId: id, lines, idempotencyKey, recordPrefix: prefix });
    const { metrics, log } = this.d;
    const operation = 'reserve';

    // From here the key is claimed for this attempt. Every way out but a commit lets the claim go before the
    // answer (a failed request binds nothing, api.md), so a retry is never told the key is in use by a request
    // that has already answered. Letting it go is safe even when this attempt's batch may still commit (its
    // answer lost, its statement still in PostgreSQL): the claim only spares duplicates a wasted decision, and
    // PostgreSQL's unique key on idempotency_keys decides. A retry that claims the key and holds units either
    // commits first (then this batch's insert of the key does nothing) or finds this one committed (`conflict`:
    // it undoes its own hold and replays this answer): one reservation either way. What a retry must not do is
    // answer "nothing was reserved" (409 insufficient_stock, 404) while this attempt may yet commit: so an attempt
    // whose outcome is unknown is not freed but marked, and duplicates get 503 until this node learns the outcome
    // (then undone and freed, or replayed from PostgreSQL).
    let marked = false;
    try {
      let result: RecordResult;
      try {
        result = await this.d.writer.submit({
          kind: 'reserve',
          generation: decision.generation,
          reservation,
          idempotency: { scope, key, requestHash: hash, statusCode: 201, response: body },
        });
      } catch (err) {
        if (err instanceof RecordError && err.committed === 'unknown') {
          // Before compensate sets the outcome's handlers going, which may free the record.
          marked = true;
          const claim = { hash, reservationId: id, claimedAtMs: decision.nowMs, nodeId: lease.nodeId, outcomeUnknown: true };
          await this.letGo(idempotencyKey, prefix, formatRecord(claim), null);
        }
        await compensate(err, undo, {
          operation,
          metrics,
          log,
          onCommittedAfterAll: () => this.afterLateCommit(id, undo, idempotencyKey, prefix),
          onNeverLearned: () => this.letGo(idempotencyKey, prefix, null, 'outcome_never_learned'),
        });
        throw recordFailed(err, { operation, log });
      }
      // Fenced out by a rebuild: nothing was written, and the rebuild (from PostgreSQL) dropped the holds.
      if (result === 'stale') throw unavailable('Redis was rebuilt while the request was in flight; nothing was applied, retry');
      if (result === 'conflict') {
        // PostgreSQL already knows this key (Redis lost its record, or another attempt's claim was freed): undo
        // our hold and answer as the first time.
        await undo();
        const replay = await this.replay(scope, key, hash);
        if (!replay) throw new Error('idempotency conflict without a recorded key');
        return replay;
      }
    } catch (err) {
      if (!marked) await this.letGo(idempotencyKey, prefix, null, 'request_failed');
      throw err;
    }
    metrics.reservations.inc({ outcome: 'created' });
    return { statusCode: 201, body };
  }

  /**
   * The reserve decision. Should Redis not answer, it may still have run the script (a command timeout, a connection
   * cut after the send): the key is then claimed by an attempt that answers 503, and retries would be told "in use"
   * for as long as the record lives. So the claim is let go, in the background until Redis answers (after the
   * script on the same connection, if it runs at all). Holds such a script left have no record in PostgreSQL: the
   * reconciler drops them.
   */
  private async decideReserve(idempotencyKey: string, prefix: string, input: ReserveInput): Promise<ReserveDecision> {
    try {
      return await this.d.decisions.reserve(input);
    } catch (err) {
      const cause = err instanceof ProblemError ? err.cause : err;
      if (cause !== undefined && mayHaveRun(cause)) void this.letGo(idempotencyKey, prefix, null, 'request_failed');
      throw err;
    }
  }

  /**
   * The batch of an attempt that answered 503 committed after all. If it created the reservation, PostgreSQL
   * replays it to retries. If PostgreSQL refused it (another attempt had recorded the key first, or the rebuild
   * fence), nothing holds its units or its key any more: give both back.
   */
  private async afterLateCommit(id: string, undo: () => Promise<boolean>, idempotencyKey: string, prefix: string): Promise<void> {
    // PostgreSQL just answered; should this read fail, ask again (the mark keeps retries at 503 until then).
    for (let wait = 100; ; wait = Math.min(2 * wait, 2_000)) {
      try {
        if (await findReservation(this.d.db, id)) return;
        break;
      } catch (err) {
        if (!this.d.lease.running) throw err;
      }
      await new Promise((resolve) => setTimeout(resolve, wait).unref());
    }
    await undo();
    await this.letGo(idempotencyKey, prefix, null, 'request_failed');
  }

  /**
   * Lets this node's claim for the attempt `prefix` go: deletes it, or rewrites it as `replacement`. The first try
   * is awaited (before the answer); if Redis cannot be reached, later tries go on in the background until it
   * answers, or until this node closes (its lease then lapses, which frees its claims as well).
   */
  private async letGo(idempotencyKey: string, prefix: string, replacement: string | null, reason: FreedReason | null): Promise<void> {
    const attempt = async (): Promise<boolean> => {
      try {
        if ((await this.d.decisions.forgetClaim(idempotencyKey, prefix, replacement ?? '')) && reason) {
          this.d.metrics.claimsFreed.inc({ reason });
        }
        return true;
      } catch {
        return false;
      }
    };
    if (await attempt()) return;
    this.d.log.warn({ idempotencyKey }, 'could not let go of an idempotency claim (Redis unreachable); retrying in the background');
    void (async () => {
      for (let wait = 100; this.d.lease.running; wait = Math.min(2 * wait, 2_000)) {
        await new Promise((resolve) => setTimeout(resolve, wait).unref());
        if (await attempt()) return;
      }
    })();
  }

  /**
   * The key has a Redis record. PostgreSQL says whether its request committed: then replay it (or 422 for
   * another body). If not, the claim's node decides: while its lease lives the request is in flight (409, or 422
   * for another body; 503 if it answered without learning whether it committed); once the lease lapsed the
   * process died, and the claim is freed at once (null: the caller tries again).
   */
  private async answerDuplicate(
    scope: string,
    key: string,
    idempotencyKey: string,
    hash: string,
    record: string,
  ): Promise<ReserveAnswer | null> {
    const replay = await this.replay(scope, key, hash);
    if (replay) return replay;
    const claim = parseRecord(record);
    let reason: FreedReason;
    if (claim.nodeId === null) {
      if (Date.now() - claim.claimedAtMs < LEGACY_CLAIM_STALE_MS) throw claim.hash === hash ? inUse() : reused();
      reason = 'legacy_timeout';
    } else if (claim.nodeId === this.d.lease.nodeId || (await this.isAlive(claim.nodeId))) {
      if (claim.hash !== hash) throw reused();
      throw claim.outcomeUnknown ? outcomeUnknown() : inUse();
    } else {
      // Its process died. A statement it sent may still be running in PostgreSQL (blocked on a lock) and commit
      // later: end its sessions first, so PostgreSQL's answer now is final. Otherwise a retry could answer
      // "nothing was reserved" for an attempt that then commits.
      if (!(await this.read(() => endSessionsOf(this.d.db, claim.nodeId!, this.d.sessionEndWaitMs)))) {
        throw unavailable('the request that held this Idempotency-Key is still ending; retry');
      }
      const late = await this.replay(scope, key, hash);
      if (late) return late;
      reason = 'owner_lost';
    }
    if (await this.d.decisions.forgetClaim(idempotencyKey, recordPrefix(claim.hash, claim.reservationId))) {
      this.d.metrics.claimsFreed.inc({ reason });
    }
    return null;
  }

  private async isAlive(nodeId: string): Promise<boolean> {
    try {
      return await this.d.lease.isAlive(nodeId);
    } catch (err) {
      throw unavailable('Redis is unreachable', err);
    }
  }

  /** The first answer PostgreSQL recorded for this key, or null; 422 if it was for another body. */
  private async replay(scope: string, key: string, hash: string): Promise<ReserveAnswer | null> {
    const first = await this.read(() => findIdempotency(this.d.db, scope, key));
    if (!first) return null;
    if (first.requestHash !== hash) throw reused();
    this.d.metrics.reservations.inc({ outcome: 'replayed' });
    const body = JSON.parse(first.response) as Omit<ReservationDocument, 'version'> & { version?: number };
    // A first answer sent before versions existed had none: the reservation was at 1 when it was made.
    return { statusCode: first.statusCode, body: { ...body, version: body.version ?? 1 }, replayed: true };
  }

  /**
   * From the replica only a reservation that has ended: ended ones never change again, so the replica's copy is the
   * primary's. A pending one (the replica may not have its confirm, release or extension yet) or a missing one (it may
   * not have its creation yet) is read again from the primary: this read never lags, so a caller always sees its own
   * writes here.
   */
  async get(caller: Caller, id: string): Promise<ReservationDocument> {
    const r = await this.read(() =>
      this.d.reads.run('reservation', (db) => findReservation(db, id), (found) => (found === null ? 'not_found' : found.status === 'pending' ? 'pending' : null)),
    );
    if (!r || !canAccess(caller, r.tenant)) throw notFound(id);
    return toDocument(r);
  }

  confirm(caller: Caller, id: string, ifMatch: number | null = null, request?: ConfirmRequest): Promise<ReservationDocument> {
    const pairs = confirmedPairs(request);
    return admitted(this.d, 'confirm', () => this.settle(caller, 'confirm', id, ifMatch, pairs));
  }

  release(caller: Caller, id: string, ifMatch: number | null = null): Promise<ReservationDocument> {
    return admitted(this.d, 'release', () => this.settle(caller, 'release', id, ifMatch, null));
  }

  extend(caller: Caller, id: string, ttlSeconds: number, ifMatch: number | null = null): Promise<ReservationDocument> {
    return admitted(this.d, 'extend', () => this.extendAdmitted(caller, id, ttlSeconds * 1000, ifMatch));
  }

  /**
   * The extend script decides (pending and unexpired, If-Match, then the new expiry, in one step); PostgreSQL
   * records it before the answer, or the decision is taken back (503). As for settle, the cached header gives the
   * lines and the tenant; without it, PostgreSQL's record does.
   */
  private async extendAdmitted(caller: Caller, id: string, ttlMs: number, ifMatch: number | null): Promise<ReservationDocument> {
    const cached = await this.d.decisions.header(id);
    let r: ReservationRecord;
    if (cached) {
      if (!canAccess(caller, cached.tenant)) throw notFound(id);
      r = fromHeader(id, cached);
    } else {
      r = await this.loadFor(caller, id);
      if (r.status !== 'pending') return extendEnded(r, ifMatch);
    }
    const decision = await this.d.decisions.extend(id, r.lines, ttlMs, ifMatch);
    switch (decision.kind) {
      case 'extended':
        return this.recordExtend(r, decision);
      case 'precondition':
        throw preconditionFailed(ifMatch!, decision.version);
      case 'confirmed':
      case 'released':
      case 'expired':
        throw ended(decision.kind);
      case 'missing': {
        // Redis has no holds: PostgreSQL's record says what became of it (expired once its TTL passed).
        const now = await this.loadFor(caller, id);
        if (now.status !== 'pending' || Date.now() >= now.expiresAt.getTime()) return extendEnded(now, ifMatch);
        this.d.log.error({ reservationId: id }, 'pending reservation has no holds in Redis');
        throw unavailable('reservation state is being repaired; retry');
      }
    }
  }

  private async recordExtend(
    r: ReservationRecord,
    decision: { generation: string; nowMs: number; version: number; expiresMs: number; previousExpiresMs: number },
  ): Promise<ReservationDocument> {
    const at = new Date(decision.nowMs);
    const expiresAt = new Date(decision.expiresMs);
    const document = toDocument({ ...r, status: 'pending', expiresAt, updatedAt: at, version: decision.version }, at);
    // A shortened hold may have expired at its new time before the undo, its units taken since: then the undo
    // cannot hold it again, and the answer is what it is, expired (the sweeper records it so), not "nothing applied".
    let expiredMeanwhile = false;
    const undo = async () => {
      const undone = await this.d.decisions.undoExtend(decision.generation, r.id, r.lines, decision);
      expiredMeanwhile ||= undone === 'expired';
      return undone !== 'stale';
    };
    let result: Awaited<ReturnType<typeof this.record>>;
    try {
      result = await this.record(
        { kind: 'extend', generation: decision.generation, reservationId: r.id, expiresAt, at, version: decision.version, document },
        'extend',
        undo,
      );
    } catch (err) {
      if (expiredMeanwhile) throw await this.expiredMeanwhile(r, decision);
      throw err;
    }
    if (result === 'conflict') {
      // PostgreSQL has the reservation ended, or at another version: it has the last word.
      const now = await this.load(r.id);
      if (now.status !== 'pending') throw ended(now.status);
      // Pending at another version: this extension was never recorded, so it is taken back as a failed record is
      // (undo_extend leaves a later decision on the holds alone).
      await undo();
      if (expiredMeanwhile) throw await this.expiredMeanwhile(r, decision);
      throw unavailable('another change to this reservation is being recorded; retry');
    }
    this.d.metrics.reservations.inc({ outcome: 'extended' });
    return document;
  }

  /**
   * An extension whose record failed had shortened the holds, which expired at their new time and could not be held
   * again: the reservation is expired. Its expiry is recorded at once if PostgreSQL takes it (else the sweeper does,
   * once PostgreSQL's own expiry passed), so that PostgreSQL does not call it pending meanwhile.
   */
  private async expiredMeanwhile(r: ReservationRecord, decision: { generation: string; version: number; expiresMs: number }): Promise<ProblemError> {
    const expiresAt = new Date(decision.expiresMs);
    const version = decision.version + 1;
    const document = toDocument({ ...r, status: 'expired', expiresAt, updatedAt: expiresAt, version }, expiresAt);
    await this.d.writer
      .submit({ kind: 'transition', generation: decision.generation, reservationId: r.id, to: 'expired', at: expiresAt, lines: r.lines, version, expiresAt, document })
      .catch((err: unknown) => this.d.log.warn({ err, reservationId: r.id }, 'could not record an expiry now; the sweeper will'));
    return ended('expired');
  }

  async listByReference(caller: Caller, query: ReferenceListQuery): Promise<ReservationPage> {
    const after = query.cursor === undefined ? null : decodeCursor(query.cursor);
    if (query.cursor !== undefined && !after) {
      const message = 'is not a cursor this service issued (pass `nextCursor` as it came)';
      throw new ProblemError('validation_failed', `cursor: ${message}`, { errors: [{ field: 'cursor', message }] });
    }
    const limit = query.limit ?? DEFAULT_LIMIT;
    const now = new Date();
    // One row more than the page: whether there is a next page, without a count.
    // A replica may serve it: up to DATABASE_REPLICA_MAX_LAG_MS behind (a reservation created or changed that recently
    // may be missing or show its former state).
    const rows = await this.read(() =>
      this.d.reads.run('reference', (db) =>
        findByReference(db, { reference: query.reference, tenant: visibleTenant(caller), status: query.status ?? null, now, after, limit: limit + 1 }),
      ),
    );
    const page = rows.slice(0, limit);
    const last = page.at(-1);
    return {
      items: page.map((r) => toDocument(r.record, now)),
      nextCursor: rows.length > limit && last ? encodeCursor(last.position) : null,
    };
  }

  releaseByReference(caller: Caller, reference: string): Promise<ReleasedByReference> {
    return admitted(this.d, 'release', () => this.releaseReference(caller, reference));
  }

  /**
   * A saga's compensation: each reservation of the reference that PostgreSQL has as pending goes through the release
   * decision, all at once so that their records share group-commit batches. A confirm that wins the race for one
   * stays confirmed. The answer is every reservation of the reference as it ended (or is, if created meanwhile: then
   * pending, and a second call releases it). Idempotent: a second call finds nothing pending and answers the same.
   */
  private async releaseReference(caller: Caller, reference: string): Promise<ReleasedByReference> {
    const now = new Date();
    const rows = await this.read(() =>
      findByReference(this.d.db, { reference, tenant: visibleTenant(caller), status: null, now, after: null, limit: MAX_RELEASE_BY_REFERENCE + 1 }),
    );
    if (rows.length > MAX_RELEASE_BY_REFERENCE) {
      throw new ProblemError(
        'too_many_reservations',
        `reference ${reference} has more than ${MAX_RELEASE_BY_REFERENCE} reservations; release them one by one`,
      );
    }
    const ended = new Map<string, ReservationDocument>();
    await Promise.all(
      rows
        .filter(({ record }) => record.status === 'pending')
        .map(async ({ record }) => ended.set(record.id, await this.releaseOfReference(caller, record.id))),
    );
    return { reference, items: rows.map(({ record }) => ended.get(record.id) ?? toDocument(record, now)) };
  }

  /** Releases one reservation of a reference: released (or expired), or confirmed if a confirm won the race. */
  private async releaseOfReference(caller: Caller, id: string): Promise<ReservationDocument> {
    try {
      return await this.settle(caller, 'release', id, null, null);
    } catch (err) {
      // The confirm decided first; its record may still be on its way: answer with the reservation as PostgreSQL
      // ends it (confirmed, or expired if that confirm is never recorded and the sweeper ends it).
      if (err instanceof ProblemError && err.code === 'reservation_confirmed') return await this.awaitEnded(id, (ended) => toDocument(ended));
      throw err;
    }
  }

  /**
   * Confirm or release. The hot path needs Redis only: the header the reserve script cached gives the lines,
   * and the holds' states decide. Without a header, or when Redis has no holds, PostgreSQL's record decides.
   * Either way tenancy is checked before anything is decided: another tenant's reservation is not found.
   *
   * `ifMatch` is checked where the transition is decided: by the settle script, in the same step. Only a
   * reservation that ended (whose version never changes again) is compared here, and one PostgreSQL calls pending
   * past its TTL whose holds Redis no longer has (expired: no script can settle it any more).
   *
   * `pairs` (a partial confirm) are judged against the reservation's lines before anything else: a pair it does
   * not hold is a 400 whatever its state.
   */
  private async settle(
    caller: Caller,
    action: SettleAction,
    id: string,
    ifMatch: number | null,
    pairs: ConfirmedPair[] | null,
  ): Promise<ReservationDocument> {
    const settled = (r: ReservationRecord) => (pairs ? partlyConfirmed(r.lines, pairs) : r.lines);
    const cached = await this.d.decisions.header(id);
    if (cached) {
      if (!canAccess(caller, cached.tenant)) throw notFound(id);
      const r = fromHeader(id, cached);
      const answer = await this.decide(action, r, settled(r), ifMatch);
      if (answer) return answer;
    }
    const r = await this.loadFor(caller, id);
    const lines = settled(r);
    if (r.status !== 'pending') return finalAnswer(action, r, ifMatch);
    const answer = await this.decide(action, r, lines, ifMatch);
    if (answer) return answer;
    // PostgreSQL says pending, Redis has no holds: expired if the TTL passed, else state is being repaired.
    if (Date.now() >= r.expiresAt.getTime()) return finalAnswer(action, r, ifMatch);
    this.d.log.error({ reservationId: id }, 'pending reservation has no holds in Redis');
    throw unavailable('reservation state is being repaired; retry');
  }

  /**
   * The settle script's verdict on a reservation believed pending; null when Redis has none of its holds. `lines`
   * are its lines as they end: with the units each sells, for a partial confirm.
   */
  private async decide(
    action: SettleAction,
    r: ReservationRecord,
    lines: Line[],
    ifMatch: number | null,
  ): Promise<ReservationDocument | null> {
    const decision = await this.d.decisions.settle(action, r.id, lines, ifMatch);
    return this.answerSettle(action, r, lines, ifMatch, decision);
  }

  private async answerSettle(
    action: SettleAction,
    r: ReservationRecord,
    lines: Line[],
    ifMatch: number | null,
    decision: SettleDecision,
  ): Promise<ReservationDocument | null> {
    switch (decision.kind) {
      case 'settled': {
        // The holds' expiry, not the header's as read before: an extension may have moved it since.
        const ending = { ...r, lines, expiresAt: new Date(decision.expiresMs) };
        return this.recordSettle(action, ending, decision.generation, decision.nowMs, decision.version);
      }
      case 'precondition':
        throw preconditionFailed(ifMatch!, decision.version);
      case 'already':
      case 'confirmed':
      case 'released':
        // Settled by another request, this way (a duplicate) or the other: answer as PostgreSQL records it (or, if
        // that decision's node died before its record, the expiry the sweeper records instead). The script checked
        // If-Match already.
        return this.afterAnotherSettle(action, r, lines, ifMatch);
      case 'expired': {
        // The sweeper records it (the script checked If-Match already).
        const expiresAt = new Date(decision.expiresMs);
        return finalAnswer(action, { ...r, status: 'expired', expiresAt, updatedAt: expiresAt, version: decision.version }, null);
      }
      case 'missing':
        return null;
      case 'insufficient': {
        const short = decision.short.map(({ lineIndex, onHand }) => {
          const l = lines[lineIndex]!;
          return { itemId: l.itemId, location: l.location, requested: l.confirmedQuantity ?? l.quantity, available: onHand };
        });
        throw new ProblemError(
          'insufficient_stock',
          short.map((s) => `${lineLabel({ ...s, quantity: s.requested })}: on hand ${s.available} no longer covers ${s.requested}`).join('; '),
          { lines: short },
        );
      }
    }
  }

  private async recordSettle(
    action: SettleAction,
    r: ReservationRecord,
    generation: string,
    nowMs: number,
    version: number,
  ): Promise<ReservationDocument> {
    const to = action === 'confirm' ? 'confirmed' : 'released';
    const at = new Date(nowMs);
    const document = toDocument({ ...r, status: to, updatedAt: at, version }, at);
    const result = await this.record(
      { kind: 'transition', generation, reservationId: r.id, to, at, lines: r.lines, version, expiresAt: r.expiresAt, document },
      action,
      () => this.d.decisions.undoSettle(action, generation, r.id, r.lines),
    );
    if (result === 'conflict') {
      // The sweeper recorded the expiry first (our request outlived its grace); PostgreSQL has the last word.
      const now = await this.load(r.id);
      if (now.status === to || (action === 'release' && now.status === 'expired')) return toDocument(now);
      throw ended(now.status === 'pending' ? 'expired' : now.status);
    }
    this.d.metrics.reservations.inc({ outcome: to });
    return document;
  }

  /**
   * Records a decision; on failure undoes it in Redis (unless the commit may have happened: then the decision
   * stands, and the sweeper or reconciliation settles it) and answers 503.
   */
  private async record(op: RecordOp, operation: string, undo: () => Promise<boolean>): Promise<Exclude<RecordResult, 'stale'>> {
    let result: RecordResult;
    try {
      result = await this.d.writer.submit(op);
    } catch (err) {
      await compensate(err, undo, { operation, metrics: this.d.metrics, log: this.d.log });
      throw recordFailed(err, { operation, log: this.d.log });
    }
    if (result === 'stale') throw unavailable('Redis was rebuilt while the request was in flight; nothing was applied, retry');
    return result;
  }

  /**
   * Another request settled the reservation in Redis: answered once PostgreSQL records it ended, however (the
   * sweeper may record the expiry of a decision never recorded), by the idempotent rule whatever this one's If-Match.
   * Meanwhile Redis is asked again every REDECIDE_MS: on a cluster that decision may be taken back (a later slot
   * refused it and the earlier ones were undone), and then no record comes, but this request may now settle it.
   */
  private afterAnotherSettle(action: SettleAction, r: ReservationRecord, lines: Line[], ifMatch: number | null): Promise<ReservationDocument> {
    return this.awaitEnded(
      r.id,
      (ended) => finalAnswer(action, ended, null),
      async () => {
        const again = await this.d.decisions.settle(action, r.id, lines, ifMatch);
        if (again.kind === 'already' || again.kind === 'confirmed' || again.kind === 'released') return null;
        return this.answerSettle(action, r, lines, ifMatch, again);
      },
    );
  }

  /**
   * `answer` of the reservation once PostgreSQL has it ended; 503 if that takes longer than a duplicate may wait.
   * `meanwhile`, if given, is asked every REDECIDE_MS: an answer it gives ends the wait.
   */
  private async awaitEnded<T>(id: string, answer: (ended: ReservationRecord) => T, meanwhile?: () => Promise<T | null>): Promise<T> {
    const deadline = Date.now() + DUPLICATE_WAIT_MS;
    for (let asked = Date.now(); ; ) {
      const r = await this.load(id);
      if (r.status !== 'pending') return answer(r);
      if (Date.now() >= deadline) throw unavailable('another request is settling this reservation; retry');
      await new Promise((resolve) => setTimeout(resolve, 20));
      if (!meanwhile || Date.now() - asked < REDECIDE_MS) continue;
      asked = Date.now();
      const answered = await meanwhile();
      if (answered) return answered;
    }
  }

  private async load(id: string): Promise<ReservationRecord> {
    const r = await this.read(() => findReservation(this.d.db, id));
    if (!r) throw notFound(id);
    return r;
  }

  /** The reservation if the caller may see it; another tenant's answers exactly as a missing one. */
  private async loadFor(caller: Caller, id: string): Promise<ReservationRecord> {
    const r = await this.load(id);
    if (!canAccess(caller, r.tenant)) throw notFound(id);
    return r;
  }

  private async read<T>(query: () => Promise<T>): Promise<T> {
    try {
      return await query();
    } catch (err) {
      throw unavailable('PostgreSQL is unreachable', err);
    }
  }
}

const notFound = (id: string) => new ProblemError('reservation_not_found', `no reservation ${id}`);

const inUse = () => new ProblemError('idempotency_key_in_use', 'a request with this Idempotency-Key is still being processed');

const reused = () =>
  new ProblemError('idempotency_key_reused', 'this Idempotency-Key was used with a different request body');

const outcomeUnknown = () =>
  unavailable(
    'an earlier request with this Idempotency-Key is waiting to learn whether PostgreSQL recorded it; retry with the same key',
  );

/**
 * The answer for a reservation that already ended: the same document when it ended the way asked (a repeated call,
 * whatever its If-Match), else 412 if `ifMatch` names another version than the one it ended at, else the same
 * document for a release of an expired one (api.md), else the matching 409. An ended reservation's version never
 * changes again, so comparing it here decides nothing a script could decide otherwise.
 */
function finalAnswer(action: SettleAction, r: ReservationRecord, ifMatch: number | null): ReservationDocument {
  const document = toDocument(r);
  const status = document.status === 'pending' ? 'expired' : document.status;
  if (status === (action === 'confirm' ? 'confirmed' : 'released')) return document;
  if (ifMatch !== null && ifMatch !== document.version) throw preconditionFailed(ifMatch, document.version);
  if (action === 'release' && status === 'expired') return document;
  throw ended(status);
}

/** Extend of a reservation that ended (or is past its TTL): 412 for another version named, else its 409. */
function extendEnded(r: ReservationRecord, ifMatch: number | null): never {
  const document = toDocument(r);
  if (ifMatch !== null && ifMatch !== document.version) throw preconditionFailed(ifMatch, document.version);
  throw ended(document.status === 'pending' ? 'expired' : document.status);
}

const preconditionFailed = (ifMatch: number, version: number) =>
  new ProblemError('precondition_failed', `If-Match names version ${ifMatch}; the reservation is at version ${version}`);

const ended = (status: 'released' | 'expired' | 'confirmed') =>
  new ProblemError(
    status === 'released' ? 'reservation_released' : status === 'expired' ? 'reservation_expired' : 'reservation_confirmed',
    `the reservation is ${status}`,
  );

/**
 * The lines of a request without allocation (the bench's baselines, which have none): default locations resolved,
 * a repeated (itemId, location) pair rejected (api.md: at most once).
 */
export function normaliseLines(request: ReservationRequest): Line[] {
  return requestedLines({ lines: request.lines }) as Line[];
}

/** An item not stocked where a line asked: at its location, or (allocated) at any of its candidates. */
const notStockedLabel = (l: RequestedLine) => (l.location === null ? `${l.itemId} (at none of the candidate locations)` : lineLabel(l));

/**
 * The pending record the reserve script's cached header describes. Its version is not read: the script deciding on
 * it says the version of every answer made from this record.
 */
function fromHeader(id: string, cached: CachedHeader): ReservationRecord {
  return {
    id,
    tenant: cached.tenant,
    status: 'pending',
    reference: cached.reference,
    metadata: cached.metadata,
    priority: cached.priority,
    lines: cached.lines,
    expiresAt: new Date(cached.expiresMs),
    createdAt: new Date(cached.createdMs),
    updatedAt: new Date(cached.createdMs),
    allocation: cached.allocation,
    version: 1,
  };
}

type CachedHeader = NonNullable<Awaited<ReturnType<Decisions['header']>>>;
