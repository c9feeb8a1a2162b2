import { isDeepStrictEqual } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, outcome, problemOf, reservationOf, startHttpApp, type Answer } from '../helpers/api.js';
import type { TestApp } from '../helpers/app.js';
import { checkInvariants, figuresOf } from '../helpers/invariants.js';
import { mulberry32, seedFromEnv } from '../helpers/random.js';
import { untilTime, waitFor } from '../helpers/wait.js';
import {
  DEFAULT_LOCATION,
  MAX_TTL_SECONDS,
  Model,
  type Allocation,
  type Expected,
  type IfMatch,
  type ModelLine,
  type ReserveBody,
  type RequestLine,
  type Strategy,
} from './model.js';

/**
 * A seeded randomized simulation (tigerbeetle's VOPR idea, small): reserve / confirm (whole or part) / release /
 * extend / adjust / set / expire / replay / list and release by reference against the real service (Redis +
 * PostgreSQL) and against the pure model in model.ts, one request at a time, comparing every answer (status, code,
 * short lines, documents) and every item's availability after every step, and checking the invariants (Redis =
 * PostgreSQL, no oversell) every CHECK_EVERY steps.
 *
 * Replay: `SEED=<n> npx vitest run test/model`. The PRNG fixes the operations; time is paced on a virtual grid
 * (a step every GRID_MS) so that which reservations have expired at each step is the same from run to run as
 * long as each step finishes within its slot. No operation runs within ±MARGIN_MS of a pending reservation's
 * TTL boundary: the driver waits past it, so the answers do not depend on scheduling jitter.
 */

const SEED = seedFromEnv();
const STEPS = Number(process.env.SIM_STEPS ?? 320);
const GRID_MS = 50;
const MARGIN_MS = 150;
const CHECK_EVERY = 64;
const CHECK_BUDGET_MS = 600;
const SHORT_TTL_SHARE = 0.35;
const LONG_TTL_SECONDS = 600;

const ITEMS = ['sim-a', 'sim-b', 'sim-c', 'sim-d'] as const;
const GHOST = 'sim-ghost'; // never stocked
/** Pairs stocked at the start; `sim-d@wh-3` exists only once a set creates it. */
const INITIAL_PAIRS = [
  { itemId: 'sim-a', location: DEFAULT_LOCATION },
  { itemId: 'sim-a', location: 'wh-1' },
  { itemId: 'sim-a', location: 'wh-2' },
  { itemId: 'sim-b', location: DEFAULT_LOCATION },
  { itemId: 'sim-b', location: 'wh-2' },
  { itemId: 'sim-c', location: DEFAULT_LOCATION },
  { itemId: 'sim-c', location: 'wh-2' },
  { itemId: 'sim-d', location: DEFAULT_LOCATION },
];
const LATE_PAIR = { itemId: 'sim-d', location: 'wh-3' };
const ALL_PAIRS = [...INITIAL_PAIRS, LATE_PAIR];
/** Locations an allocation may name: every stocked one, and one never stocked (a candidate to skip). */
const LOCATIONS = [DEFAULT_LOCATION, 'wh-1', 'wh-2', 'wh-3', 'wh-9'];
const STRATEGIES: Strategy[] = ['ordered', 'most_available', 'single_location'];
/** Few references, so that each names several reservations (an order's, a saga's), and one never used. */
const REFERENCES = ['order-1', 'order-2', 'order-3', 'order-4', 'saga-5', 'saga-6'];
const UNUSED_REFERENCE = 'order-none';
const STATUSES = ['pending', 'confirmed', 'released', 'expired'] as const;
const UNKNOWN_IDS = ['00000000-0000-7000-8000-000000000000', 'not-a-uuid'];
/** Extend bodies the contract refuses (400): out of range, not an integer, missing, another field. */
const BAD_EXTEND_BODIES: unknown[] = [{ ttlSeconds: 0 }, { ttlSeconds: MAX_TTL_SECONDS + 1 }, { ttlSeconds: 1.5 }, { ttlSeconds: '600' }, {}, { ttlSeconds: 60, extra: 1 }, undefined];
/**
 * How far the service's clock (Redis') may read from this process' around a decision: the same machine's clock,
 * read in ms; well under MARGIN_MS, so an expiry computed from anything but the decision's now shows.
 */
