import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { Keys } from '../../src/redis/keys.js';
import {
  checkStores,
  pairKey,
  readPostgres,
  readRedis,
  type IdempotencyRow,
  type Movement,
  type PostgresState,
  type RedisState,
} from '../helpers/invariants.js';
import { checkCalls, soldByClients } from './call-checks.js';
import { definitive, heldLines, linesLabel, type ClientLog, type KeyLog, type Line, type Sku } from './load.js';
import type { Sample } from './monitor.js';

/**
 * The invariants of architecture.md, checked after a drill: the stores by the one checker every suite shares
 * (test/helpers/invariants.ts), and here what only the drill knows, the clients' own log of what they were told.
 * Each check lists its violations precisely (ids, figures), never just "false".
 */

export type InvariantId = 'I1' | 'I2' | 'I3' | 'I4' | 'I5' | 'I6' | 'API';

export interface InvariantResult {
  id: InvariantId;
  name: string;
  ok: boolean;
  violations: string[];
}

export const INVARIANT_NAMES: Record<InvariantId, string> = {
  I1: 'no oversell',
  I2: 'one key, one reservation',
  I3: 'held or correctly expired',
  I4: 'no acknowledged change lost',
  I5: 'conservation',
  I6: '503 changed nothing',
  API: 'answers per api.md',
};

/** Holds this close to their expiry at snapshot time are left out of the Redis/PostgreSQL hold comparison. */
const EXPIRY_MARGIN_MS = 1_000;

class Violations {
  readonly list: string[] = [];
  add(message: string): void {
    this.list.push(message);
  }
  result(id: InvariantId): InvariantResult {
    return { id, name: INVARIANT_NAMES[id], ok: this.list.length === 0, violations: this.list };
  }
}

/** One consistent read of PostgreSQL (a repeatable-read transaction), then of Redis, taken with the load stopped. */
export interface Snapshot {
  postgres: PostgresState;
  redis: RedisState;
  /** Each reservation's reference (never changes once made: read beside the snapshot). */
  references: Map<string, string | null>;
}

/**
 * Waits until PostgreSQL records no pending reservation past its TTL (the sweepers of the API nodes record
 * them). Returns the ones still overdue after `timeoutMs`: I3 says the stored row reads `expired` within seconds.
 */
