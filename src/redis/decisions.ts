import type { Redis } from 'ioredis';
import { unavailable } from '../domain/errors.js';
import type { RequestedLine } from '../domain/allocation.js';
import type { Line } from '../domain/reservation.js';
import type { Allocation, Priority } from '../domain/schemas.js';
import { DEFAULT_TENANT } from '../domain/tenancy.js';
import type { Metrics } from '../metrics.js';
import type { Keys } from './keys.js';
import { parseHeader, parseStock, type HoldStateCode, type LocationStock } from './layout.js';
import { defineScripts, type ScriptName, type ScriptReply } from './scripts.js';
import { ScriptStatus as S } from './status.js';

/** An item's stock per location, as the scripts return its stock hash (parsed through layout.ts). */
export type ItemStock = Map<string, LocationStock>;

export type ReserveDecision =
  | { kind: 'held'; generation: string; nowMs: number; lines: Line[] }
  | { kind: 'idempotent'; record: string }
  | { kind: 'not_found'; lineIndexes: number[] }
  | { kind: 'insufficient'; short: { lineIndex: number; available: number }[] };

/** `version`: the reservation's, as its holds say (after the transition, for `settled`). */
export type SettleDecision =
  | { kind: 'settled'; generation: string; nowMs: number; version: number; expiresMs: number }
  | { kind: 'already'; generation: string }
  | { kind: 'confirmed' | 'released' | 'precondition'; version: number }
  | { kind: 'expired'; version: number; expiresMs: number }
  | { kind: 'missing' }
  | { kind: 'insufficient'; short: { lineIndex: number; onHand: number }[] };

/** `version`: the one the extension made (`extended`), else the reservation's. */
export type ExtendDecision =
  | { kind: 'extended'; generation: string; nowMs: number; version: number; expiresMs: number; previousExpiresMs: number }
  | { kind: 'confirmed' | 'released' | 'expired' | 'precondition'; version: number }
  | { kind: 'missing' };

export type StockDecision =
  | {
      kind: 'changed';
      generation: string;
      onHandDelta: number;
      created: boolean;
      pending: boolean;
      stock: ItemStock;
      /** An intent was recorded: the decision is to be ended (endStockChange). */
      intent: boolean;
      /** The safety stock change: an increase is enforced at once, a decrease only once ended as recorded. */
      safetyDelta: number;
    }
  | { kind: 'not_found' }
  | { kind: 'stale' }
  | { kind: 'insufficient'; onHand: number };

/** What PostgreSQL says about one (item, location), read while its stock row is held (see `correct`). */
export interface CorrectionFacts {
  generation: string;
  onHand: number;
  safetyStock: number;
  /** Intent op ids PostgreSQL has a ledger row for: recorded, or void (taken back for good). */
  ops: ReadonlyMap<string, 'recorded' | 'void'>;
  /** PostgreSQL's status, as a hold state, and version of reservations whose holds there Redis has pending or confirmed. */
  statuses: ReadonlyMap<string, { state: HoldStateCode; version: number }>;
  /** PostgreSQL's pending unexpired holds there, with their reservation's version. */
  liveHolds: readonly { reservationId: string; quantity: number; expiresAtMs: number; version: number }[];
}

export interface RedisFigures {
  onHand: number;
  reserved: number;
  pending: number;
  /** Safety stock enforced, and the decreases of it not yet recorded (still enforced). */
  safety: number;
  safetyPending: number;
}

/** What a correction found and wrote. */
export interface Correction {
  kind: 'corrected';
  generation: string;
  before: RedisFigures;
  after: RedisFigures;
  /** Units of decisions PostgreSQL does not have yet, which the target accounts for. */
  inFlight: { confirms: number; debits: number; supply: number; safetyIncreases: number; safetyDecreases: number };
  intentsEnded: number;
  holdsSettled: number;
  holdsReadded: number;
}

/** How a stock decision's intent ends: an increase is applied or abandoned, a decrease settled or undone. */
export type StockEnd = 'apply' | 'abandon' | 'settle' | 'undo';

