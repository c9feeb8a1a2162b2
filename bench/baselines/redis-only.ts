import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { ProblemError, unavailable } from '../../src/domain/errors.js';
import { newId } from '../../src/domain/ids.js';
import { toAvailability, toDocument, type Line, type ReservationRecord } from '../../src/domain/reservation.js';
import {
  DEFAULT_PRIORITY,
  DEFAULT_TTL_SECONDS,
  type Allocation,
  type Priority,
  type AvailabilityDocument,
  type ConfirmRequest,
  type ReleasedByReference,
  type ReservationDocument,
  type ReservationPage,
  type ReservationRequest,
  type ReservationStatus,
} from '../../src/domain/schemas.js';
import type { Decisions, SettleAction } from '../../src/redis/decisions.js';
import type { Keys } from '../../src/redis/keys.js';
import { parseRecord, recordPrefix, recordSuffix } from '../../src/redis/layout.js';
import { canAccess, type Caller } from '../../src/domain/tenancy.js';
import type { ReservationApi, ReserveAnswer, StockApi } from '../../src/service/api.js';
import { requestHash } from '../../src/service/idempotency.js';
import type { NodeLease } from '../../src/jobs/node-lease.js';
import { requestedLines } from '../../src/domain/allocation.js';

/**
 * The ceiling: the same Lua decisions as the real service (src/redis/decisions.ts) and no durable record at all.
 * The reservation header (status, lines, times) lives in Redis beside the holds, so reserve costs one script
 * call plus one write, and confirm/release one read, one script call and one write. Nothing reaches
 * PostgreSQL: an acknowledged reservation is lost with Redis. Only a benchmark baseline.
 */

/** How long a header and an idempotency record live: the idempotency retention. */
const RETENTION_MS = 24 * 3_600_000;

interface StoredHeader {
  id: string;
  status: ReservationStatus;
  reference: string | null;
  metadata: Record<string, string>;
  /** Absent in headers stored before priorities: normal. */
  priority?: Priority;
  lines: Line[];
  expiresAt: number;
  createdAt: number;
  updatedAt: number;
  tenant: string;
  /** Absent in headers stored before allocation: none. */
  allocation?: Allocation | null;
}

export class RedisOnlyDesign {
  readonly reservations: ReservationApi;
  readonly stock: StockApi;

  constructor(redis: Redis, keys: Keys, decisions: Decisions, lease: NodeLease) {
    this.reservations = new RedisOnlyReservations(redis, keys, decisions, lease);
    this.stock = new RedisOnlyStock(decisions);
  }
}

