import { scanHash, type RedisClient } from '../redis/client.js';
import type pg from 'pg';
import type { FastifyBaseLogger as Logger } from 'fastify';
import type { Metrics } from '../metrics.js';
import type { Decisions, RedisFigures } from '../redis/decisions.js';
import type { Keys } from '../redis/keys.js';
import { IntentKind, parseHold, parseHoldField, parseIntent, type HoldStateCode, type IntentKindName } from '../redis/layout.js';
import { HoldState } from '../redis/status.js';
import { findOpOutcomes, voidStockOp, withStockRowHeld, type HeldStockRow, type HoldLimits } from '../store/corrections.js';
import { findPendingIds, sumLiveHolds } from '../store/reservations.js';
import { findStock, findStockedItemIds } from '../store/stock.js';
import { LEASE_TTL_MS, type NodeLease } from './node-lease.js';
import { onEveryGroup } from '../redis/groups.js';
import { Lease } from '../redis/lease.js';
import { Pacer } from './pacer.js';
import type { Recovery } from './recovery.js';

export interface Figures {
  onHand: number;
  reserved: number;
  holds: number;
  /** Safety stock enforced (Redis: its decreases not yet recorded included). */
  safetyStock: number;
}

export interface DriftRow {
  itemId: string;
  location: string;
  redis: Figures;
  postgres: Figures;
}

export interface OrphanHold {
  itemId: string;
  field: string;
  reservationId: string;
  ageMs: number;
}

/** A stock decision whose process left it open, as judged by the ledger (see `judgeStranded`). */
export interface StrandedIntent {
  itemId: string;
  opId: string;
  location: string;
  delta: number;
  /** The safety stock change it decided (0: none). */
  safetyDelta: number;
  kind: IntentKindName;
  ageMs: number;
  nodeId: string;
  ownerAlive: boolean;
  /** The ledger's word on the op id: recorded, void (taken back for good), or none (never recorded, yet). */
  ledger: 'recorded' | 'void' | 'none';
  /** finish: apply a supply / settle a debit; take_back: void it in the ledger, abandon a supply / undo a debit. */
  action: 'finish' | 'take_back';
}

/** One fenced correction of Redis (see `correct`), as recorded in stock_corrections. */
export interface CorrectionReport {
  itemId: string;
  location: string;
  before: RedisFigures;
  after: RedisFigures;
  postgres: { onHand: number; reserved: number; safetyStock: number };
  inFlight: { confirms: number; debits: number; supply: number; safetyIncreases: number; safetyDecreases: number };
  intentsEnded: number;
  holdsSettled: number;
  holdsReadded: number;
}

export interface ReconcileReport {
  checkedItems: number;
  /** Intents judged (a dry run: that would be judged) this pass. */
  strandedIntents: StrandedIntent[];
  /** Drift that persisted across the two looks (after the intents were judged). */
  drift: DriftRow[];
  orphanHolds: OrphanHold[];
  repair: {
    intentsFinished: number;
    intentsTakenBack: number;
    orphansDropped: number;
    corrected: CorrectionReport[];
    /** Drift left after dropping orphans and correcting: in flight still, or beyond a correction (see README). */
    unhealed: DriftRow[];
    rebuilt: boolean;
  } | null;
}

/**
 * How old a stranded intent must be before it is judged: by then any statement its process sent has ended, even
 * one sent as the lease was last renewed (statement_timeout is server-side), and its process, if alive, would have
 * ended the intent itself.
 */
export const judgeIntentsAfterMs = (queryTimeoutMs: number): number => queryTimeoutMs + LEASE_TTL_MS + 1_000;

/**
 * An intent never recorded whose process is alive is left to it (its request is in flight), until this old: then
 * its process has given up on it (a compensation that failed while Redis was down is never retried). Taking it back
 * is safe however late: the ledger's void means its record can never land afterwards.
 */
export const ABANDONED_INTENT_AFTER_MS = 60_000;

/** The correction's transaction holds a stock row that live batches may queue behind: short bounds. */
const HOLD_LIMITS: HoldLimits = { lockTimeoutMs: 1_000, statementTimeoutMs: 2_000, idleTimeoutMs: 5_000 };

/** Runs reconciliation every interval on one node at a time (a Redis lock): judges intents, drops orphaned holds, corrects drift. */
export class Reconciler {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;
  /** Cuts a paced pass's sleep short when the node stops. */
  private stopping = new AbortController();
  /**
   * One pass at a time across the nodes. Taken for an interval, renewed while a pass lasts (a paced pass over a
   * large catalog outlasts the interval), and left to lapse after it: the next pass is an interval away.
   */
  private readonly lease: Lease;