export interface HoldCounts {
  generation: string;
  pending: number;
  confirmed: number;
  released: number;
  expired: number;
  missing: number;
  /** The holds' version and expiry (null when Redis has none of them). */
  version: number | null;
  expiresMs: number | null;
}

export type SettleAction = 'confirm' | 'release';

export interface ReservationHeader {
  reference: string | null;
  metadata: Record<string, string>;
  /** Absent (a header cached by a version without priorities): normal. */
  priority?: Priority;
  /** As held: the reserve script writes them (it allocates). */
  lines: Line[];
  /** Whose reservation it is, so confirm and release check tenancy without asking PostgreSQL. */
  tenant: string;
  /** The request's allocation (null: none, or a header cached by a version without allocation). */
  allocation: Allocation | null;
}

/** What the reserve script's header holds besides the lines, which the script writes itself. */
export type HeaderFacts = Omit<ReservationHeader, 'lines'>;

/** The reserve script's held triples (line index, location, quantity) as lines. */
function heldLines(requested: readonly RequestedLine[], triples: unknown[]): Line[] {
  const out: Line[] = [];
  for (let i = 0; i + 2 < triples.length; i += 3) {
    out.push({ itemId: requested[Number(triples[i]) - 1]!.itemId, location: String(triples[i + 1]), quantity: Number(triples[i + 2]) });
  }
  return out;
}

/** Pairs of (index, value) that a script returns flattened after its status. */
function pairs(reply: ScriptReply): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 1; i < reply.length; i += 2) out.push([Number(reply[i]) - 1, Number(reply[i + 1])]);
  return out;
}

/**
 * Typed calls of the Lua decision scripts. Builds each script's KEYS (every key it touches, none built in Lua)
 * and ARGV, times it, and turns a missing generation marker into `onNoState()` plus a 503.
 */
export class Decisions {
  private readonly run: ReturnType<typeof defineScripts>;

  constructor(
    readonly redis: Redis,
    private readonly keys: Keys,
    private readonly metrics: Metrics,
    private readonly retentionMs: number,
    private readonly onNoState: () => void,
  ) {
    this.run = defineScripts(redis);
  }

  private async call(name: ScriptName, keys: string[], args: (string | number)[]): Promise<ScriptReply> {
    const end = this.metrics.luaDuration.startTimer({ script: name });
    let reply: ScriptReply;
    try {
      reply = await this.run(name, keys, args);
    } catch (err) {
      throw unavailable('Redis is unreachable', err);
    } finally {
      end();
    }
    if (reply[0] === S.NO_STATE) {
      this.onNoState();
      throw unavailable('Redis state is being rebuilt from PostgreSQL; retry');
    }
    return reply;
  }

  /**
   * KEYS for the distinct items of `lines` (in first-seen order), their ids in that order, and ARGV triples
   * pointing at them (a line to allocate has location '').
   */
  private linesLayout(lines: readonly RequestedLine[]): {
    itemKeys: string[];
    itemIds: string[];
    itemCount: number;
    lineArgs: (string | number)[];
  } {
    const index = new Map<string, number>();
    const itemKeys: string[] = [];
    const lineArgs: (string | number)[] = [];
    for (const line of lines) {
      let i = index.get(line.itemId);
      if (i === undefined) {
        i = index.size + 1;
        index.set(line.itemId, i);
        const k = this.keys.item(line.itemId);
        itemKeys.push(k.stock, k.holds, k.exp);
      }
      lineArgs.push(i, line.location ?? '', line.quantity);
    }
    return { itemKeys, itemIds: [...index.keys()], itemCount: index.size, lineArgs };
  }