class RedisOnlyReservations implements ReservationApi {
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly decisions: Decisions,
    private readonly lease: NodeLease,
  ) {}

  /** Baseline-owned key (the service's key builder has no reservation headers: it keeps them in PostgreSQL). */
  private headerKey(id: string): string {
    return `${this.keys.prefix}{r:${id}}:header`;
  }

  async reserve(caller: Caller, key: string, request: ReservationRequest): Promise<ReserveAnswer> {
    const lines = requestedLines(request);
    const hash = requestHash(request);
    const id = newId();
    const ttlMs = (request.ttlSeconds ?? DEFAULT_TTL_SECONDS) * 1000;
    const idempotencyKey = this.keys.idempotency(caller.name, key);
    const decision = await this.decisions.reserve({
      reservationId: id,
      lines,
      ttlMs,
      idempotencyKey,
      recordPrefix: recordPrefix(hash, id),
      recordSuffix: recordSuffix(this.lease.nodeId),
      recordTtlMs: RETENTION_MS,
      header: {
        reference: request.reference ?? null,
        metadata: request.metadata ?? {},
        priority: request.priority ?? DEFAULT_PRIORITY,
        tenant: caller.tenant,
        allocation: request.allocation ?? null,
      },
      lease: { key: this.lease.key, ttlMs: this.lease.ttlMs },
    });
    switch (decision.kind) {
      case 'idempotent':
        return this.replay(hash, decision.record);
      case 'not_found':
        throw new ProblemError('item_not_found', `not stocked: ${decision.lineIndexes.map((i) => lines[i]!.itemId).join(', ')}`);
      case 'insufficient': {
        const short = decision.short.map(({ lineIndex, available }) => ({ ...lines[lineIndex]!, available }));
        throw new ProblemError('insufficient_stock', short.map((s) => `${s.itemId}: requested ${s.quantity}, available ${s.available}`).join('; '), {
          lines: short.map((s) => ({ itemId: s.itemId, location: s.location, requested: s.quantity, available: s.available })),
        });
      }
    }
    // The reserve script cached the pending header (the same one the durable design uses); this baseline
    // writes its own copy only when the status changes.
    const header: StoredHeader = {
      id,
      status: 'pending',
      reference: request.reference ?? null,
      metadata: request.metadata ?? {},
      priority: request.priority ?? DEFAULT_PRIORITY,
      lines: decision.lines,
      expiresAt: decision.nowMs + ttlMs,
      createdAt: decision.nowMs,
      updatedAt: decision.nowMs,
      tenant: caller.tenant,
      allocation: request.allocation ?? null,
    };
    const record = toRecord(header);
    return { statusCode: 201, body: toDocument(record, record.createdAt) };
  }

  private async replay(hash: string, record: string): Promise<ReserveAnswer> {
    const first = parseRecord(record);
    if (first.hash !== hash) throw new ProblemError('idempotency_key_reused', 'this Idempotency-Key was used with a different request body');
    // The script claimed the key; the first request writes the header right after: until then it is in flight.
    const header = await this.loadHeader(first.reservationId);
    if (!header) throw new ProblemError('idempotency_key_in_use', 'a request with this Idempotency-Key is still being processed');
    // The first answer as first sent: a pending document as of its creation.
    const created = toRecord({ ...header, status: 'pending', updatedAt: header.createdAt });
    return { statusCode: 201, body: toDocument(created, created.createdAt), replayed: true };
  }

  async get(caller: Caller, id: string): Promise<ReservationDocument> {
    return toDocument(toRecord(await this.load(caller, id)));
  }

  async confirm(caller: Caller, id: string, _ifMatch?: number | null, request?: ConfirmRequest): Promise<ReservationDocument> {
    if (request?.lines) throw new ProblemError('not_found', 'the redis-only baseline does not confirm partly');
    return this.settle(caller, 'confirm', id);
  }

  async release(caller: Caller, id: string): Promise<ReservationDocument> {
    return this.settle(caller, 'release', id);
  }

  // The saga operations (extend, partial confirm, by reference) are the service's own: this baseline measures reserve, confirm and release.
  extend(): Promise<ReservationDocument> {
    return Promise.reject(new ProblemError('not_found', 'the redis-only baseline does not extend'));
  }

  listByReference(): Promise<ReservationPage> {
    return Promise.reject(new ProblemError('not_found', 'the redis-only baseline does not list by reference'));
  }

  releaseByReference(): Promise<ReleasedByReference> {
    return Promise.reject(new ProblemError('not_found', 'the redis-only baseline does not release by reference'));
  }

  private async settle(caller: Caller, action: SettleAction, id: string): Promise<ReservationDocument> {
    const header = await this.load(caller, id);
    const target = action === 'confirm' ? 'confirmed' : 'released';
    const record = toRecord(header);
    const status = toDocument(record).status;
    if (status === target) return toDocument(record);
    if (status === 'expired' && action === 'release') return toDocument(record);
    if (status !== 'pending') throw ended(status);

    const decision = await this.decisions.settle(action, id, header.lines);
    switch (decision.kind) {
      case 'settled': {
        const next: StoredHeader = { ...header, status: target, updatedAt: decision.nowMs };
        try {
          await this.redis.set(this.headerKey(id), JSON.stringify(next), 'PX', RETENTION_MS);
        } catch (err) {
          throw unavailable('Redis is unreachable', err);
        }
        return toDocument(toRecord(next), new Date(decision.nowMs));
      }
      case 'already':
        return toDocument({ ...record, status: target });
      case 'confirmed':
      case 'released':
        if (decision.kind === target) return toDocument({ ...record, status: target });
        throw ended(decision.kind);
      case 'expired':
      case 'missing':
        if (action === 'release') return toDocument({ ...record, status: 'expired', updatedAt: record.expiresAt });
        throw ended('expired');
      case 'insufficient':
        throw new ProblemError('insufficient_stock', 'on hand no longer covers this reservation');
      case 'precondition':
        throw new Error('unreachable: this baseline sends no If-Match');
    }
  }

  /** The settled header this baseline wrote, else the pending one the reserve script cached. */
  private async loadHeader(id: string): Promise<StoredHeader | null> {
    let raw: string | null;
    try {
      raw = await this.redis.get(this.headerKey(id));
    } catch (err) {
      throw unavailable('Redis is unreachable', err);
    }
    if (raw !== null) return JSON.parse(raw) as StoredHeader;
    const cached = await this.decisions.header(id);
    if (!cached) return null;
    const { reference, metadata, lines, createdMs, expiresMs, tenant } = cached;
    return { id, status: 'pending', reference, metadata, lines, expiresAt: expiresMs, createdAt: createdMs, updatedAt: createdMs, tenant };
  }

  /** Tenancy as the service has it (src/domain/tenancy.ts): another tenant's reservation is not found. */
  private async load(caller: Caller, id: string): Promise<StoredHeader> {
    const header = await this.loadHeader(id);
    if (!header || !canAccess(caller, header.tenant)) throw new ProblemError('reservation_not_found', `no reservation ${id}`);
    return header;
  }
}

