import type { Redis } from 'ioredis';
import { unavailable } from '../domain/errors.js';
import type { RequestedLine } from '../domain/allocation.js';
import type { Line } from '../domain/reservation.js';
import type { Allocation, Priority } from '../domain/schemas.js';
import { DEFAULT_TENANT } from '../domain/tenancy.js';
import type { Metrics } from '../metrics.js';
import type { RedisClient } from './client.js';
import type { Keys } from './keys.js';
import { hashEntries, parseHeader, parseStock, type HoldStateCode, type LocationStock } from './layout.js';
import { scriptOnEveryGroup } from './groups.js';
import type { ConnectionCheck } from './server-check.js';
import { ScriptCallRefused, defineScripts, type ScriptName, type ScriptReply } from './scripts.js';
import { ScriptStatus as S } from './status.js';

/** An item's stock per location, as the scripts return its stock hash (parsed through layout.ts). */
export type ItemStock = Map<string, LocationStock>;

/** What reconciliation reads of an item (`survey`). */
export interface ItemSurvey {
  stock: ItemStock;
  /** Its open stock decisions: op id → intent (layout.ts). */
  intents: Map<string, string>;
  /** Fields in its holds hash, whatever their state. */
  holdCount: number;
  /** Its pending holds' fields; null where they were not listed (more than asked for: read them in steps). */
  pendingHolds: string[] | null;
}

/** Items per survey call: a call lists up to this many items' holds, and must stay short for Redis. */
const SURVEY_ITEMS = 25;

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

/** The reserve script's held triples (line index, location, quantity) as lines, with their line's index (0-based). */
function heldParts(requested: readonly RequestedLine[], triples: unknown[]): { lineIndex: number; line: Line }[] {
  const out: { lineIndex: number; line: Line }[] = [];
  for (let i = 0; i + 2 < triples.length; i += 3) {
    const lineIndex = Number(triples[i]) - 1;
    out.push({ lineIndex, line: { itemId: requested[lineIndex]!.itemId, location: String(triples[i + 1]), quantity: Number(triples[i + 2]) } });
  }
  return out;
}

/** A reserve call's refusal, its line indexes mapped from the call's lines (`indexes`) to the request's. */
function refusal(reply: ScriptReply, indexes: readonly number[]): ReserveDecision {
  switch (reply[0]) {
    case S.IDEMPOTENT:
      return { kind: 'idempotent', record: String(reply[1]) };
    case S.NOT_FOUND:
      return { kind: 'not_found', lineIndexes: reply.slice(1).map((n) => indexes[Number(n) - 1]!) };
    case S.INSUFFICIENT:
      return { kind: 'insufficient', short: pairs(reply).map(([i, available]) => ({ lineIndex: indexes[i]!, available })) };
  }
  throw new Error(`reserve: unexpected status ${reply[0]}`);
}

/** The refusals of several slots as one: 404 before 409 (api.md's precedence), the lines in request order. */
function combineRefusals(refused: ReserveDecision[]): ReserveDecision {
  const notFound = refused.flatMap((r) => (r.kind === 'not_found' ? r.lineIndexes : []));
  if (notFound.length > 0) return { kind: 'not_found', lineIndexes: notFound.sort((a, b) => a - b) };
  const short = refused.flatMap((r) => (r.kind === 'insufficient' ? r.short : []));
  return { kind: 'insufficient', short: short.sort((a, b) => a.lineIndex - b.lineIndex) };
}

/** What the reserve input says (Decisions.reserve). */
export interface ReserveInput {
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
  /** The deciding node's lease (src/jobs/node-lease.ts): set if missing, so no claim outlives it. */
  lease: { key: string; ttlMs: number };
}

/** What one reserve call held in one slot group, and which of the claim ('c') and header ('h') it wrote there. */
interface HeldGroup {
  group: number;
  lines: Line[];
  parts: string;
  generation: string;
}

/** Pairs of (index, value) that a script returns flattened after its status. */
function pairs(reply: ScriptReply): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 1; i < reply.length; i += 2) out.push([Number(reply[i]) - 1, Number(reply[i + 1])]);
  return out;
}

/** Lines of one slot group (keys.ts), with their indexes in the whole list. */
interface LineGroup<T> {
  group: number;
  lines: T[];
  indexes: number[];
}