  /**
   * Holds the lines, allocating those without a location by `header.allocation` (api.md); a `held` decision's
   * `lines` say what is held where, one entry per (line, location) in line order.
   */
  async reserve(input: {
    reservationId: string;
    lines: readonly RequestedLine[];
    ttlMs: number;
    idempotencyKey: string;
    /** The idempotency record is `recordPrefix`, the script's clock, `recordSuffix` (src/redis/layout.ts). */
    recordPrefix: string;
    recordSuffix: string;
    recordTtlMs: number;
    /** What confirm and release need besides the holds and the lines (the script writes those). */
    header: HeaderFacts;
    /** The deciding node's lease (src/jobs/node-lease.ts): the script sets it if missing, so no claim outlives it. */
    lease: { key: string; ttlMs: number };
  }): Promise<ReserveDecision> {
    const { itemKeys, itemIds, itemCount, lineArgs } = this.linesLayout(input.lines);
    const { reference, metadata, priority, tenant, allocation } = input.header;
    const candidates = allocation?.locations ?? [];
    const reply = await this.call(
      'reserve',
      [this.keys.marker, input.idempotencyKey, this.keys.reservation(input.reservationId), input.lease.key, ...itemKeys],
      [
        input.reservationId,
        input.ttlMs,
        input.recordPrefix,
        input.recordTtlMs,
        this.retentionMs,
        itemCount,
        input.lines.length,
        // A non-empty object: the script puts the lines in front of its first key.
        JSON.stringify({ reference, metadata, priority, tenant, allocation }),
        input.recordSuffix,
        input.lease.ttlMs,
        priority ?? 'normal',
        allocation?.strategy ?? '',
        allocation?.split ? '1' : '0',
        candidates.length,
        ...candidates,
        ...itemIds,
        ...lineArgs,
      ],
    );
    switch (reply[0]) {
      case S.OK:
        return { kind: 'held', generation: String(reply[1]), nowMs: Number(reply[2]), lines: heldLines(input.lines, reply.slice(3)) };
      case S.IDEMPOTENT:
        return { kind: 'idempotent', record: String(reply[1]) };
      case S.NOT_FOUND:
        return { kind: 'not_found', lineIndexes: reply.slice(1).map((n) => Number(n) - 1) };
      case S.INSUFFICIENT:
        return { kind: 'insufficient', short: pairs(reply).map(([lineIndex, available]) => ({ lineIndex, available })) };
    }
    throw new Error(`reserve: unexpected status ${reply[0]}`);
  }

  /**
   * `ifMatch`: the version an If-Match names (null: unconditional); the script refuses any other (`precondition`).
   * A confirm sells each line's `confirmedQuantity` (a partial confirm) or, without one, all of it.
   */
  async settle(action: SettleAction, reservationId: string, lines: readonly Line[], ifMatch: number | null = null): Promise<SettleDecision> {
    const { itemKeys, itemCount, lineArgs } = this.linesLayout(lines);
    const sells = action === 'confirm' ? lines.map((l) => l.confirmedQuantity ?? l.quantity) : [];
    const reply = await this.call(
      'settle',
      [this.keys.marker, ...itemKeys],
      [reservationId, action, this.retentionMs, itemCount, lines.length, ifMatch ?? '', ...lineArgs, ...sells],
    );
    switch (reply[0]) {
      case S.OK:
        return {
          kind: 'settled',
          generation: String(reply[1]),
          nowMs: Number(reply[2]),
          version: Number(reply[3]),
          expiresMs: Number(reply[4]),
        };
      case S.ALREADY:
        return { kind: 'already', generation: String(reply[1]) };
      case S.PRECONDITION:
        return { kind: 'precondition', version: Number(reply[1]) };
      case S.CONFIRMED:
        return { kind: 'confirmed', version: Number(reply[1]) };
      case S.RELEASED:
        return { kind: 'released', version: Number(reply[1]) };
      case S.EXPIRED:
        return { kind: 'expired', version: Number(reply[1]), expiresMs: Number(reply[2]) };
      case S.MISSING:
        return { kind: 'missing' };
      case S.INSUFFICIENT:
        return { kind: 'insufficient', short: pairs(reply).map(([lineIndex, onHand]) => ({ lineIndex, onHand })) };
    }
    throw new Error(`settle: unexpected status ${reply[0]}`);
  }