class RedisOnlyStock implements StockApi {
  constructor(private readonly decisions: Decisions) {}

  async availability(itemId: string): Promise<AvailabilityDocument> {
    const stock = await this.decisions.availability(itemId);
    const document = stock && toAvailability(itemId, stock);
    if (!document) throw new ProblemError('item_not_found', `${itemId} is not stocked`);
    return document;
  }

  set(itemId: string, location: string, quantity: number): Promise<AvailabilityDocument> {
    return this.change(itemId, location, 'set', quantity);
  }

  adjust(itemId: string, location: string, delta: number): Promise<AvailabilityDocument> {
    return this.change(itemId, location, 'adjust', delta);
  }

  private async change(itemId: string, location: string, mode: 'set' | 'adjust', amount: number): Promise<AvailabilityDocument> {
    const opId = randomUUID();
    const decision = await this.decisions.changeStock(itemId, location, mode, amount, { opId, nodeId: 'redis-only' });
    switch (decision.kind) {
      case 'changed': {
        // No record to wait for: the decision's intent is ended at once (an increase applied).
        const applied = decision.intent
          ? await this.decisions.endStockChange(itemId, decision.pending ? 'apply' : 'settle', opId, decision)
          : decision;
        const document = applied.kind === 'changed' ? toAvailability(itemId, applied.stock) : null;
        if (!document) throw unavailable('Redis was rebuilt; retry');
        return document;
      }
      case 'not_found':
        throw new ProblemError('item_not_found', `${itemId} is not stocked at ${location}`);
      case 'insufficient':
        throw new ProblemError('insufficient_stock', `${itemId}@${location}: on hand ${decision.onHand}, delta ${amount}`);
      case 'stale':
        throw unavailable('Redis was rebuilt; retry');
    }
  }
}

function toRecord(h: StoredHeader): ReservationRecord {
  return {
    id: h.id,
    status: h.status,
    reference: h.reference,
    metadata: h.metadata,
    priority: h.priority ?? DEFAULT_PRIORITY,
    lines: h.lines,
    expiresAt: new Date(h.expiresAt),
    createdAt: new Date(h.createdAt),
    updatedAt: new Date(h.updatedAt),
    tenant: h.tenant,
    allocation: h.allocation ?? null,
    // No versions kept here: creation and one transition are all a reservation of this baseline goes through.
    version: h.status === 'pending' ? 1 : 2,
  };
}

const ended = (status: ReservationStatus) =>
  new ProblemError(
    status === 'released' ? 'reservation_released' : status === 'expired' ? 'reservation_expired' : 'reservation_confirmed',
    `the reservation is ${status}`,
  );