const CLOCK_SLACK_MS = 50;

type Op =
  | 'reserve'
  | 'replay'
  | 'reuse_key'
  | 'confirm'
  | 'partial_confirm'
  | 'release'
  | 'extend'
  | 'get'
  | 'adjust'
  | 'set'
  | 'expire'
  | 'wait'
  | 'list_by_reference'
  | 'release_by_reference'
  | 'duplicate_lines'
  | 'bad_allocation'
  | 'unknown_reservation';

const WEIGHTS: [Op, number][] = [
  ['reserve', 28],
  ['replay', 5],
  ['reuse_key', 3],
  ['confirm', 14],
  ['partial_confirm', 8],
  ['release', 9],
  ['extend', 7],
  ['get', 5],
  ['adjust', 10],
  ['set', 8],
  ['expire', 2],
  ['wait', 2],
  ['list_by_reference', 4],
  ['release_by_reference', 3],
  ['duplicate_lines', 1],
  ['bad_allocation', 1],
  ['unknown_reservation', 2],
];

class SimulationFailure extends Error {}

/** Differences between an answer and what the model expects (empty when they agree). */
function differences(a: Answer, e: Expected): string[] {
  const out: string[] = [];
  if (a.status !== e.status) out.push(`status ${a.status}, model says ${e.status}`);
  if ('code' in e) {
    const p = problemOf(a);
    if (p?.code !== e.code) out.push(`code ${String(p?.code)}, model says ${e.code}`);
    if (!(a.headers['content-type'] ?? '').startsWith('application/problem+json')) out.push('not application/problem+json');
    if (e.lines && !isDeepStrictEqual(p?.lines, e.lines)) out.push(`short lines ${JSON.stringify(p?.lines)}, model says ${JSON.stringify(e.lines)}`);
    return out;
  }
  if (a.status >= 400) return out;
  // Every answer that is one reservation document names its version as its ETag (api.md "Versions").
  if ('reservationId' in e || 'created' in e || 'replayOf' in e) {
    const version = (a.body as { version?: unknown }).version;
    if (a.headers['etag'] !== `"${String(version)}"`) out.push(`ETag ${String(a.headers['etag'])} for version ${String(version)}`);
  }
  if ('availability' in e && !isDeepStrictEqual(a.body, e.availability)) {
    out.push(`availability ${JSON.stringify(a.body)}, model says ${JSON.stringify(e.availability)}`);
  }
  if ('reservationId' in e) {
    const doc = reservationOf(a);
    if (doc?.id !== e.reservationId) out.push(`id ${String(doc?.id)}, model says ${e.reservationId}`);
    if (doc?.status !== e.reservationStatus) out.push(`status "${String(doc?.status)}", model says "${e.reservationStatus}"`);
    if (doc?.version !== e.version) out.push(`version ${String(doc?.version)}, model says ${e.version}`);
    if (!isDeepStrictEqual(doc?.lines, e.lines)) out.push(`lines ${JSON.stringify(doc?.lines)}, model says ${JSON.stringify(e.lines)}`);
    const expiresAt = Date.parse(String(doc?.expiresAt));
    if (typeof e.expiresAt === 'number') {
      if (expiresAt !== e.expiresAt) out.push(`expiresAt ${String(doc?.expiresAt)}, model says ${new Date(e.expiresAt).toISOString()}`);
    } else if (expiresAt - Date.parse(String(doc?.updatedAt)) !== e.expiresAt.afterUpdateMs) {
      out.push(`expiresAt ${String(doc?.expiresAt)} − updatedAt ${String(doc?.updatedAt)} ≠ ${e.expiresAt.afterUpdateMs} ms`);
    }
  }
  if ('created' in e) {
    const doc = reservationOf(a);
    const c = e.created;
    if (a.headers['idempotent-replayed'] !== undefined) out.push('a new reservation flagged as replayed');
    if (doc.status !== 'pending') out.push(`new reservation status ${doc.status}`);
    if (!isDeepStrictEqual(doc.lines, c.lines)) out.push(`lines ${JSON.stringify(doc.lines)}, model says ${JSON.stringify(c.lines)}`);
    if (doc.reference !== c.reference) out.push(`reference ${String(doc.reference)}, model says ${String(c.reference)}`);
    if (!isDeepStrictEqual(doc.metadata, c.metadata)) out.push(`metadata ${JSON.stringify(doc.metadata)}, model says ${JSON.stringify(c.metadata)}`);
    if (Date.parse(doc.expiresAt) - Date.parse(doc.createdAt) !== c.ttlMs) out.push(`expiresAt − createdAt ≠ ${c.ttlMs} ms`);
    if (doc.updatedAt !== doc.createdAt) out.push('updatedAt ≠ createdAt on a new reservation');
    if (doc.version !== 1) out.push(`version ${doc.version} on a new reservation`);
    const extra = doc as unknown as { priority?: unknown; allocation?: unknown };
    if (extra.priority !== c.priority) out.push(`priority ${String(extra.priority)}, model says ${c.priority}`);
    if (!isDeepStrictEqual(extra.allocation, c.allocation)) out.push(`allocation ${JSON.stringify(extra.allocation)}, model says ${JSON.stringify(c.allocation)}`);
  }
  if ('items' in e) {
    const body = a.body as { items?: { id: string; status: string; version: number }[]; nextCursor?: unknown; reference?: unknown };
    const got = (body.items ?? []).map((d) => ({ id: d.id, status: d.status, version: d.version }));
    if (!isDeepStrictEqual(got, e.items)) out.push(`items ${JSON.stringify(got)}, model says ${JSON.stringify(e.items)}`);
    if (e.more !== undefined && (body.nextCursor !== null) !== e.more) out.push(`nextCursor ${String(body.nextCursor)}, model says ${e.more ? 'more' : 'none'}`);
    if (e.reference !== undefined && body.reference !== e.reference) out.push(`reference ${String(body.reference)}, model says ${e.reference}`);
  }
  if ('replayOf' in e) {
    if (a.headers['idempotent-replayed'] !== 'true') out.push('a replay without Idempotent-Replayed: true');
    if (!isDeepStrictEqual(a.body, e.replayOf)) out.push(`replayed ${JSON.stringify(a.body)}, first answer was ${JSON.stringify(e.replayOf)}`);
  }
  return out;
}