  /** Moves a pending, unexpired reservation's expiry to Redis' now + `ttlMs` (extend.lua); `ifMatch` as for settle. */
  async extend(reservationId: string, lines: readonly Line[], ttlMs: number, ifMatch: number | null = null): Promise<ExtendDecision> {
    const { itemKeys, itemCount, lineArgs } = this.linesLayout(lines);
    const reply = await this.call(
      'extend',
      [this.keys.marker, this.keys.reservation(reservationId), ...itemKeys],
      [reservationId, ttlMs, this.retentionMs, itemCount, lines.length, ifMatch ?? '', ...lineArgs],
    );
    switch (reply[0]) {
      case S.OK:
        return {
          kind: 'extended',
          generation: String(reply[1]),
          nowMs: Number(reply[2]),
          version: Number(reply[3]),
          expiresMs: Number(reply[4]),
          previousExpiresMs: Number(reply[5]),
        };
      case S.PRECONDITION:
        return { kind: 'precondition', version: Number(reply[1]) };
      case S.CONFIRMED:
        return { kind: 'confirmed', version: Number(reply[1]) };
      case S.RELEASED:
        return { kind: 'released', version: Number(reply[1]) };
      case S.EXPIRED:
        return { kind: 'expired', version: Number(reply[1]) };
      case S.MISSING:
        return { kind: 'missing' };
    }
    throw new Error(`extend: unexpected status ${reply[0]}`);
  }

  /**
   * Takes an unrecorded extension back (undo_extend.lua): 'undone'; 'stale' when Redis was rebuilt since;
   * 'expired' when it had shortened the holds, they expired at the new time and their units were taken since.
   */
  async undoExtend(
    generation: string,
    reservationId: string,
    lines: readonly Line[],
    extension: { version: number; previousExpiresMs: number; expiresMs: number },
  ): Promise<'undone' | 'stale' | 'expired'> {
    const { itemKeys, itemCount, lineArgs } = this.linesLayout(lines);
    const { version, previousExpiresMs, expiresMs } = extension;
    const reply = await this.run(
      'undo_extend',
      [this.keys.marker, this.keys.reservation(reservationId), ...itemKeys],
      [generation, reservationId, version, previousExpiresMs, expiresMs, this.retentionMs, itemCount, lines.length, ...lineArgs],
    );
    return reply[0] === S.OK ? 'undone' : reply[0] === S.STALE ? 'stale' : 'expired';
  }

  /** Compensation; resolves to false where the rebuild or a later state made it unnecessary or impossible. */
  async undoReserve(input: {
    generation: string;
    reservationId: string;
    lines: readonly Line[];
    idempotencyKey: string;
    recordPrefix: string;
  }): Promise<boolean> {
    const { itemKeys, itemCount, lineArgs } = this.linesLayout(input.lines);
    const reply = await this.run(
      'undo_reserve',
      [this.keys.marker, input.idempotencyKey, this.keys.reservation(input.reservationId), ...itemKeys],
      [input.generation, input.reservationId, input.recordPrefix, itemCount, input.lines.length, ...lineArgs],
    );
    return reply[0] === S.OK;
  }

  async undoSettle(action: SettleAction, generation: string, reservationId: string, lines: readonly Line[]): Promise<boolean> {
    const { itemKeys, itemCount, lineArgs } = this.linesLayout(lines);
    const reply = await this.run(
      'undo_settle',
      [this.keys.marker, ...itemKeys],
      [generation, reservationId, action, this.retentionMs, itemCount, lines.length, ...lineArgs],
    );
    return reply[0] === S.OK;
  }