/**
 * Typed calls of the Lua decision scripts. Builds each script's KEYS (every key it touches, none built in Lua)
 * and ARGV, times it, and turns a missing generation marker into `onNoState()` plus a 503.
 */
export class Decisions {
  private readonly run: ReturnType<typeof defineScripts>;

  /** Availability reads: on the master with the decisions, or (`reads`, REDIS_READ_FROM=replica) on a replica. */
  private readonly runRead: ReturnType<typeof defineScripts> | null;

  constructor(
    readonly redis: RedisClient,
    private readonly keys: Keys,
    private readonly metrics: Metrics,
    private readonly retentionMs: number,
    private readonly onNoState: () => void,
    reads: RedisClient | null = null,
    /** The check of each connection (server-check.ts): no script goes out before it answered. */
    private readonly serverCheck: ConnectionCheck | null = null,
  ) {
    this.run = defineScripts(redis);
    this.runRead = reads && reads !== redis ? defineScripts(reads) : null;
  }

  private async call(name: ScriptName, keys: string[], args: (string | number)[], run = this.run): Promise<ScriptReply> {
    // Timed by hand: prom-client's startTimer makes two closures, two hrtime arrays and a labels copy per call.
    const started = performance.now();
    let reply: ScriptReply;
    try {
      if (this.serverCheck && !this.serverCheck.passed) await this.serverCheck.ready();
      reply = await run(name, keys, args);
    } catch (err) {
      // A call refused unsent is this code's bug (a 500, logged as such), not Redis being away.
      if (err instanceof ScriptCallRefused) throw err;
      throw unavailable('Redis is unreachable', err);
    } finally {
      this.metrics.luaDuration.observe({ script: name }, (performance.now() - started) / 1000);
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

  /** The lines grouped by their item's slot group, in first-seen order (one group on a single Redis). */
  private groupLines<T extends { itemId: string }>(lines: readonly T[]): LineGroup<T>[] {
    const groups = new Map<number, LineGroup<T>>();
    lines.forEach((line, index) => {
      const group = this.itemGroup(line.itemId);
      let entry = groups.get(group);
      if (!entry) groups.set(group, (entry = { group, lines: [], indexes: [] }));
      entry.lines.push(line);
      entry.indexes.push(index);
    });
    return [...groups.values()];
  }

  private itemGroup(itemId: string): number {
    return this.keys.groupOf(this.keys.item(itemId).stock);
  }

  /**
   * Holds the lines, allocating those without a location by `header.allocation` (api.md); a `held` decision's
   * `lines` say what is held where, one entry per (line, location) in line order.
   *
   * One script call when the idempotency record, the header and every item share a slot group (always on a single
   * Redis: one atomic step, as ever). On a cluster they do not, and every call touches one slot: the claim on the
   * key comes first (with the lines of its slot, if any), then the lines slot by slot, then the header (a cache,
   * written whole). A slot refused has the slots held before it undone and the claim freed before the answer, so
   * nothing partial is ever acknowledged; a concurrent request may meanwhile have been refused for units held here
   * only for that instant (a brief false "insufficient", docs/redis-cluster.md).
   */
  async reserve(input: ReserveInput): Promise<ReserveDecision> {
    const allocated = input.lines.filter((l) => l.location === null);
    const acrossSlots = new Set(allocated.map((l) => this.itemGroup(l.itemId))).size > 1;
    if (input.header.allocation?.strategy === 'single_location' && acrossSlots) return this.reserveAtOneOf(input);
    return this.reserveInSlots(input);
  }

  /**
   * single_location over items in several slots, which no one script sees together: each candidate in preference
   * order is tried as the location of every allocated line (each try all slots or nothing), the first that holds
   * them all wins. If none does: 404 when an allocated item is stocked at none of them, else 409 with each
   * allocated line short at the candidate short by the fewest units in all (the earlier one on a tie), with what it
   * has there, as the script answers on one slot.
   */
  private async reserveAtOneOf(input: ReserveInput): Promise<ReserveDecision> {
    const candidates = input.header.allocation?.locations ?? [];
    const allocated = input.lines.flatMap((l, i) => (l.location === null ? [i] : []));
    const unstocked = new Map(allocated.map((i) => [i, 0]));
    let best: { shortfall: number; short: { lineIndex: number; available: number }[] } | null = null;
    for (const location of candidates) {
      const lines = input.lines.map((l) => (l.location === null ? { ...l, location } : l));
      const decision = await this.reserveInSlots({ ...input, lines });
      if (decision.kind === 'held' || decision.kind === 'idempotent') return decision;
      const notFound = decision.kind === 'not_found' ? decision.lineIndexes : [];
      // A line given its location that is not stocked there is not found wherever the others go.
      if (notFound.some((i) => !unstocked.has(i))) return { kind: 'not_found', lineIndexes: notFound.filter((i) => !unstocked.has(i)) };
      for (const i of notFound) unstocked.set(i, unstocked.get(i)! + 1);
      const short =
        decision.kind === 'insufficient' ? decision.short : notFound.map((lineIndex) => ({ lineIndex, available: 0 }));
      const shortfall = short.reduce((sum, s) => sum + input.lines[s.lineIndex]!.quantity - s.available, 0);
      if (!best || shortfall < best.shortfall) best = { shortfall, short };
    }
    const nowhere = [...unstocked].filter(([, misses]) => misses === candidates.length).map(([i]) => i);
    if (nowhere.length > 0) return { kind: 'not_found', lineIndexes: nowhere };
    return { kind: 'insufficient', short: best?.short ?? [] };
  }

  private async reserveInSlots(input: ReserveInput): Promise<ReserveDecision> {
    const { keys } = this;
    const claimGroup = keys.groupOf(input.idempotencyKey);
    const headerGroup = keys.groupOf(keys.reservation(input.reservationId));
    const leaseHere = keys.groupOf(input.lease.key) === claimGroup;
    const groups = this.groupLines(input.lines);
    // One call when every line is in the claim's slot (always on a single Redis). Else the claim alone, then the
    // slots in ascending order: carts that compete take their slots in the same order, so that one of them gets
    // them all rather than each holding some and all being refused (a livelock under contention).
    const whole = groups.length === 0 || (groups.length === 1 && groups[0]!.group === claimGroup);
    const claimLines = whole && groups[0] ? groups[0] : { group: claimGroup, lines: [], indexes: [] };
    const calls = whole ? [claimLines] : [claimLines, ...groups.sort((a, b) => a.group - b.group)];
    const headerWithClaim = calls.length === 1 && headerGroup === claimGroup;
    const leasing = leaseHere ? null : this.keepLease(input.lease);

    const done: HeldGroup[] = [];
    const held: { index: number; line: Line }[] = [];
    const refused: ReserveDecision[] = [];
    let nowMs = 0;
    let generation = '';
    try {
      for (const group of calls) {
        const first = group === claimLines;
        // After a refusal the later slots only decide: were they held and given back, a competing cart could be
        // refused for those units, and under contention every cart could refuse every other (none would win).
        const parts = first ? `c${headerWithClaim ? 'h' : ''}${leaseHere ? 'l' : ''}` : refused.length > 0 ? 'd' : '';
        // A refused claim call leaves no clock: the later calls then use their own (they are all given back).
        const reply = await this.reserveCall(input, group, parts, first || nowMs === 0 ? '' : nowMs + input.ttlMs, null);
        if (reply[0] === S.IDEMPOTENT) return refusal(reply, group.indexes);
        if (reply[0] !== S.OK) {
          // The later slots are still asked (decide only), so the answer names every line at fault.
          refused.push(refusal(reply, group.indexes));
          continue;
        }
        if (parts === 'd') continue;
        if (first) nowMs = Number(reply[2]);
        if (generation === '') generation = String(reply[1]);
        const lines = heldParts(group.lines, reply.slice(3)).map(({ lineIndex, line }) => {
          held.push({ index: group.indexes[lineIndex]!, line });
          return line;
        });
        done.push({ group: group.group, lines, parts: first ? `c${headerWithClaim ? 'h' : ''}` : '', generation: String(reply[1]) });
        if (String(reply[1]) !== generation) {
          // A rebuild came between two slots' calls: no record may mix two generations.
          throw rebuiltMeanwhile();
        }
      }
    } catch (err) {
      // Redis unreachable, or a slot without state: what was held elsewhere is given back before the 503.
      await this.undoHeld(input, done).catch(() => undefined);
      throw err;
    }
    if (refused.length > 0) {
      await this.undoHeld(input, done);
      return combineRefusals(refused);
    }
    await leasing;
    // Line order, the parts of an allocated line in allocation order (each line is held by one call).
    const lines = held.sort((a, b) => a.index - b.index).map((h) => h.line);
    if (!headerWithClaim) await this.cacheHeader(input, lines, nowMs + input.ttlMs);
    return { kind: 'held', generation, nowMs, lines };
  }

  /** One reserve.lua call: `parts` (reserve.lua, ARGV[15]) for the keys of `group`'s slot besides its lines. */
  private reserveCall(
    input: ReserveInput,
    group: { group: number; lines: readonly RequestedLine[] },
    parts: string,
    expiresMs: number | '',
    headerBody: string | null,
  ): Promise<ScriptReply> {
    const { itemKeys, itemIds, itemCount, lineArgs } = this.linesLayout(group.lines);
    const { reference, metadata, priority, tenant, allocation } = input.header;
    const candidates = allocation?.locations ?? [];
    const partKeys = [
      ...(parts.includes('c') ? [input.idempotencyKey] : []),
      ...(/[hH]/.test(parts) ? [this.keys.reservation(input.reservationId)] : []),
      ...(parts.includes('l') ? [input.lease.key] : []),
    ];
    return this.call(
      'reserve',
      [this.keys.markerOf(group.group), ...partKeys, ...itemKeys],
      [
        input.reservationId,
        input.ttlMs,
        input.recordPrefix,
        input.recordTtlMs,
        this.retentionMs,
        itemCount,
        group.lines.length,
        // A non-empty object: the script puts the lines in front of its first key ('h'), or it is the whole body ('H').
        headerBody ?? JSON.stringify({ reference, metadata, priority, tenant, allocation }),
        input.recordSuffix,
        input.lease.ttlMs,
        priority ?? 'normal',
        allocation?.strategy ?? '',
        allocation?.split ? '1' : '0',
        candidates.length,
        parts,
        expiresMs,
        ...candidates,
        ...itemIds,
        ...lineArgs,
      ],
    );
  }

  /** The node's lease, kept apart from the claim when it lives in another slot (reserve.lua's 'l' otherwise). */
  private async keepLease(lease: { key: string; ttlMs: number }): Promise<void> {
    await this.redis.set(lease.key, '1', 'PX', lease.ttlMs, 'NX').catch(() => undefined);
  }

  /**
   * The header cached apart from the holds (a cluster: it lives in a slot of its own). A cache: a call that fails
   * leaves it missing, which means "ask PostgreSQL".
   */
  private async cacheHeader(input: ReserveInput, lines: Line[], expiresMs: number): Promise<void> {
    const { reference, metadata, priority, tenant, allocation } = input.header;
    const body = JSON.stringify({ lines, reference, metadata, priority, tenant, allocation });
    const group = { group: this.keys.groupOf(this.keys.reservation(input.reservationId)), lines: [], indexes: [] };
    await this.reserveCall(input, group, 'H', expiresMs, body).catch(() => undefined);
  }

  /** Gives back what the calls of one reservation held (the claim's call frees the claim too), all at once. */
  private async undoHeld(input: ReserveInput, done: HeldGroup[]): Promise<void> {
    const undoing = done.splice(0);
    await Promise.all(undoing.map((d) => this.undoGroup(input, d)));
  }

  /**
   * `ifMatch`: the version an If-Match names (null: unconditional); the script refuses any other (`precondition`).
   * A confirm sells each line's `confirmedQuantity` (a partial confirm) or, without one, all of it.
   *
   * One call per slot group (one on a single Redis). A slot that refuses has the slots settled before it undone, and
   * its verdict is the answer: all lines or none.
   */
  async settle(action: SettleAction, reservationId: string, lines: readonly Line[], ifMatch: number | null = null): Promise<SettleDecision> {
    const done: { group: LineGroup<Line>; generation: string }[] = [];
    const undo = () => Promise.all(done.splice(0).map((d) => this.undoSettleGroup(action, d.generation, reservationId, d.group)));
    let first: SettleDecision | null = null;
    try {
      for (const group of this.groupLines(lines)) {
        const decision = await this.settleGroup(action, reservationId, group, ifMatch);
        if (decision.kind === 'settled') {
          done.push({ group, generation: decision.generation });
          if (first?.kind === 'settled' && first.generation !== decision.generation) throw rebuiltMeanwhile();
          if (first?.kind !== 'settled') first = decision;
        } else if (decision.kind === 'already') {
          // Settled already by a duplicate of this request (in every slot, or racing it slot by slot).
          first ??= decision;
        } else {
          await undo();
          return decision;
        }
      }
    } catch (err) {
      await undo().catch(() => undefined);
      throw err;
    }
    return first!;
  }

  private async settleGroup(action: SettleAction, reservationId: string, group: LineGroup<Line>, ifMatch: number | null): Promise<SettleDecision> {
    const { lines } = group;
    const { itemKeys, itemCount, lineArgs } = this.linesLayout(lines);
    const sells = action === 'confirm' ? lines.map((l) => l.confirmedQuantity ?? l.quantity) : [];
    const reply = await this.call(
      'settle',
      [this.keys.markerOf(group.group), ...itemKeys],
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
        return { kind: 'insufficient', short: pairs(reply).map(([i, onHand]) => ({ lineIndex: group.indexes[i]!, onHand })) };
    }
    throw new Error(`settle: unexpected status ${reply[0]}`);
  }

  /**
   * Moves a pending, unexpired reservation's expiry to Redis' now + `ttlMs` (extend.lua); `ifMatch` as for settle.
   * One call per slot group, as settle: the first slot's clock sets the expiry of all. On a cluster the header (in a
   * slot of its own) is dropped from the cache instead of updated: the next reader asks PostgreSQL.
   */
  async extend(reservationId: string, lines: readonly Line[], ttlMs: number, ifMatch: number | null = null): Promise<ExtendDecision> {
    const groups = this.groupLines(lines);
    const headerKey = this.keys.reservation(reservationId);
    const headerHere = groups.length === 1 && this.keys.groupOf(headerKey) === groups[0]!.group;
    const done: { group: LineGroup<Line>; decision: Extract<ExtendDecision, { kind: 'extended' }> }[] = [];
    const undo = () =>
      Promise.all(done.splice(0).map(({ group, decision }) => this.undoExtendGroup(decision.generation, reservationId, group, decision, headerHere)));
    try {
      for (const group of groups) {
        const decision = await this.extendGroup(reservationId, group, ttlMs, ifMatch, headerHere, done[0]?.decision.expiresMs ?? '');
        if (decision.kind !== 'extended') {
          await undo();
          return decision;
        }
        if (done[0] && done[0].decision.generation !== decision.generation) throw rebuiltMeanwhile();
        done.push({ group, decision });
      }
    } catch (err) {
      await undo().catch(() => undefined);
      throw err;
    }
    if (!headerHere) await this.redis.del(headerKey).catch(() => undefined);
    return done[0]!.decision;
  }

  private async extendGroup(
    reservationId: string,
    group: LineGroup<Line>,
    ttlMs: number,
    ifMatch: number | null,
    headerHere: boolean,
    expiresMs: number | '',
  ): Promise<ExtendDecision> {
    const { itemKeys, itemCount, lineArgs } = this.linesLayout(group.lines);
    const reply = await this.call(
      'extend',
      [this.keys.markerOf(group.group), ...(headerHere ? [this.keys.reservation(reservationId)] : []), ...itemKeys],
      [reservationId, ttlMs, this.retentionMs, itemCount, group.lines.length, ifMatch ?? '', headerHere ? 'h' : '', expiresMs, ...lineArgs],
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
    const groups = this.groupLines(lines);
    const headerHere = groups.length === 1 && this.keys.groupOf(this.keys.reservation(reservationId)) === groups[0]!.group;
    const undone = await Promise.all(groups.map((g) => this.undoExtendGroup(generation, reservationId, g, extension, headerHere)));
    return undone.includes('expired') ? 'expired' : undone.includes('stale') ? 'stale' : 'undone';
  }

  private async undoExtendGroup(
    generation: string,
    reservationId: string,
    group: LineGroup<Line>,
    extension: { version: number; previousExpiresMs: number; expiresMs: number },
    headerHere: boolean,
  ): Promise<'undone' | 'stale' | 'expired'> {
    const { itemKeys, itemCount, lineArgs } = this.linesLayout(group.lines);
    const { version, previousExpiresMs, expiresMs } = extension;
    const reply = await this.run(
      'undo_extend',
      [this.keys.markerOf(group.group), ...(headerHere ? [this.keys.reservation(reservationId)] : []), ...itemKeys],
      [generation, reservationId, version, previousExpiresMs, expiresMs, this.retentionMs, itemCount, group.lines.length, headerHere ? 'h' : '', ...lineArgs],
    );
    return reply[0] === S.OK ? 'undone' : reply[0] === S.STALE ? 'stale' : 'expired';
  }

  /**
   * Compensation; resolves to false where the rebuild or a later state made it unnecessary or impossible. Every
   * slot group the reservation touched (its lines', its claim's, its header's) is undone, all at once.
   */
  async undoReserve(input: { generation: string; reservationId: string; lines: readonly Line[]; idempotencyKey: string; recordPrefix: string }): Promise<boolean> {
    const claimGroup = this.keys.groupOf(input.idempotencyKey);
    const headerGroup = this.keys.groupOf(this.keys.reservation(input.reservationId));
    const groups = new Map(this.groupLines(input.lines).map((g) => [g.group, g.lines]));
    for (const group of [claimGroup, headerGroup]) if (!groups.has(group)) groups.set(group, []);
    const undone = await Promise.all(
      [...groups].map(([group, lines]) =>
        this.undoGroup(input, { group, lines, generation: input.generation, parts: (group === claimGroup ? 'c' : '') + (group === headerGroup ? 'h' : '') }),
      ),
    );
    return undone.every(Boolean);
  }

  private async undoGroup(input: { reservationId: string; idempotencyKey: string; recordPrefix: string }, held: HeldGroup): Promise<boolean> {
    const { itemKeys, itemCount, lineArgs } = this.linesLayout(held.lines);
    const partKeys = [
      ...(held.parts.includes('c') ? [input.idempotencyKey] : []),
      ...(held.parts.includes('h') ? [this.keys.reservation(input.reservationId)] : []),
    ];
    const reply = await this.run(
      'undo_reserve',
      [this.keys.markerOf(held.group), ...partKeys, ...itemKeys],
      [held.generation, input.reservationId, input.recordPrefix, itemCount, held.lines.length, held.parts, ...lineArgs],
    );
    return reply[0] === S.OK;
  }

  async undoSettle(action: SettleAction, generation: string, reservationId: string, lines: readonly Line[]): Promise<boolean> {
    const undone = await Promise.all(this.groupLines(lines).map((g) => this.undoSettleGroup(action, generation, reservationId, g)));
    return undone.every(Boolean);
  }

  private async undoSettleGroup(action: SettleAction, generation: string, reservationId: string, group: LineGroup<Line>): Promise<boolean> {
    const { itemKeys, itemCount, lineArgs } = this.linesLayout(group.lines);
    const reply = await this.run(
      'undo_settle',
      [this.keys.markerOf(group.group), ...itemKeys],
      [generation, reservationId, action, this.retentionMs, itemCount, group.lines.length, ...lineArgs],
    );
    return reply[0] === S.OK;
  }

  /** The sweeper's look (expire.lua), slot group by slot group: the counts of all the reservation's holds. */
  async expire(reservationId: string, lines: readonly Line[], mode: 'inspect' | 'revert'): Promise<HoldCounts> {
    const counts = await Promise.all(this.groupLines(lines).map((g) => this.expireGroup(reservationId, g.group, g.lines, mode)));
    return counts.reduce((a, b) => ({
      generation: a.generation,
      pending: a.pending + b.pending,
      confirmed: a.confirmed + b.confirmed,
      released: a.released + b.released,
      expired: a.expired + b.expired,
      missing: a.missing + b.missing,
      version: a.version === null ? b.version : b.version === null ? a.version : Math.max(a.version, b.version),
      expiresMs: a.expiresMs ?? b.expiresMs,
    }));
  }

  private async expireGroup(reservationId: string, group: number, lines: readonly Line[], mode: 'inspect' | 'revert'): Promise<HoldCounts> {
    const { itemKeys, itemCount, lineArgs } = this.linesLayout(lines);
    const reply = await this.call(
      'expire',
      [this.keys.markerOf(group), ...itemKeys],
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
      [this.keys.markerOf(this.itemGroup(itemId)), k.stock, k.holds, k.exp, this.keys.itemsOf(this.itemGroup(itemId)), k.intents],
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

  /**
   * The item's stock per location, or null when the item was never stocked. With REDIS_READ_FROM=replica, as a
   * replica of its slot has it (lagging the master by the replication delay).
   */
  async availability(itemId: string): Promise<ItemStock | null> {
    const k = this.keys.item(itemId);
    const keys = [this.keys.markerOf(this.itemGroup(itemId)), k.stock, k.holds, k.exp];
    const reply = this.runRead
      ? await this.call('availability_read', keys, [], this.runRead)
      : await this.call('availability', keys, [this.retentionMs]);
    return reply[0] === S.OK ? parseStock(reply[2] as string[]) : null;
  }

  /**
   * Reconciliation's look at many items at once (survey.lua): each one's stock, open stock decisions, count of
   * hold fields and, where that count is at most `listHolds`, its pending holds' fields (-1: the intents alone).
   * One call per SURVEY_ITEMS items of a slot group, always on the master: it expires due holds first, as a
   * decision would.
   */
  async survey(itemIds: readonly string[], listHolds: number): Promise<Map<string, ItemSurvey>> {
    const byGroup = new Map<number, string[]>();
    for (const id of itemIds) {
      const group = this.itemGroup(id);
      const ids = byGroup.get(group);
      if (ids) ids.push(id);
      else byGroup.set(group, [id]);
    }
    const surveyed = new Map<string, ItemSurvey>();
    const calls: Promise<void>[] = [];
    for (const [group, ids] of byGroup) {
      for (let i = 0; i < ids.length; i += SURVEY_ITEMS) {
        const chunk = ids.slice(i, i + SURVEY_ITEMS);
        const keys = [this.keys.markerOf(group)];
        for (const id of chunk) {
          const k = this.keys.item(id);
          keys.push(k.stock, k.holds, k.exp, k.intents);
        }
        const call = this.call('survey', keys, [this.retentionMs, listHolds]).then((reply) => {
          (reply[2] as [string[], string[], number, string[]][]).forEach(([stock, intents, holdCount, pending], n) => {
            surveyed.set(chunk[n]!, {
              stock: parseStock(stock),
              intents: new Map(hashEntries(intents)),
              holdCount,
              pendingHolds: holdCount <= listHolds ? pending : null,
            });
          });
        });
        calls.push(call);
      }
    }
    await Promise.all(calls);
    return surveyed;
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
    const reply = await this.call('drop_hold', [this.keys.markerOf(this.itemGroup(itemId)), k.stock, k.holds, k.exp], [field]);
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
      [this.keys.markerOf(this.itemGroup(itemId)), k.stock, k.holds, k.exp, k.intents, this.keys.itemsOf(this.itemGroup(itemId))],
      [
        facts.generation,
        location,
        facts.onHand,
        this.retentionMs,
        itemId,
        facts.safetyStock,
        JSON.stringify(Object.fromEntries(facts.ops)),
        JSON.stringify([...facts.statuses].map(([id, { state, version }]) => [id, state, version])),
        JSON.stringify(facts.liveHolds.map((h) => [h.reservationId, h.quantity, h.expiresAtMs, h.version])),
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

  /**
   * Sets every group's marker to `generation` where the rebuild's token survived (finish_rebuild.lua); false if one
   * had not, or a group's server is no longer the one in `servers` (their run_ids when the rebuild began writing).
   */
  async finishRebuild(token: string, generation: string, servers: ReadonlyMap<Redis, string>): Promise<boolean> {
    const replies = await scriptOnEveryGroup(this.redis, this.keys, 'finish_rebuild', (group, server) => ({
      keys: [this.keys.markerOf(group), this.keys.rebuildingOf(group), ...(this.keys.cluster ? [] : [this.keys.server])],
      // A connection made since (another server, or the same one restarted) is not in `servers`: '' does not match it.
      args: [token, generation, this.keys.cluster ? '1' : '0', servers.get(server) ?? ''],
    }));
    return replies.every((reply) => reply[0] === S.OK);
  }

  /** The generation every group's state is of, or null when a group has none, or groups differ (generation.lua). */
  async generation(): Promise<string | null> {
    const replies = await scriptOnEveryGroup(this.redis, this.keys, 'generation', (group) => ({ keys: [this.keys.markerOf(group)], args: [] }));
    const generations = new Set(replies.map((reply) => (reply[0] === S.OK ? String(reply[1]) : null)));
    const [only] = generations;
    return generations.size === 1 && only ? only : null;
  }
}

const rebuiltMeanwhile = () => unavailable('Redis state is being rebuilt from PostgreSQL; retry');