describe('simulation against the model', () => {
  let t: TestApp;

  beforeAll(async () => {
    t = await startHttpApp({ SWEEPER_INTERVAL_MS: 100 });
  });
  afterAll(async () => {
    await t?.close();
  });

  it(`${STEPS} seeded random steps agree with the model (SEED=${SEED})`, async () => {
    const rng = mulberry32(SEED);
    const api = Api.inject(t.app);
    let model = new Model();
    const created: { id: string; key: string }[] = [];
    const usedKeys: { key: string; body: ReserveBody }[] = [];
    const history: string[] = [];
    const seen = new Map<string, number>(); // "confirm 409 reservation_expired" → how often
    let step = 0;
    const T0 = Math.ceil(Date.now() / GRID_MS) * GRID_MS + GRID_MS;
    let v = 0; // virtual time: the current step runs at T0 + v

    const fail = (message: string): never => {
      throw new SimulationFailure(
        `SEED=${SEED} (replay: SEED=${SEED} npx vitest run test/model)\nstep ${step}: ${message}\n\nlast steps:\n${history.slice(-25).join('\n')}`,
      );
    };

    /** Moves virtual time on to the first grid slot at or after `ms` past T0. */
    const advanceTo = (ms: number) => {
      v = Math.max(v, Math.ceil(ms / GRID_MS) * GRID_MS);
    };

    /** Waits for this step's slot, first moving past any pending reservation's TTL boundary that is too close. */
    const paceStep = async () => {
      for (;;) {
        const now = T0 + v;
        const near = model.allReservations().filter((r) => r.state === 'pending' && Math.abs(now - r.expiresAt) < MARGIN_MS);
        if (near.length === 0) break;
        advanceTo(Math.max(...near.map((r) => r.expiresAt)) + MARGIN_MS - T0);
      }
      await untilTime(T0 + v + 5);
    };

    /**
     * Sends one request and compares the answer with the model's. The decision happened at some instant between
     * sending and receiving; if a TTL boundary fell in between (only when a step overran its slot by far), each
     * side of it is tried and the model follows the one the service took.
     */
    const call = async (label: string, send: () => Promise<Answer>, expect: (m: Model, now: number) => Expected) => {
      const t0 = Date.now();
      const answer = await send();
      const t1 = Date.now();
      const boundaries = model.allReservations().filter((r) => r.state === 'pending' && r.expiresAt > t0 && r.expiresAt <= t1);
      const instants = [t0, ...boundaries.map((r) => r.expiresAt).sort((a, b) => a - b)];
      let first: string[] | undefined;
      for (const now of instants) {
        const m = instants.length === 1 ? model : model.clone();
        const expected = expect(m, now);
        const diffs = differences(answer, expected);
        if (diffs.length === 0) {
          model = m;
          history.push(`#${step} +${v}ms ${label} → ${outcome(answer)}`);
          const kind = `${label.split(' ')[0]!} ${outcome(answer)}`;
          seen.set(kind, (seen.get(kind) ?? 0) + 1);
          return { answer, expected };
        }
        first ??= diffs;
      }
      return fail(`${label} → ${outcome(answer)} ${answer.text}\n  ${first!.join('\n  ')}`);
    };

    const stockPairs = () => ALL_PAIRS.filter((p) => model.onHand(p.itemId, p.location) !== undefined);

    const randomAllocation = (): Allocation => {
      const strategy = rng.pick(STRATEGIES);
      const named = strategy !== 'most_available' || rng.chance(0.5);
      return {
        strategy,
        ...(named ? { locations: rng.sample(LOCATIONS, rng.int(1, 4)) } : {}),
        ...(strategy !== 'single_location' && rng.chance(0.6) ? { split: rng.chance(0.7) } : {}),
      };
    };

    /** Lines for an allocation: each allocated item in one line only; now and then a line held at a named location. */
    const allocatedLines = (): RequestLine[] => {
      const items = rng.sample([...ITEMS, ...(rng.chance(0.03) ? [GHOST] : [])], rng.pick([1, 1, 2, 3]));
      return items.map((itemId) => {
        const fixed = rng.chance(0.2) ? ALL_PAIRS.find((p) => p.itemId === itemId) : undefined;
        return { itemId, ...(fixed ? { location: fixed.location } : {}), quantity: rng.int(1, 6) };
      });
    };

    const randomBody = (): ReserveBody => {
      const allocation = rng.chance(0.35) ? randomAllocation() : undefined;
      const pool = rng.chance(0.03) ? [...ALL_PAIRS, { itemId: GHOST, location: DEFAULT_LOCATION }] : ALL_PAIRS;
      const lines: RequestLine[] = allocation
        ? allocatedLines()
        : rng.sample(pool, rng.pick([1, 1, 2, 2, 3])).map((p) => ({
            itemId: p.itemId,
            ...(p.location === DEFAULT_LOCATION && rng.chance(0.5) ? {} : { location: p.location }),
            quantity: rng.int(1, 3),
          }));
      return {
        lines,
        ttlSeconds: rng.chance(SHORT_TTL_SHARE) ? rng.int(1, 2) : LONG_TTL_SECONDS,
        ...(rng.chance(0.4) ? { reference: rng.pick(REFERENCES) } : {}),
        ...(rng.chance(0.2) ? { metadata: { channel: rng.pick(['web', 'app']), step: String(step) } } : {}),
        ...(allocation ? { allocation } : {}),
        ...(rng.chance(0.25) ? { priority: rng.pick(['high', 'high', 'normal'] as const) } : {}),
      };
    };

    const reserve = async (key: string, body: ReserveBody) => {
      const { answer, expected } = await call(`reserve ${key} ${JSON.stringify(body)}`, () => api.reserve(body, key), (m, now) =>
        m.reserve(key, body, now),
      );
      if ('created' in expected) {
        const doc = reservationOf(answer);
        model.created(key, body, expected.created.lines, doc.id, Date.parse(doc.expiresAt), Date.parse(doc.createdAt), answer.body);
        created.push({ id: doc.id, key });
      }
    };

    /**
     * If-Match for a confirm, release or extend: mostly none; else the version the model says it is at, a stale one, `*`
     * or a malformed one. Sent as the header (undefined: none) and as the model reads it.
     */
    const randomIfMatch = (id: string): { header: string | undefined; model: IfMatch } => {
      const r = model.reservation(id);
      const current = r ? model.versionOf(r, T0 + v) : 1;
      const roll = rng.int(1, 100);
      if (roll <= 55) return { header: undefined, model: undefined };
      if (roll <= 75) return { header: `"${current}"`, model: current };
      if (roll <= 88) {
        const stale = rng.pick([current - 1, current + 1, current + 5].filter((n) => n >= 1));
        return { header: `"${stale}"`, model: stale };
      }
      if (roll <= 92) return { header: '*', model: undefined };
      return { header: rng.pick(['W/"1"', '1', '"0"', '"x"', '"1", "2"']), model: 'malformed' };
    };

    /** A valid TTL mostly, short (to pass during the run) or long; else a body the contract refuses. */
    const randomExtendBody = (): unknown => {
      if (rng.chance(0.12)) return rng.pick(BAD_EXTEND_BODIES);
      if (rng.chance(SHORT_TTL_SHARE)) return { ttlSeconds: rng.int(1, 2) };
      return { ttlSeconds: rng.pick([60, LONG_TTL_SECONDS, MAX_TTL_SECONDS]) };
    };

    /**
     * A partial confirm's body over the pairs `held`: mostly valid (each listed pair at 1..held, some listing every
     * pair in full, most leaving some out), else one fault (a pair not held, more than held, a pair twice, a shape
     * the contract refuses); now and then `{}`, which confirms everything.
     */
    const randomConfirmBody = (held: ModelLine[]): unknown => {
      if (rng.chance(0.06)) return {};
      const entry = (l: { itemId: string; location: string }, quantity: number): RequestLine => ({
        itemId: l.itemId,
        ...(l.location === DEFAULT_LOCATION && rng.chance(0.5) ? {} : { location: l.location }),
        quantity,
      });
      const pairs = held.length > 0 ? held : rng.sample(ALL_PAIRS, rng.int(1, 2)).map((p) => ({ ...p, quantity: rng.int(1, 3) }));
      const lines = rng.chance(0.2)
        ? pairs.map((l) => entry(l, l.quantity))
        : rng.sample(pairs, rng.int(1, pairs.length)).map((l) => entry(l, rng.int(1, l.quantity)));
      const fault = rng.int(1, 100);
      if (fault <= 72) return { lines: rng.shuffle(lines) };
      if (fault <= 80) {
        const others = [...ALL_PAIRS, { itemId: GHOST, location: DEFAULT_LOCATION }].filter(
          (p) => !pairs.some((l) => l.itemId === p.itemId && l.location === p.location),
        );
        return { lines: rng.shuffle([...lines, ...(others.length > 0 ? [entry(rng.pick(others), 1)] : [])]) };
      }
      if (fault <= 88) {
        const i = rng.int(0, lines.length - 1);
        const over = pairs.find((l) => l.itemId === lines[i]!.itemId && l.location === (lines[i]!.location ?? DEFAULT_LOCATION))!;
        lines[i] = { ...lines[i]!, quantity: over.quantity + rng.int(1, 3) };
        return { lines };
      }
      if (fault <= 95) {
        // The same pair again, its location maybe spelled the other way ("default" named or omitted).
        const twice = rng.pick(lines);
        const location = twice.location ?? DEFAULT_LOCATION;
        const again = location === DEFAULT_LOCATION && rng.chance(0.5) ? (twice.location === undefined ? { location } : {}) : { location };
        return { lines: rng.shuffle([...lines, { itemId: twice.itemId, ...again, quantity: 1 }]) };
      }
      return rng.pick<unknown>([{ lines: [] }, { lines: lines.map((l) => ({ ...l, quantity: 0 })) }]);
    };

    /** Mostly recent reservations (likely still pending), sometimes any (terminal states, idempotent answers). */
    const pickReservation = (): string | undefined => {
      if (created.length === 0) return undefined;
      const from = rng.chance(0.6) ? Math.max(0, created.length - 8) : 0;
      return created[rng.int(from, created.length - 1)]!.id;
    };

    /** A reservation pending now, if any, else any (an extension mostly meant to succeed). */
    const pickPending = (): string | undefined => {
      const now = T0 + v;
      const pending = model.allReservations().filter((r) => model.statusOf(r, now) === 'pending');
      return pending.length > 0 ? rng.pick(pending).id : pickReservation();
    };

    const checkAvailabilityOfAll = async () => {
      for (const itemId of [...ITEMS, GHOST]) {
        await call(`availability ${itemId}`, () => api.availability(itemId), (m, now) => m.availability(itemId, now));
      }
    };

    const checkAll = async (when: string) => {
      let report;
      try {
        report = await checkInvariants(t.app, [...ITEMS, GHOST]);
      } catch (err) {
        return fail(`invariants (${when}): ${(err as Error).message}`);
      }
      for (const p of stockPairs()) {
        const pgOnHand = figuresOf(report, p.itemId, p.location).pg.onHand;
        if (pgOnHand !== model.onHand(p.itemId, p.location)) {
          fail(`PostgreSQL on_hand of ${p.itemId}@${p.location} is ${pgOnHand}, model says ${model.onHand(p.itemId, p.location)}`);
        }
      }
    };

    // Opening stock.
    await paceStep();
    for (const p of INITIAL_PAIRS) {
      const quantity = rng.int(6, 20);
      const safetyStock = rng.pick([0, 0, 2, 4]);
      await call(
        `set ${p.itemId}@${p.location} = ${quantity} safety ${safetyStock}`,
        () => api.putStock(p.itemId, { quantity, location: p.location, safetyStock }),
        (m, now) => m.setStock(p.itemId, p.location, quantity, now, safetyStock),
      );
    }
    v += GRID_MS;

    const totalWeight = WEIGHTS.reduce((s, [, w]) => s + w, 0);
    for (step = 1; step <= STEPS; step++) {
      let roll = rng.int(1, totalWeight);
      const op = WEIGHTS.find(([, w]) => (roll -= w) <= 0)![0];
      await paceStep();

      switch (op) {
        case 'reserve': {
          const key = `k-${step}`;
          const body = randomBody();
          usedKeys.push({ key, body });
          await reserve(key, body);
          break;
        }
        case 'replay': {
          // The same key and body: a replay if the first one succeeded, a fresh attempt if it failed.
          if (usedKeys.length === 0) break;
          const { key, body } = rng.pick(usedKeys);
          await reserve(key, body);
          break;
        }
        case 'reuse_key': {
          if (usedKeys.length === 0) break;
          const used = rng.pick(usedKeys);
          const body = randomBody();
          usedKeys.push({ key: used.key, body });
          await reserve(used.key, body);
          break;
        }
        case 'confirm':
        case 'release': {
          const id = pickReservation();
          if (!id) break;
          const ifMatch = randomIfMatch(id);
          const shown = ifMatch.header === undefined ? '' : ` If-Match: ${ifMatch.header}`;
          await call(`${op} ${id}${shown}`, () => api[op](id, ifMatch.header), (m, now) => m[op](id, now, ifMatch.model));
          break;
        }
        case 'extend': {
          const roll = rng.int(1, 100);
          const id = roll <= 4 ? rng.pick(UNKNOWN_IDS) : roll <= 50 ? pickPending() : pickReservation();
          if (!id) break;
          const ifMatch = randomIfMatch(id);
          const body = randomExtendBody();
          const shown = ifMatch.header === undefined ? '' : ` If-Match: ${ifMatch.header}`;
          const before = Date.now();
          const { answer } = await call(`extend ${id} ${JSON.stringify(body)}${shown}`, () => api.extend(id, body, ifMatch.header), (m, now) =>
            m.extend(id, body, now, ifMatch.model),
          );
          const after = Date.now();
          if (answer.status !== 200) break;
          // The new expiry is the service's now + ttl (differences() checked the + ttl): now, the decision's instant.
          const doc = reservationOf(answer);
          const decidedAt = Date.parse(doc.updatedAt);
          if (decidedAt < before - CLOCK_SLACK_MS || decidedAt > after + CLOCK_SLACK_MS) {
            fail(`extend ${id} decided at ${doc.updatedAt}, outside the call (${new Date(before).toISOString()} … ${new Date(after).toISOString()})`);
          }
          model.extended(id, Date.parse(doc.expiresAt));
          break;
        }
        case 'partial_confirm': {
          const roll = rng.int(1, 100);
          const id = roll <= 4 ? rng.pick(UNKNOWN_IDS) : roll <= 50 ? pickPending() : pickReservation();
          if (!id) break;
          const ifMatch = randomIfMatch(id);
          const body = randomConfirmBody(model.reservation(id)?.lines ?? []);
          const shown = ifMatch.header === undefined ? '' : ` If-Match: ${ifMatch.header}`;
          await call(
            `confirm_body ${id} ${JSON.stringify(body)}${shown}`,
            () => api.confirm(id, ifMatch.header, body),
            (m, now) => m.confirm(id, now, ifMatch.model, body),
          );
          break;
        }
        case 'get': {
          const id = pickReservation();
          if (!id) break;
          await call(`${op} ${id}`, () => api[op](id), (m, now) => m[op](id, now));
          break;
        }
        case 'adjust': {
          const target = rng.chance(0.1)
            ? rng.pick([LATE_PAIR, { itemId: GHOST, location: DEFAULT_LOCATION }, { itemId: 'sim-b', location: 'wh-1' }])
            : rng.pick(INITIAL_PAIRS);
          let delta = rng.int(-4, 7);
          if (delta === 0) delta = 1;
          await call(
            `adjust ${target.itemId}@${target.location} ${delta > 0 ? '+' : ''}${delta}`,
            () => api.adjust(target.itemId, { delta, ...(target.location === DEFAULT_LOCATION ? {} : { location: target.location }), reason: 'simulation' }),
            (m, now) => m.adjust(target.itemId, target.location, delta, now),
          );
          break;
        }
        case 'set': {
          const target = rng.chance(0.15) ? LATE_PAIR : rng.pick(INITIAL_PAIRS);
          const quantity = rng.int(0, 25);
          const safetyStock = rng.chance(0.4) ? rng.int(0, 8) : undefined;
          await call(
            `set ${target.itemId}@${target.location} = ${quantity}${safetyStock === undefined ? '' : ` safety ${safetyStock}`}`,
            () => api.putStock(target.itemId, { quantity, location: target.location, ...(safetyStock === undefined ? {} : { safetyStock }) }),
            (m, now) => m.setStock(target.itemId, target.location, quantity, now, safetyStock),
          );
          break;
        }
        case 'expire': {
          // Let a live short reservation's TTL pass, then see it expired and unconfirmable.
          const now = T0 + v;
          const live = model.allReservations().filter((r) => r.state === 'pending' && r.expiresAt > now && r.expiresAt - now < 5_000);
          if (live.length === 0) break;
          const r = rng.pick(live);
          advanceTo(r.expiresAt + MARGIN_MS - T0);
          await paceStep();
          await call(`get ${r.id} after its TTL`, () => api.get(r.id), (m, at) => m.get(r.id, at));
          await call(`confirm ${r.id} after its TTL`, () => api.confirm(r.id), (m, at) => m.confirm(r.id, at));
          break;
        }
        case 'wait':
          v += rng.int(2, 10) * GRID_MS;
          await paceStep();
          break;
        case 'list_by_reference': {
          // Every page of a reference's list, in pages of a few (or one page of the default 20), maybe filtered.
          const reference = rng.chance(0.1) ? UNUSED_REFERENCE : rng.pick(REFERENCES);
          const status = rng.chance(0.4) ? rng.pick(STATUSES) : null;
          const limit = rng.chance(0.5) ? rng.int(1, 4) : undefined;
          let cursor: string | null = null;
          let after: string | null = null;
          do {
            const query = { reference, ...(status ? { status } : {}), ...(limit ? { limit } : {}), ...(cursor ? { cursor } : {}) };
            const from = after;
            const { answer } = await call(`list ${JSON.stringify(query)}`, () => api.listByReference(query), (m, now) =>
              m.listByReference(reference, status, now, from, limit ?? 20),
            );
            const page = answer.body as { items: { id: string }[]; nextCursor: string | null };
            cursor = page.nextCursor;
            after = page.items.at(-1)?.id ?? after;
          } while (cursor !== null);
          break;
        }
        case 'release_by_reference': {
          const reference = rng.chance(0.1) ? UNUSED_REFERENCE : rng.pick(REFERENCES);
          await call(`release_by_reference ${reference}`, () => api.releaseByReference({ reference }), (m, now) =>
            m.releaseByReference(reference, now),
          );
          break;
        }
        case 'duplicate_lines': {
          const p = rng.pick(INITIAL_PAIRS);
          const body: ReserveBody = { lines: [{ itemId: p.itemId, location: p.location, quantity: 1 }, { itemId: p.itemId, location: p.location, quantity: 2 }] };
          await reserve(`dup-${step}`, body);
          break;
        }
        case 'bad_allocation': {
          // Each breaks one rule of allocation: 400, nothing held.
          const item = rng.pick(ITEMS);
          const body: ReserveBody = rng.pick<ReserveBody>([
            { lines: [{ itemId: item, quantity: 1 }], allocation: { strategy: 'single_location', locations: ['wh-1'], split: true } },
            { lines: [{ itemId: item, quantity: 1 }], allocation: { strategy: 'ordered' } },
            { lines: [{ itemId: item, quantity: 1 }], allocation: { strategy: 'ordered', locations: ['wh-1', 'wh-1'] } },
            { lines: [{ itemId: item, quantity: 1 }, { itemId: item, location: 'wh-1', quantity: 1 }], allocation: { strategy: 'most_available' } },
          ]);
          await reserve(`bad-${step}`, body);
          break;
        }
        case 'unknown_reservation': {
          const id = rng.pick(UNKNOWN_IDS);
          const action = rng.pick(['confirm', 'release', 'get'] as const);
          await call(`${action} unknown ${id}`, () => api[action](id), (m, now) => m[action](id, now));
          break;
        }
      }

      await checkAvailabilityOfAll();
      v += GRID_MS;
      if (step % CHECK_EVERY === 0) {
        await checkAll(`after step ${step}`);
        v += CHECK_BUDGET_MS;
      }
    }

    // The end: let every short TTL pass; the sweeper must record each overdue row as expired by itself.
    const lastExpiry = Math.max(
      T0 + v,
      ...model.allReservations().filter((r) => r.state === 'pending' && r.expiresAt - (T0 + v) < 10_000).map((r) => r.expiresAt),
    );
    advanceTo(lastExpiry + MARGIN_MS - T0);
    await paceStep();
    const end = T0 + v;
    await waitFor(
      'the sweeper to record every overdue reservation',
      async () => {
        const { rows } = await t.app.runtime.db.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM reservations WHERE status = 'pending' AND expires_at <= now()",
        );
        return rows[0]!.n === 0 ? true : undefined;
      },
      { timeoutMs: 5_000 },
    );
    const { rows } = await t.app.runtime.db.query<{ id: string; status: string; version: number; expires_ms: number }>(
      'SELECT id, status, version, floor(extract(epoch FROM expires_at) * 1000)::float8 AS expires_ms FROM reservations',
    );
    const stored = new Map(rows.map((r) => [r.id, r.status]));
    const versions = new Map(rows.map((r) => [r.id, r.version]));
    const expiries = new Map(rows.map((r) => [r.id, r.expires_ms]));
    for (const r of model.allReservations()) {
      const status = model.statusOf(r, end);
      if (stored.get(r.id) !== status) fail(`reservation ${r.id} is stored as ${String(stored.get(r.id))}, model says ${status}`);
      // The expiries the sweeper recorded made the version each read at from its TTL on.
      const version = model.versionOf(r, end);
      if (versions.get(r.id) !== version) fail(`reservation ${r.id} is stored at version ${String(versions.get(r.id))}, model says ${version}`);
      // The last extension's expiry, recorded before its answer.
      if (expiries.get(r.id) !== r.expiresAt) fail(`reservation ${r.id} is stored expiring at ${String(expiries.get(r.id))}, model says ${r.expiresAt}`);
    }
    expect(stored.size).toBe(model.allReservations().length);
    await checkAvailabilityOfAll();
    await checkAll('at the end');

    const statuses = model.allReservations().map((r) => model.statusOf(r, end));
    const count = (s: string) => statuses.filter((x) => x === s).length;
    const inPart = model.allReservations().filter((r) => r.lines.some((l) => l.confirmedQuantity !== undefined)).length;
    console.info(
      `simulation SEED=${SEED}: ${STEPS} steps, ${created.length} reservations ` +
        `(${count('confirmed')} confirmed (${inPart} in part), ${count('released')} released, ${count('expired')} expired, ${count('pending')} pending), ` +
        `virtual ${v} ms\n  outcomes: ${[...seen].filter(([k]) => !k.startsWith('availability')).sort().map(([k, n]) => `${k} ×${n}`).join(', ')}`,
    );
  }, 120_000);
});