  async expire(reservationId: string, lines: readonly Line[], mode: 'inspect' | 'revert'): Promise<HoldCounts> {
    const { itemKeys, itemCount, lineArgs } = this.linesLayout(lines);
    const reply = await this.call(
      'expire',
      [this.keys.marker, ...itemKeys],
      [reservationId, mode, this.retentionMs, itemCount, lines.length, ...lineArgs],
    );
    const [, generation, pending, confirmed, released, expired, missing, version, expiresMs] = reply.map(String);
    return {
      generation: generation!,
      pending: Number(pending),
      confirmed: Number(confirmed),
      released: Number(released),
      expired: Number(expired),
      missing: Number(missing),
      version: version ? Number(version) : null,
      expiresMs: expiresMs ? Number(expiresMs) : null,
    };
  }

  /**
   * `set`/`adjust` decide, recording an intent under `op.opId` (unless nothing changed); an increase comes back
   * `pending` (not yet available). Each decision with `intent` is then ended by `endStockChange`. A set may also set
   * the location's safety stock (`safetyStock`; omitted, it stays): in the same decision and intent.
   */
  async changeStock(
    itemId: string,
    location: string,
    mode: 'set' | 'adjust',
    amount: number,
    op: { opId: string; nodeId: string },
    safetyStock?: number,
  ): Promise<StockDecision> {
    const decision = await this.stockScript(itemId, mode, { location, amount, opId: op.opId, nodeId: op.nodeId, safetyStock });
    if (decision.kind === 'already') throw new Error('stock: a decision answered as an end');
    return decision;
  }

  /**
   * Ends a stock decision's intent: after its record, `apply` makes an increase on-hand and `settle` lets a decrease
   * stand; if it was not recorded, `abandon` drops the increase and `undo` gives the decrease back. Acts only while
   * the intent is there (`already` otherwise). `decided` is the decision's generation (a rebuilt Redis answers
   * `stale`; '' skips the check) and whether it created the location (removed again by abandon/undo).
   */
  async endStockChange(
    itemId: string,
    verb: StockEnd,
    opId: string,
    decided: { generation: string; created: boolean } = { generation: '', created: false },
  ): Promise<StockDecision | { kind: 'already' }> {
    return this.stockScript(itemId, verb, { opId, generation: decided.generation, created: decided.created });
  }

  private async stockScript(
    itemId: string,
    mode: 'set' | 'adjust' | StockEnd,
    a: { location?: string; amount?: number; opId: string; nodeId?: string; generation?: string; created?: boolean; safetyStock?: number },
  ): Promise<StockDecision | { kind: 'already' }> {
    const k = this.keys.item(itemId);
    const reply = await this.call(
      'stock',
      [this.keys.marker, k.stock, k.holds, k.exp, this.keys.items, k.intents],
      [
        mode,
        a.location ?? '',
        a.amount ?? 0,
        this.retentionMs,
        a.generation ?? '',
        a.created ? '1' : '0',
        itemId,
        a.opId,
        a.nodeId ?? '',
        a.safetyStock ?? '',
      ],
    );
    switch (reply[0]) {
      case S.OK:
        return {
          kind: 'changed',
          generation: String(reply[1]),
          onHandDelta: Number(reply[2]),
          created: reply[3] === 1,
          pending: reply[4] === 1,
          stock: parseStock(reply[5] as string[]),
          intent: reply[6] === 1,
          safetyDelta: Number(reply[7] ?? 0),
        };
      case S.NOT_FOUND:
        return { kind: 'not_found' };
      case S.INSUFFICIENT:
        return { kind: 'insufficient', onHand: Number(reply[1]) };
      case S.STALE:
        return { kind: 'stale' };
      case S.ALREADY:
        return { kind: 'already' };
    }
    throw new Error(`stock: unexpected status ${reply[0]}`);
  }

  /** The item's stock per location, or null when the item was never stocked. */
  async availability(itemId: string): Promise<ItemStock | null> {
    const k = this.keys.item(itemId);
    const reply = await this.call('availability', [this.keys.marker, k.stock, k.holds, k.exp], [this.retentionMs]);
    return reply[0] === S.OK ? parseStock(reply[2] as string[]) : null;
  }