export async function waitForExpiriesRecorded(db: pg.Pool, timeoutMs: number): Promise<{ waitedMs: number; overdue: string[] }> {
  const started = Date.now();
  for (;;) {
    let overdue: string[] = [];
    try {
      const { rows } = await db.query<{ id: string; late_ms: number }>(
        `SELECT id, (extract(epoch FROM now() - expires_at) * 1000)::float8 AS late_ms
         FROM reservations WHERE status = 'pending' AND expires_at <= now() ORDER BY expires_at LIMIT 20`,
      );
      overdue = rows.map((r) => `${r.id} (${Math.round(r.late_ms)} ms past its TTL)`);
    } catch (err) {
      overdue = [`cannot read PostgreSQL: ${(err as Error).message}`];
    }
    if (overdue.length === 0) return { waitedMs: Date.now() - started, overdue };
    if (Date.now() - started > timeoutMs) return { waitedMs: Date.now() - started, overdue };
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** All of PostgreSQL (the drill's database is its own), and Redis for the drill's items. */
export async function takeSnapshot(db: pg.Pool, redis: Redis, keys: Keys, skus: readonly Sku[]): Promise<Snapshot> {
  const postgres = await readPostgres(db);
  const { rows } = await db.query<{ id: string; reference: string | null }>('SELECT id, reference FROM reservations');
  return {
    postgres,
    redis: await readRedis(redis, keys, [...new Set(skus.map((s) => s.itemId))]),
    references: new Map(rows.map((r) => [r.id, r.reference])),
  };
}

/** A key's request in words: what it asked for, an allocated line as `@(allocated)`. */
const keyLabel = (k: KeyLog) => k.body.lines.map((l) => `${l.quantity}×${l.itemId}@${l.location ?? (k.body.allocation ? '(allocated)' : 'default')}`).join(' + ');
const sameLines = (a: readonly Line[], b: readonly Line[]) =>
  a.length === b.length && a.every((l, i) => l.itemId === b[i]!.itemId && l.location === b[i]!.location && l.quantity === b[i]!.quantity);

export interface CheckInput {
  snapshot: Snapshot;
  log: ClientLog;
  skus: readonly Sku[];
  /** Still-pending reservations past their TTL after waiting for the sweepers. */
  overdue: string[];
  /** Instant-by-instant samples taken during the load that broke I1. */
  monitorViolations: Sample[];
  /** PostgreSQL sessions left idle in a transaction by the fault (see DrillEnv.strandedSessions). */
  strandedSessions: string[];
  /** Where the checks write what they saw that is allowed but worth reading (the drill report's notes). */
  notes?: string[];
}

/** A UUIDv7 starts with the milliseconds of its making: for a reservation id, when its reserve was decided. */
const decidedAtMs = (uuid: string): number => parseInt(uuid.replace(/-/g, '').slice(0, 12), 16);

export function checkInvariants(input: CheckInput): InvariantResult[] {
  const { snapshot, log, overdue } = input;
  const pgs = snapshot.postgres;
  const i1 = new Violations();
  const i2 = new Violations();
  const i3 = new Violations();
  const i4 = new Violations();
  const i5 = new Violations();
  const i6 = new Violations();
  const api = new Violations();
  const add = (map: Map<string, number>, key: string, n: number) => map.set(key, (map.get(key) ?? 0) + n);

  // Stock increases the clients were not told were applied (503, no answer) and the ledger does not have: if
  // Redis applied one anyway (a decision whose record never came), it offers units PostgreSQL never supplied.
  const byReason = new Map<string, Movement[]>();
  for (const m of pgs.movements) if (m.reason !== null) byReason.set(m.reason, [...(byReason.get(m.reason) ?? []), m]);
  const unrecordedSupply = new Map<string, number>();
  for (const a of log.stock) {
    const failed = a.status === 'network' || a.status >= 500;
    if (a.mode === 'adjust' && failed && a.amount > 0 && a.reason !== null && !byReason.has(a.reason)) {
      add(unrecordedSupply, pairKey(a.itemId, a.location), a.amount);
    }
  }
  /** Names an oversell that unrecorded stock increases account for: the phantom-stock signature. */
  const phantom = (key: string, excess: number) => {
    const units = unrecordedSupply.get(key) ?? 0;
    return units >= excess
      ? ` [phantom stock: within the ${units} units of stock increases answered 503/no answer that PostgreSQL never recorded]`
      : '';
  };

  // ---- The stores: I1, I2, I3 and I5 as PostgreSQL and Redis show them (the load never reduces stock). Redis =
  // PostgreSQL figure for figure is the reconciliation step's to judge (the harness), not the snapshot's.
  const stores = checkStores(snapshot, { holdsWithinSupply: true, expiryMarginMs: EXPIRY_MARGIN_MS, explainOversell: phantom });
  for (const v of stores.violations.I1) i1.add(v);
  for (const v of stores.violations.I2) i2.add(v);
  for (const v of stores.violations.I3) i3.add(v);
  for (const v of stores.violations.I5) i5.add(v);
  const supplied = new Map(stores.figures.map((f) => [pairKey(f.itemId, f.location), f.ledger.supplied]));

  // ---- I1 no oversell: what the load asked for, and what the monitor saw while it ran
  for (const m of pgs.movements) {
    if ((m.kind === 'set' || m.kind === 'adjust') && m.onHand < 0) {
      i1.add(`${pairKey(m.itemId, m.location)}: ledger has a stock reduction of ${m.onHand} (${m.kind}, reason ${String(m.reason)}) that no client asked for`);
    }
  }
  for (const v of input.monitorViolations) {
    const key = pairKey(v.itemId, v.location);
    // PostgreSQL's reserved still counts expired holds the sweeper has not recorded: only negatives matter there.
    const excess = v.source === 'Redis' ? Math.max(-v.onHand, v.reserved - v.onHand, -v.reserved) : Math.max(-v.onHand, -v.reserved);
    i1.add(`during the load at ${new Date(v.at).toISOString()}: ${v.source} ${key} on-hand ${v.onHand}, reserved ${v.reserved}${phantom(key, excess)}`);
  }

  // ---- I2 one key, one reservation; I4 acknowledged reservations are stored as answered
  const storedByKey = new Map<string, IdempotencyRow>();
  for (const row of pgs.idempotency) if (!storedByKey.has(row.key)) storedByKey.set(row.key, row);
  for (const k of log.keys.values()) {
    for (const a of k.attempts) {
      if (definitive(a.status, a.code) && a.status !== 201 && !(a.status === 409 && a.code === 'insufficient_stock')) {
        api.add(`reserve ${k.key} (${keyLabel(k)}): answered ${String(a.status)} ${a.code ?? ''}; the load only sends valid requests for stocked items`);
      }
    }
    const created = k.attempts.filter((a) => a.status === 201);
    const ids = [...new Set(created.map((a) => a.id))];
    const stored = storedByKey.get(k.key);
    if (ids.length > 1) i2.add(`key ${k.key}: 201 answers name ${ids.length} reservations: ${ids.join(', ')}`);
    const id = ids[0];
    if (id === undefined) {
      const last = [...k.attempts].reverse().find((a) => definitive(a.status, a.code));
      // A request the client gave up on (no answer) can still reach the service after the client's retry was
      // answered: it is a second request with the key, and if it decides after the retry's refusal it reserves. The
      // network, not the service, reorders them; the hold expires at its TTL. Seen only while decisions run seconds
      // late (the client waits 4 s); any reservation decided before the refused retry was sent is still a violation.
      const late =
        last !== undefined &&
        stored !== undefined &&
        k.attempts.some((a) => a.status === 'network' && a.sentAt < last.sentAt) &&
        decidedAtMs(stored.reservationId) >= last.sentAt;
      if (late) {
        input.notes?.push(
          `key ${k.key}: an attempt the client abandoned was decided after its retry was answered ${String(last.status)} ` +
            `${last.code ?? ''}, and reserved ${stored.reservationId} (answers: ${history(k.attempts)})`,
        );
      } else if (last && stored) {
        i2.add(
          `key ${k.key}: answered ${String(last.status)} ${last.code ?? ''} (nothing reserved), yet PostgreSQL created reservation ${stored.reservationId} for it` +
            ` (answers: ${history(k.attempts)})`,
        );
      }
      continue;
    }
    // After a 201, the same key and body must answer that 201 again (api.md), whatever happened to Redis.
    const firstCreated = Math.min(...created.map((a) => a.at));
    for (const a of k.attempts) {
      if (a.sentAt > firstCreated && definitive(a.status, a.code) && a.status !== 201) {
        i2.add(
          `key ${k.key}: acknowledged as ${id}, but a re-send at ${new Date(a.sentAt).toISOString()} was answered ${String(a.status)} ${a.code ?? ''} instead of replaying the 201`,
        );
      }
    }
    if (!stored) i4.add(`key ${k.key}: acknowledged 201 ${id}, but PostgreSQL has no idempotency record for the key`);
    else if (stored.reservationId !== id) i2.add(`key ${k.key}: acknowledged ${id}, but PostgreSQL binds the key to ${stored.reservationId}`);
    const r = pgs.reservations.get(id);
    if (!r) {
      i4.add(`key ${k.key}: acknowledged reservation ${id} (${keyLabel(k)}) is missing from PostgreSQL`);
      continue;
    }
    // An allocated reservation holds what its first 201 said; every later 201 (a replay) says the same.
    const held = heldLines(k);
    if (!sameLines(r.lines, held)) i4.add(`reservation ${id}: acknowledged ${linesLabel(held)}, PostgreSQL has ${linesLabel(r.lines)}`);
    for (const a of created) {
      if (a.lines && !sameLines(a.lines, held)) i2.add(`key ${k.key}: 201 answers hold ${linesLabel(held)} and ${linesLabel(a.lines)}`);
    }
  }

  // ---- I3, I4, I6 what the calls on reservations were answered (confirm, release, extend, by reference)
  const calls = checkCalls({ postgres: pgs, references: snapshot.references, log });
  for (const v of calls.I3) i3.add(v);
  for (const v of calls.I4) i4.add(v);
  for (const v of calls.I6) i6.add(v);
  for (const v of calls.API) api.add(v);

  // ---- I4 acknowledged stock changes are in the ledger; I6 a 503 applied nothing
  const setRows = new Map<string, number>();
  for (const m of pgs.movements) if (m.kind === 'set') add(setRows, pairKey(m.itemId, m.location), 1);
  const ackedSets = new Map<string, number>();
  for (const a of log.stock) {
    const key = pairKey(a.itemId, a.location);
    if (a.mode === 'set') {
      if (a.status === 200) add(ackedSets, key, 1);
      continue;
    }
    const rows = a.reason === null ? [] : (byReason.get(a.reason) ?? []);
    if (a.status === 200) {
      if (rows.length !== 1 || rows[0]!.onHand !== a.amount || rows[0]!.itemId !== a.itemId || rows[0]!.location !== a.location) {
        i4.add(`stock adjustment ${a.reason} (${a.amount > 0 ? '+' : ''}${a.amount} ${key}): acknowledged, ledger has ${rows.length} matching rows`);
      }
    } else if (a.status === 503 && rows.length > 0) {
      i6.add(`stock adjustment ${a.reason} (+${a.amount} ${key}): answered 503 "nothing was applied", yet the ledger recorded it`);
    } else if (a.status === 'network' && rows.length > 1) {
      i4.add(`stock adjustment ${a.reason}: recorded ${rows.length} times`);
    }
  }
  for (const [key, n] of ackedSets) {
    if ((setRows.get(key) ?? 0) < n) i4.add(`${key}: ${n} acknowledged stock sets, ledger has ${setRows.get(key) ?? 0}`);
  }

  // ---- I3 expiry: overdue rows recorded (the stores' side is above)
  const stranded =
    input.strandedSessions.length > 0
      ? ` [stranded transaction: ${input.strandedSessions.length} PostgreSQL session(s) left idle in transaction holding locks]`
      : '';
  for (const o of overdue) i3.add(`still pending in PostgreSQL after the sweepers had time: ${o}${stranded}`);

  // Client-side bound: what clients were told they bought never exceeds what was supplied.
  for (const [key, n] of soldByClients(log)) {
    const sup = supplied.get(key) ?? 0;
    if (n > sup) i1.add(`${key}: clients were told they bought ${n} units, only ${sup} were supplied${phantom(key, n - sup)}`);
  }

  const internal = log.statusCounts.get('500') ?? 0;
  if (internal > 0) api.add(`${internal} answers were 500 internal (a dependency failure must answer 503)`);

  return [i1.result('I1'), i2.result('I2'), i3.result('I3'), i4.result('I4'), i5.result('I5'), i6.result('I6'), api.result('API')];
}

/** api.md: a failed request binds nothing, and clients retry with the same key; issue 10 bounds how soon it works. */
export const RETRY_RESOLVED_WITHIN_MS = 5_000;

/** How soon the creates the clients were not answered for good got their definitive answer. */
export interface RetryResolution {
  /** Keys whose create got a 5xx, no answer, or 409 idempotency_key_in_use at least once. */
  unacknowledged: number;
  /** The longest such key took, from recovery (or its first such answer, if later) to its first definitive answer. */
  worstMs: number | null;
  /** Keys that took longer than RETRY_RESOLVED_WITHIN_MS, or never got a definitive answer. */
  late: string[];
}

/**
 * Every create the clients retried (they retry until a definitive answer: test/drills/load.ts) must be answered
 * for good within RETRY_RESOLVED_WITHIN_MS of `recoveredAt` (every node ready), or of its first non-definitive
 * answer when that came later (a "409 in use" while a twin request was in flight, a claim of a node that died).
 */
export function retryResolution(log: ClientLog, recoveredAt: number): RetryResolution {
  const out: RetryResolution = { unacknowledged: 0, worstMs: null, late: [] };
  for (const k of log.keys.values()) {
    const creates = k.attempts.filter((a) => !a.replay);
    const faulty = creates.filter((a) => !definitive(a.status, a.code));
    if (faulty.length === 0) continue;
    out.unacknowledged++;
    const firstFault = Math.min(...faulty.map((a) => a.at));
    const answered = creates.filter((a) => definitive(a.status, a.code) && a.at >= firstFault).map((a) => a.at);
    const what = `create ${k.key} (${keyLabel(k)}), first answered ${describeAnswer(faulty.find((a) => a.at === firstFault)!)} at ${new Date(firstFault).toISOString()}`;
    if (answered.length === 0) {
      const last = creates.reduce((x, y) => (y.at > x.at ? y : x));
      out.late.push(`${what}: never answered for good (last answer ${describeAnswer(last)} at ${new Date(last.at).toISOString()})`);
      continue;
    }
    const ms = Math.max(0, Math.min(...answered) - Math.max(recoveredAt, firstFault));
    out.worstMs = Math.max(out.worstMs ?? 0, ms);
    if (ms > RETRY_RESOLVED_WITHIN_MS) out.late.push(`${what}: answered for good ${ms} ms after recovery, over ${RETRY_RESOLVED_WITHIN_MS} ms`);
  }
  return out;
}

const describeAnswer = (a: { status: number | 'network'; code?: string }) => `${String(a.status)}${a.code ? ` ${a.code}` : ''}`;

/** A key's answers in order, each with when it was sent and answered (ISO times of day), for a violation's message. */
const history = (attempts: readonly { status: number | 'network'; code?: string; sentAt: number; at: number }[]) =>
  attempts
    .map((a) => `${describeAnswer(a)} [${new Date(a.sentAt).toISOString().slice(11, 23)}→${new Date(a.at).toISOString().slice(11, 23)}]`)
    .join(', ');

/** Keys the clients gave up on without a definitive answer (their outcome is unknown to them). */
export function unresolvedKeys(log: ClientLog): number {
  let n = 0;
  for (const k of log.keys.values()) if (!k.attempts.some((a) => definitive(a.status, a.code))) n++;
  return n;
}