  constructor(
    private readonly d: ReconcileDeps,
    private readonly options: { intervalMs: number; orphanAfterMs: number; dutyPercent: number; nodeId: string },
  ) {
    this.lease = new Lease(d.redis, d.keys.reconcileLock, options.nodeId, options.intervalMs);
  }

  start(): void {
    if (this.options.intervalMs <= 0 || this.timer) return;
    this.stopping = new AbortController();
    this.timer = setInterval(() => {
      this.running ??= this.tick().finally(() => (this.running = null));
    }, this.options.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.stopping.abort();
    await this.running;
  }

  private async tick(): Promise<void> {
    try {
      if (!(await this.lease.renew())) return;
      const started = performance.now();
      const renewing = setInterval(() => void this.lease.renew(), this.options.intervalMs / 3);
      const report = await reconcile(this.d, {
        heal: true,
        dropOrphans: true,
        rebuildOnDrift: false,
        orphanAfterMs: this.options.orphanAfterMs,
        settleMs: 1000,
        // A pass reads every item: unpaced, it took a whole core for seconds each interval (bench/README.md).
        pacer: new Pacer(this.options.dutyPercent, this.stopping.signal),
      }).finally(() => clearInterval(renewing));
      this.d.metrics.reconcileItems.set(report.checkedItems);
      this.d.metrics.reconcilePassSeconds.set((performance.now() - started) / 1000);
      if (report.drift.length > 0 || report.orphanHolds.length > 0 || report.strandedIntents.length > 0) {
        this.d.log.warn(
          {
            strandedIntents: report.strandedIntents.length,
            drift: report.drift.length,
            orphanHolds: report.orphanHolds.length,
            corrected: report.repair?.corrected.length,
            unhealed: report.repair?.unhealed,
          },
          'reconcile: Redis and PostgreSQL disagreed',
        );
      }
    } catch (err) {
      if (this.stopping.signal.aborted) return; // stopped mid-pass: nothing was left half-done (repairs are not paced)
      this.d.log.warn({ err }, 'reconcile pass failed; next pass retries');
    }
  }
}

export interface ReconcileDeps {
  redis: RedisClient;
  db: pg.Pool;
  keys: Keys;
  decisions: Decisions;
  recovery: Recovery;
  metrics: Metrics;
  log: Logger;
  /** Asks whether an intent's process still holds its lease. */
  lease: Pick<NodeLease, 'isAlive'>;
  /** judgeIntentsAfterMs(DATABASE_QUERY_TIMEOUT_MS). */
  judgeIntentsAfterMs: number;
}

export interface ReconcileOptions {
  /** End stranded intents by the ledger, and correct drift in place (fenced, per item and location). */
  heal: boolean;
  /** Drop orphaned holds (always safe). */
  dropOrphans: boolean;
  /** Rebuild Redis from PostgreSQL if drift remains after that (the last resort: 503 while it runs). */
  rebuildOnDrift: boolean;
  /** A hold unknown to PostgreSQL counts as orphaned once its reservation is older than this. */
  orphanAfterMs: number;
  /** Differences must persist across two looks this far apart (in-flight requests settle in between). */
  settleMs: number;
  /** Paces the reading (the periodic pass: RECONCILE_DUTY_PERCENT); none: flat out, as an operator's run. */
  pacer?: Pacer;
}

const CHUNK = 500;
const zero = (): Figures => ({ onHand: 0, reserved: 0, holds: 0, safetyStock: 0 });
const same = (a: Figures, b: Figures) =>
  a.onHand === b.onHand && a.reserved === b.reserved && a.holds === b.holds && a.safetyStock === b.safetyStock;
const rowKey = (itemId: string, location: string) => `${itemId}\u0000${location}`;
/** A UUIDv7 starts with its creation time in milliseconds. */
const createdAtMs = (uuid: string) => parseInt(uuid.replace(/-/g, '').slice(0, 12), 16);

/**
 * Compares Redis with PostgreSQL (the source of truth) per item and location: on-hand, reserved units, live
 * holds and safety stock. Healing, in this order: stock decisions left open by a process that died (or gave up) are ended as the
 * ledger says; orphaned holds (granted in Redis, never recorded) are dropped; drift that persisted across both
 * looks is corrected in place by a fenced correction per (item, location); and only if drift remains and a rebuild
 * is asked for, Redis is rebuilt from PostgreSQL under the generation fence (mutations answer 503 meanwhile).
 */
export async function reconcile(d: ReconcileDeps, options: ReconcileOptions): Promise<ReconcileReport> {
  const items = await listItems(d);
  const strandedIntents = await findStranded(d, items, options.pacer);
  let intentsFinished = 0;
  let intentsTakenBack = 0;
  if (options.heal) {
    for (const s of strandedIntents) {
      const ended = await judge(d, s).catch((err: unknown) => {
        d.log.warn({ err, itemId: s.itemId, opId: s.opId }, 'reconcile: judging a stranded stock intent failed; next pass retries');
        return null;
      });
      if (ended === 'finish') intentsFinished++;
      if (ended === 'take_back') intentsTakenBack++;
    }
  }

  let first = await compare(d, items, options.pacer);
  if (first.drift.length > 0 && options.settleMs > 0) {
    await new Promise((r) => setTimeout(r, options.settleMs));
    const again = await compare(d, driftItems(first.drift), options.pacer);
    const persisting = new Set(again.drift.map((r) => rowKey(r.itemId, r.location)));
    first = { ...first, drift: first.drift.filter((r) => persisting.has(rowKey(r.itemId, r.location))) };
  }
  const orphanHolds = first.orphans.filter((o) => o.ageMs >= options.orphanAfterMs);
  d.metrics.reconcileDrift.set(first.drift.length);
  d.metrics.reconcileOrphans.set(orphanHolds.length);

  const report: ReconcileReport = { checkedItems: items.length, strandedIntents, drift: first.drift, orphanHolds, repair: null };
  if (!options.heal && !options.dropOrphans && !options.rebuildOnDrift) return report;

  let orphansDropped = 0;
  if (options.dropOrphans) {
    for (const o of orphanHolds) if (await d.decisions.dropHold(o.itemId, o.field)) orphansDropped++;
    d.metrics.reconcileRepairs.inc({ action: 'drop_orphan_hold' }, orphansDropped);
  }
  let remaining = orphansDropped > 0 ? await driftAmong(d, first.drift) : first.drift;
  const corrected: CorrectionReport[] = [];
  if (options.heal && remaining.length > 0) {
    for (const row of remaining) {
      const done = await correctDrift(d, row).catch((err: unknown) => {
        d.log.warn({ err, itemId: row.itemId, location: row.location }, 'reconcile: correction failed; next pass retries');
        return null;
      });
      if (done) corrected.push(done);
    }
    remaining = await driftAmong(d, remaining);
  }
  const rebuilt = options.rebuildOnDrift && remaining.length > 0;
  if (rebuilt) {
    d.log.warn({ rows: remaining }, 'reconcile: drift remains after correction; rebuilding Redis from PostgreSQL');
    await d.recovery.dropState();
    await d.recovery.ensure();
    d.metrics.reconcileRepairs.inc({ action: 'rebuild' });
  }
  report.repair = { intentsFinished, intentsTakenBack, orphansDropped, corrected, unhealed: remaining, rebuilt };
  return report;
}

const driftItems = (rows: readonly DriftRow[]) => [...new Set(rows.map((r) => r.itemId))];

/** Which of `rows` still differ, at one look. */
async function driftAmong(d: ReconcileDeps, rows: readonly DriftRow[]): Promise<DriftRow[]> {
  if (rows.length === 0) return [];
  const wanted = new Set(rows.map((r) => rowKey(r.itemId, r.location)));
  return (await compare(d, driftItems(rows))).drift.filter((r) => wanted.has(rowKey(r.itemId, r.location)));
}

// ---- stranded intents -----------------------------------------------------------------------------------------

/**
 * Intents old enough to judge (judgeIntentsAfterMs, by Redis' clock) and what becomes of each: one the ledger
 * recorded is finished whoever its process; one it voided is taken back; one it never recorded is taken back once
 * its process's lease has lapsed (or it has been open ABANDONED_INTENT_AFTER_MS), and left to its live process
 * otherwise.
 */
async function findStranded(d: ReconcileDeps, items: string[], pacer?: Pacer): Promise<StrandedIntent[]> {
  const now = await redisNow(d.redis);
  const old: Omit<StrandedIntent, 'ownerAlive' | 'ledger' | 'action'>[] = [];
  for (let i = 0; i < items.length; i += SURVEYED) {
    await pacer?.pause();
    const chunk = items.slice(i, i + SURVEYED);
    const surveyed = await d.decisions.survey(chunk, -1);
    chunk.forEach((itemId) => {
      for (const [opId, value] of surveyed.get(itemId)!.intents) {
        const intent = parseIntent(value);
        if (!intent) {
          d.log.warn({ itemId, opId, value }, 'reconcile: a stock intent not of the layout; left alone');
          continue;
        }
        const ageMs = now - intent.decidedMs;
        if (ageMs >= d.judgeIntentsAfterMs) {
          old.push({
            itemId,
            opId,
            location: intent.location,
            delta: intent.delta,
            safetyDelta: intent.safetyDelta ?? 0,
            kind: intent.kind,
            ageMs,
            nodeId: intent.nodeId,
          });
        }
      }
    });
  }
  if (old.length === 0) return [];
  const outcomes = await findOpOutcomes(d.db, old.map((o) => o.opId));
  const alive = new Map<string, boolean>();
  for (const nodeId of new Set(old.map((o) => o.nodeId))) alive.set(nodeId, nodeId !== '' && (await d.lease.isAlive(nodeId)));
  const out: StrandedIntent[] = [];
  for (const o of old) {
    const ledger = outcomes.get(o.opId) ?? 'none';
    const ownerAlive = alive.get(o.nodeId) ?? false;
    if (ledger === 'none' && ownerAlive && o.ageMs < ABANDONED_INTENT_AFTER_MS) continue; // in flight with its process
    out.push({ ...o, ownerAlive, ledger, action: ledger === 'recorded' ? 'finish' : 'take_back' });
  }
  return out;
}

/**
 * Ends one stranded intent as the ledger says. Taking back one the ledger has no row for first voids its op id
 * there, so its record can never land after (a batch that got there first wins, and the intent is finished instead).
 * Resolves to what was done, or null if the intent was gone already.
 */
async function judge(d: ReconcileDeps, s: StrandedIntent): Promise<'finish' | 'take_back' | null> {
  let action = s.action;
  if (s.ledger === 'none') {
    const reason =
      `reconciliation: stock decision ${s.opId} of node ${s.nodeId || '?'} (${s.ownerAlive ? 'alive, open' : 'lease lapsed'} ` +
      `${Math.round(s.ageMs)} ms) never recorded; taken back`;
    const outcome = await voidStockOp(d.db, { opId: s.opId, itemId: s.itemId, location: s.location, reason });
    if (outcome === 'recorded') action = 'finish';
  }
  const supply = s.kind === IntentKind.supply;
  const verb = action === 'finish' ? (supply ? 'apply' : 'settle') : supply ? 'abandon' : 'undo';
  const ended = await d.decisions.endStockChange(s.itemId, verb, s.opId);
  if (ended.kind !== 'changed') return null; // its process (or another pass) ended it meanwhile
  const metric = action === 'finish' ? 'finish_intent' : 'take_back_intent';
  d.metrics.reconcileRepairs.inc({ action: metric });
  d.log.warn(
    { itemId: s.itemId, location: s.location, opId: s.opId, kind: s.kind, delta: s.delta, safetyDelta: s.safetyDelta, nodeId: s.nodeId, ownerAlive: s.ownerAlive, verb },
    `reconcile: stranded stock intent ${action === 'finish' ? 'finished (recorded)' : 'taken back (never recorded)'}`,
  );
  return action;
}

// ---- the fenced correction ------------------------------------------------------------------------------------

/**
 * Corrects one (item, location) in place, from PostgreSQL's word read while its stock row is held (no batch can
 * commit a change there meanwhile) and Redis' current state (correct.lua). The order is what makes it exact: the
 * row is held first; then Redis' intents and holds there are listed; then PostgreSQL is asked about those; then the
 * script runs. Whatever Redis decided after the listing is in flight by construction: its record needs the row.
 * Resolves to the correction, or null when nothing needed changing (all in flight) or Redis is of another
 * generation. `row` is the drift found (its figures go into the audit row's reason).
 */
export async function correctDrift(d: ReconcileDeps, row: DriftRow): Promise<CorrectionReport | null> {
  const { itemId, location } = row;
  return withStockRowHeld(d.db, itemId, location, HOLD_LIMITS, async (held) => {
    const facts = await factsUnder(d, held);
    // The row is held while this connection's transaction lives; it outlives an idle gap of idleTimeoutMs.
    if (performance.now() - facts.readAt > HOLD_LIMITS.idleTimeoutMs / 2) throw new Error('correction: facts too old to act on');
    const done = await d.decisions.correct(itemId, location, facts);
    if (done.kind === 'stale') return { keep: false, result: null };
    const changed =
      !sameFigures(done.before, done.after) || done.intentsEnded > 0 || done.holdsSettled > 0 || done.holdsReadded > 0;
    if (!changed) return { keep: false, result: null };
    const report: CorrectionReport = {
      itemId,
      location,
      before: done.before,
      after: done.after,
      postgres: { onHand: held.onHand, reserved: held.reserved, safetyStock: held.safetyStock },
      inFlight: done.inFlight,
      intentsEnded: done.intentsEnded,
      holdsSettled: done.holdsSettled,
      holdsReadded: done.holdsReadded,
    };
    const reason =
      `drift persisted across two looks: Redis on-hand/reserved/holds/safety ${figuresText(row.redis)}, ` +
      `PostgreSQL ${figuresText(row.postgres)}`;
    await held.record({
      generation: done.generation,
      before: done.before,
      after: done.after,
      details: { inFlight: done.inFlight, intentsEnded: done.intentsEnded, holdsSettled: done.holdsSettled, holdsReadded: done.holdsReadded },
      reason,
    });
    d.metrics.reconcileRepairs.inc({ action: 'correct' });
    d.log.warn({ ...report, reason }, 'reconcile: Redis corrected from PostgreSQL (fenced, in place)');
    return { keep: true, result: report };
  });
}

const sameFigures = (a: RedisFigures, b: RedisFigures) =>
  a.onHand === b.onHand && a.reserved === b.reserved && a.pending === b.pending && a.safety === b.safety && a.safetyPending === b.safetyPending;
const figuresText = (f: Figures) => `${f.onHand}/${f.reserved}/${f.holds}/${f.safetyStock}`;

/** Redis' intents and holds at the row's location, then PostgreSQL's word on them (the row held throughout). */
async function factsUnder(d: ReconcileDeps, held: HeldStockRow) {
  const k = d.keys.item(held.itemId);
  const opIds = Object.entries(await d.redis.hgetall(k.intents))
    .filter(([, value]) => parseIntent(value)?.location === held.location)
    .map(([opId]) => opId);
  const reservationIds: string[] = [];
  await scanHash(d.redis, k.holds, (chunk) => {
    for (let i = 0; i < chunk.length; i += 2) {
      const at = parseHoldField(chunk[i]!);
      const state = parseHold(chunk[i + 1]!)?.state;
      if (at?.location === held.location && (state === HoldState.pending || state === HoldState.confirmed)) {
        reservationIds.push(at.reservationId);
      }
    }
  });
  const ops = await held.opOutcomes(opIds);
  const statuses = new Map<string, { state: HoldStateCode; version: number }>(
    [...(await held.statuses(reservationIds))].map(([id, { status, version }]) => [id, { state: HoldState[status], version }]),
  );
  const liveHolds = await held.liveHolds();
  return {
    generation: held.generation,
    onHand: held.onHand,
    safetyStock: held.safetyStock,
    ops,
    statuses,
    liveHolds,
    readAt: performance.now(),
  };
}

// ---- comparing ------------------------------------------------------------------------------------------------

/**
 * Every item either side knows: PostgreSQL's stock rows and Redis' sets of stocked items, one a slot group (no
 * keyspace scan).
 */
async function listItems(d: ReconcileDeps): Promise<string[]> {
  const ids = new Set<string>();
  for (const id of await findStockedItemIds(d.db)) ids.add(id);
  if (d.keys.cluster) {
    // 16,384 sets, each small: one pipeline of SMEMBERS per master.
    const sets = (await onEveryGroup(d.redis, d.keys, (p, group) => p.smembers(d.keys.itemsOf(group)))) as string[][];
    for (const set of sets) for (const id of set) ids.add(id);
  } else {
    const stream = d.redis.sscanStream(d.keys.items, { count: 1000 });
    for await (const batch of stream as AsyncIterable<string[]>) for (const id of batch) ids.add(id);
  }
  const sorted = [...ids].sort();
  if (!d.keys.cluster) return sorted;
  // A slot's items side by side, so that one survey call reads many of them (a call reads one slot's keys).
  const groups = new Map(sorted.map((id) => [id, d.keys.groupOf(d.keys.item(id).stock)]));
  return sorted.sort((a, b) => groups.get(a)! - groups.get(b)!);
}

async function compare(d: ReconcileDeps, items: string[], pacer?: Pacer): Promise<{ drift: DriftRow[]; orphans: OrphanHold[] }> {
  const drift: DriftRow[] = [];
  const orphans: OrphanHold[] = [];
  for (let i = 0; i < items.length; i += CHUNK) {
    const chunk = items.slice(i, i + CHUNK);
    const [redisSide, pgSide] = await Promise.all([readRedis(d, chunk, pacer), readPostgres(d, chunk)]);
    const recorded = await findPendingIds(d.db, [...new Set(redisSide.holds.map((h) => h.reservationId))]);
    const now = Date.now();
    for (const h of redisSide.holds) {
      if (!recorded.has(h.reservationId)) orphans.push({ ...h, ageMs: now - createdAtMs(h.reservationId) });
    }
    for (const key of new Set([...redisSide.figures.keys(), ...pgSide.keys()])) {
      const r = redisSide.figures.get(key) ?? zero();
      const p = pgSide.get(key) ?? zero();
      if (!same(r, p)) {
        const [itemId, location] = key.split('\u0000') as [string, string];
        drift.push({ itemId, location, redis: r, postgres: p });
      }
    }
  }
  return { drift, orphans };
}

/** Items surveyed between two pauses of a paced pass (a survey call reads 25). */
const SURVEYED = 100;
/** An item with at most this many hold fields has its pending holds listed by the survey; one with more is read in steps. */
const HOLDS_LISTED = 32;

async function redisNow(redis: RedisClient): Promise<number> {
  const [seconds, micros] = (await redis.time()) as [number | string, number | string];
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
}

/**
 * Redis' figures and pending holds of `items`, as a decision would see them (the survey expires due holds first).
 * Holds are counted from their fields, by location; an item with many (a hot one's, with its tombstones) is read with
 * HSCAN, which does not block Redis, rather than in the survey.
 */
async function readRedis(d: ReconcileDeps, items: string[], pacer?: Pacer) {
  const figures = new Map<string, Figures>();
  const holds: { itemId: string; field: string; reservationId: string }[] = [];
  const countHold = (itemId: string, field: string) => {
    const at = parseHoldField(field);
    if (!at) return;
    entry(figures, itemId, at.location).holds++;
    holds.push({ itemId, field, reservationId: at.reservationId });
  };
  for (let i = 0; i < items.length; i += SURVEYED) {
    await pacer?.pause();
    const chunk = items.slice(i, i + SURVEYED);
    const surveyed = await d.decisions.survey(chunk, HOLDS_LISTED);
    const many: string[] = [];
    for (const itemId of chunk) {
      const { stock, pendingHolds } = surveyed.get(itemId)!;
      for (const [location, { onHand, reserved, safety }] of stock) {
        if (onHand !== null) entry(figures, itemId, location).onHand = onHand;
        if (safety !== null) entry(figures, itemId, location).safetyStock = safety;
        if (reserved !== null) entry(figures, itemId, location).reserved = reserved;
      }
      if (pendingHolds) for (const field of pendingHolds) countHold(itemId, field);
      else many.push(itemId);
    }
    for (const itemId of many) {
      await pacer?.pause();
      await scanHash(d.redis, d.keys.item(itemId).holds, (chunk) => {
        for (let n = 0; n < chunk.length; n += 2) {
          if (parseHold(chunk[n + 1]!)?.state === HoldState.pending) countHold(itemId, chunk[n]!);
        }
      });
    }
  }
  return { figures, holds };
}

async function readPostgres(d: ReconcileDeps, items: string[]): Promise<Map<string, Figures>> {
  const figures = new Map<string, Figures>();
  for (const r of await findStock(d.db, items)) Object.assign(entry(figures, r.itemId, r.location), { onHand: r.onHand, safetyStock: r.safetyStock });
  for (const r of await sumLiveHolds(d.db, items)) Object.assign(entry(figures, r.itemId, r.location), { reserved: r.reserved, holds: r.holds });
  return figures;
}

function entry(map: Map<string, Figures>, itemId: string, location: string): Figures {
  const key = rowKey(itemId, location);
  let f = map.get(key);
  if (!f) map.set(key, (f = zero()));
  return f;
}