  /** The reservation's cached header, or null (never cached, expired, or Redis lost it: ask PostgreSQL). */
  async header(id: string): Promise<(Required<ReservationHeader> & { createdMs: number; expiresMs: number }) | null> {
    let fields: Record<string, string>;
    try {
      fields = await this.redis.hgetall(this.keys.reservation(id));
    } catch (err) {
      throw unavailable('Redis is unreachable', err);
    }
    const stored = parseHeader(fields);
    if (!stored) return null;
    const body = JSON.parse(stored.body) as Omit<ReservationHeader, 'tenant' | 'allocation'> & {
      tenant?: string;
      allocation?: Allocation | null;
    };
    // A header cached by an older version: without tenants it belongs to the default tenant (as its row does),
    // without priorities it is normal, without allocation it had none.
    return {
      ...body,
      tenant: body.tenant ?? DEFAULT_TENANT,
      priority: body.priority ?? 'normal',
      allocation: body.allocation ?? null,
      createdMs: stored.createdMs,
      expiresMs: stored.expiresMs,
    };
  }

  /** Drops a pending hold PostgreSQL never recorded; false if it is no longer pending. */
  async dropHold(itemId: string, field: string): Promise<boolean> {
    const k = this.keys.item(itemId);
    const reply = await this.call('drop_hold', [this.keys.marker, k.stock, k.holds, k.exp], [field]);
    return reply[0] === S.OK;
  }

  /**
   * Reconciliation's fenced correction of one (item, location) (correct.lua): from PostgreSQL's `facts`, read while
   * its stock row is held, and Redis' current state, sets on-hand, reserved, pending supply and safety stock (with
   * its pending decreases) to what they must be.
   * `stale` when Redis is at another generation than the facts (nothing changed).
   */
  async correct(itemId: string, location: string, facts: CorrectionFacts): Promise<Correction | { kind: 'stale' }> {
    const k = this.keys.item(itemId);
    const reply = await this.call(
      'correct',
      [this.keys.marker, k.stock, k.holds, k.exp, k.intents, this.keys.items],
      [
        facts.generation,
        location,
        facts.onHand,
        this.retentionMs,
        itemId,
        facts.safetyStock,
        facts.ops.size,
        ...[...facts.ops].flat(),
        facts.statuses.size,
        ...[...facts.statuses].flatMap(([id, { state, version }]) => [id, state, version]),
        facts.liveHolds.length,
        ...facts.liveHolds.flatMap((h) => [h.reservationId, h.quantity, h.expiresAtMs, h.version]),
      ],
    );
    if (reply[0] === S.STALE) return { kind: 'stale' };
    if (reply[0] !== S.OK) throw new Error(`correct: unexpected status ${reply[0]}`);
    const n = reply.slice(2).map(Number) as number[];
    return {
      kind: 'corrected',
      generation: String(reply[1]),
      before: { onHand: n[0]!, reserved: n[1]!, pending: n[2]!, safety: n[12]!, safetyPending: n[13]! },
      after: { onHand: n[3]!, reserved: n[4]!, pending: n[5]!, safety: n[14]!, safetyPending: n[15]! },
      inFlight: { confirms: n[6]!, debits: n[7]!, supply: n[8]!, safetyIncreases: n[16]!, safetyDecreases: n[17]! },
      intentsEnded: n[9]!,
      holdsSettled: n[10]!,
      holdsReadded: n[11]!,
    };
  }

  /**
   * Deletes an idempotency record (or, given `replacement`, rewrites it) if it is still the claim of the attempt
   * whose record starts with `attemptPrefix`; true if it did.
   */
  async forgetClaim(idempotencyKey: string, attemptPrefix: string, replacement = ''): Promise<boolean> {
    const reply = await this.call('forget_claim', [idempotencyKey], [attemptPrefix, replacement]);
    return reply[0] === S.OK;
  }

  async finishRebuild(token: string, generation: string): Promise<boolean> {
    const reply = await this.run('finish_rebuild', [this.keys.marker, this.keys.rebuilding], [token, generation]);
    return reply[0] === S.OK;
  }
}
