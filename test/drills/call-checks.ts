import { pairKey, type PgReservation, type PostgresState, type ReservationStatus } from '../helpers/invariants.js';
import {
  definitive,
  heldLines,
  linesLabel,
  type Attempt,
  type CallLog,
  type ClientLog,
  type DocumentLine,
  type ReferenceReleaseLog,
} from './load.js';

/**
 * What the clients were told by the calls on their reservations (confirm, whole or partial; release; extend; release
 * by reference), held against PostgreSQL after the drill: every definitive answer agrees with the final state; the
 * stored expiry is the last one acknowledged (or one an extend left unanswered may have set); no answer says
 * "expired" before the expiry the client was last given, nor acts on a hold past it; versions end where the answers
 * left them. Each finding names the reservation, the answer and what PostgreSQL has.
 */

export interface CallFindings {
  I3: string[];
  I4: string[];
  I6: string[];
  API: string[];
}

export interface CallCheckInput {
  postgres: PostgresState;
  /** Each reservation's reference, as PostgreSQL stores it. */
  references: ReadonlyMap<string, string | null>;
  log: ClientLog;
}

/** What an answer says the reservation ended as (`<status> <action> <docStatus or code>`). */
const ENDED_AS: Record<string, ReservationStatus> = {
  '200 confirm confirmed': 'confirmed',
  '200 release released': 'released',
  '200 release expired': 'expired',
  '409 confirm reservation_expired': 'expired',
  '409 confirm reservation_released': 'released',
  '409 release reservation_confirmed': 'confirmed',
  '409 extend reservation_expired': 'expired',
  '409 extend reservation_released': 'released',
  '409 extend reservation_confirmed': 'confirmed',
};
/** Answers that changed a pending, unexpired reservation (each call of the load is its reservation's only one of its kind). */
const ACTED_LIVE = new Set(['200 confirm confirmed', '200 release released', '200 extend pending']);
/** Answers that say the reservation had expired when they were decided. */
const SAW_EXPIRED = new Set(['200 release expired', '409 confirm reservation_expired', '409 extend reservation_expired']);
const TERMINAL = new Set(['confirmed', 'released', 'expired']);

/**
 * A change of a reservation's expiry: its create, or an extend. `value` null: an extend that may or may not have
 * applied, to an expiry from `min` to `max`: one never answered (at any time after it was sent: `max` Infinity), or
 * one sent while the hold was live and answered 409 reservation_expired, which may have been decided and then
 * outlived by its own record (api.md, "Saga operations: extend a hold": its holds expired at its new expiry).
 */
interface ExpiryChange {
  /** The extend that made it (null: the create). */
  call: CallLog | null;
  attempt: Attempt;
  sentAt: number;
  at: number;
  value: number | null;
  min: number;
  max: number;
}

/**
 * The expiry in force at some instant between `from` and `to`, as far as the clients can tell (`except`: the
 * attempt being judged, whose own change does not count): the last change answered by `from`, or one decided
 * meanwhile. `high` is Infinity when an unanswered extend may have set it.
 */
function expiryBounds(changes: readonly ExpiryChange[], from: number, to: number, except?: Attempt): { low: number; high: number } {
  const counted = changes.filter((c) => c.attempt !== except);
  const base = counted.filter((c) => c.at <= from).reduce((x, y) => (y.at > x.at ? y : x), counted[0]!);
  const candidates = [base, ...counted.filter((c) => c !== base && c.at > from && c.sentAt < to)];
  return { low: Math.min(...candidates.map((c) => c.min)), high: Math.max(...candidates.map((c) => c.max)) };
}

const iso = (ms: number) => new Date(ms).toISOString();
/** The calls on one reservation, each attempt with when it was sent and answered, for a finding's message. */
const history = (calls: readonly CallLog[]) =>
  calls
    .map((c) => `${c.action}${c.ttlSeconds === undefined ? '' : ` ${c.ttlSeconds} s`} [${c.attempts.map((a) => `${describe(a)}${a.nothingApplied ? ' (nothing applied)' : ''} ${iso(a.sentAt)}→${iso(a.at)}${a.expiresAt ? ` expiresAt ${a.expiresAt}` : ''}`).join(', ')}]`)
    .join('; ') || 'none';
const describe = (a: Attempt) => `${String(a.status)}${a.code ? ` ${a.code}` : ''}${a.docStatus ? ` ${a.docStatus}` : ''}`;
/** PostgreSQL's version as a reader sees it: a pending reservation past its TTL has its expiry's (api.md, "Versions"). */
const versionNow = (r: PgReservation, nowMs: number) => (r.status === 'pending' && r.expiresAtMs <= nowMs ? r.version + 1 : r.version);

export function checkCalls(input: CallCheckInput): CallFindings {
  const { postgres: pgs, references, log } = input;
  const out: CallFindings = { I3: [], I4: [], I6: [], API: [] };

  // Each acknowledged reservation: its first 201 (what the client knows of it from then), by id and by reference.
  const created = new Map<string, Attempt>();
  const acknowledgedByReference = new Map<string, { id: string; at: number }[]>();
  for (const k of log.keys.values()) {
    const first = k.attempts.filter((a) => a.status === 201 && a.id).reduce<Attempt | null>((x, y) => (x && x.at <= y.at ? x : y), null);
    if (!first || created.has(first.id!)) continue;
    created.set(first.id!, first);
    const list = acknowledgedByReference.get(k.body.reference) ?? [];
    list.push({ id: first.id!, at: first.at });
    acknowledgedByReference.set(k.body.reference, list);
  }
  const callsById = new Map<string, CallLog[]>();
  for (const c of log.calls) callsById.set(c.reservationId, [...(callsById.get(c.reservationId) ?? []), c]);

  const timelines = new Map<string, ExpiryChange[]>();
  for (const [id, first] of created) {
    const e0 = Date.parse(first.expiresAt!);
    const changes: ExpiryChange[] = [{ call: null, attempt: first, sentAt: first.sentAt, at: first.at, value: e0, min: e0, max: e0 }];
    const extends_ = (callsById.get(id) ?? []).filter((c) => c.action === 'extend');
    for (const c of extends_) {
      for (const a of c.attempts) {
        if (a.status === 200 && a.docStatus === 'pending' && a.expiresAt) {
          const value = Date.parse(a.expiresAt);
          changes.push({ call: c, attempt: a, sentAt: a.sentAt, at: a.at, value, min: value, max: value });
        } else if (a.status === 'network' || (a.status >= 500 && !a.nothingApplied)) {
          // No answer, or one that could not say (a 503 that says nothing was applied is judged below).
          changes.push({ call: c, attempt: a, sentAt: a.sentAt, at: Infinity, value: null, min: a.sentAt + c.ttlSeconds! * 1000, max: Infinity });
        }
      }
    }
    const outlived = extends_.flatMap((c) =>
      c.attempts
        .filter((a) => a.status === 409 && a.code === 'reservation_expired' && a.sentAt < expiryBounds(changes, a.sentAt, a.sentAt).high)
        .map((a): ExpiryChange => ({ call: c, attempt: a, sentAt: a.sentAt, at: Infinity, value: null, min: a.sentAt + c.ttlSeconds! * 1000, max: a.at + c.ttlSeconds! * 1000 })),
    );
    timelines.set(id, [...changes, ...outlived]);
  }

  /** A document's version against PostgreSQL's: never ahead, and where it says the reservation ended, the same. */
  const checkVersion = (r: PgReservation, docStatus: string | undefined, version: number | undefined, what: string) => {
    if (version === undefined || !Number.isInteger(version)) {
      out.API.push(`${what}: the document has no version`);
      return;
    }
    const now = versionNow(r, pgs.nowMs);
    if (version > now) out.I4.push(`${what}: answered version ${version}, PostgreSQL is at ${now} (${r.status})`);
    else if (docStatus !== undefined && TERMINAL.has(docStatus) && docStatus === r.status && version !== now) {
      out.I4.push(`${what}: answered ${docStatus} at version ${version}, PostgreSQL has it ${r.status} at ${now}`);
    }
  };

  /**
   * An answer deciding at some instant in [from, to] that the hold had expired (before the expiry the client was
   * last given, or the one PostgreSQL recorded it expired at, is a violation), or that it had not.
   */
  const checkExpiry = (r: PgReservation, claim: 'expired' | 'live', from: number, to: number, what: string, except?: Attempt) => {
    if (claim === 'expired' && r.status === 'expired' && to < r.expiresAtMs) {
      out.I3.push(`${what}: answered "expired" by ${iso(to)}, yet PostgreSQL recorded it expired at ${iso(r.expiresAtMs)}`);
      return;
    }
    const changes = timelines.get(r.id);
    if (!changes) return;
    const { low, high } = expiryBounds(changes, from, to, except);
    if (claim === 'expired' && to < low) {
      out.I3.push(`${what}: answered "expired" by ${iso(to)}, yet the expiry the client was last given is ${iso(low)}; calls: ${history(callsById.get(r.id) ?? [])}`);
    } else if (claim === 'live' && from >= high) {
      out.I3.push(`${what}: sent at ${iso(from)}, acted on the hold as unexpired, yet it expired at ${iso(high)}`);
    }
  };

  // ---- each call on one reservation
  for (const c of log.calls) {
    const id = c.reservationId;
    const r = pgs.reservations.get(id);
    const firstSent = c.attempts[0]?.sentAt ?? 0;
    const what = `${c.action}${c.ifMatch === undefined ? '' : ` (If-Match "${c.ifMatch}")`} ${id}`;
    for (const a of c.attempts) {
      if (!definitive(a.status, a.code)) continue;
      const label = a.status === 200 ? `200 ${c.action} ${String(a.docStatus)}` : `${String(a.status)} ${c.action} ${a.code ?? ''}`;
      if (!r) {
        out.I4.push(`${what}: answered ${label}, but PostgreSQL has no such reservation`);
        continue;
      }
      if (a.status === 412 && a.code === 'precondition_failed') {
        const now = versionNow(r, pgs.nowMs);
        if (c.ifMatch === undefined) out.API.push(`${what}: answered 412 without If-Match`);
        else if (now <= c.ifMatch) out.API.push(`${what}: answered 412, yet PostgreSQL is at version ${now}: nothing moved it past ${c.ifMatch}`);
        continue;
      }
      const want = ENDED_AS[label];
      if (want === undefined && !ACTED_LIVE.has(label)) {
        out.API.push(`${what} (${linesLabel(r.lines)}): answered ${label}, which api.md does not allow here; PostgreSQL says ${r.status}`);
        continue;
      }
      if (want === 'expired' && r.status === 'pending' && r.expiresAtMs <= pgs.nowMs) {
        // Expired by its TTL, not yet recorded: I3 reports the unrecorded expiry.
      } else if (want !== undefined && r.status !== want) {
        out.I4.push(`${what}: answered ${label}, but PostgreSQL says ${r.status}`);
      }
      if (a.status === 200) checkVersion(r, a.docStatus, a.version, `${what} answered ${label}`);
      if (SAW_EXPIRED.has(label)) checkExpiry(r, 'expired', a.sentAt, a.at, `${what} (${describe(a)})`);
      if (ACTED_LIVE.has(label)) checkExpiry(r, 'live', firstSent, a.at, `${what} (${describe(a)})`, a);
      if (label === '200 extend pending') checkExtended(c, a, out);
      if (label === '200 confirm confirmed') checkConfirmedLines(c, a, r, out);
    }
  }

  // ---- each release by reference
  for (const rr of log.referenceReleases) checkReferenceRelease(rr, { pgs, references, acknowledged: acknowledgedByReference.get(rr.reference) ?? [], out, checkVersion, checkExpiry });

  // ---- the stored expiry is the last acknowledged one
  for (const [id, changes] of timelines) {
    const r = pgs.reservations.get(id);
    if (!r) continue; // the create's own check reports it
    const last = changes.filter((c) => c.value !== null).reduce((x, y) => (y.at > x.at ? y : x));
    const x = r.expiresAtMs;
    if (x === last.value || changes.some((c) => c.value === null && x >= c.min && x <= c.max)) continue;
    const refused = (callsById.get(id) ?? [])
      .filter((c) => c.action === 'extend')
      .flatMap((c) => c.attempts.filter((a) => a.nothingApplied === true && x >= a.sentAt + c.ttlSeconds! * 1000 && x <= a.at + c.ttlSeconds! * 1000));
    if (refused.length > 0) {
      out.I6.push(`extend ${id}: answered 503 at ${iso(refused[0]!.at)} (nothing applied), yet PostgreSQL's expiry ${iso(x)} is one it would have set`);
    } else {
      const by = last.call === null ? 'its 201' : `an extend answered at ${iso(last.at)}`;
      out.I4.push(`reservation ${id}: acknowledged expiresAt ${iso(last.value!)} (${by}), PostgreSQL has ${iso(x)} (${r.status}); calls: ${history(callsById.get(id) ?? [])}`);
    }
  }

  // ---- an expiry is recorded at the expiry in force, never before it (an extension moved it)
  for (const r of pgs.reservations.values()) {
    if (r.status === 'expired' && r.updatedAtMs < r.expiresAtMs) {
      out.I3.push(`reservation ${r.id}: recorded expired at ${iso(r.updatedAtMs)}, before its expiry ${iso(r.expiresAtMs)}`);
    }
  }
  return out;
}

/** A 200 to an extend: the expiry is now + ttlSeconds by the server's clock, and If-Match's version + 1. */
function checkExtended(c: CallLog, a: Attempt, out: CallFindings): void {
  const what = `extend ${c.reservationId} (ttlSeconds ${c.ttlSeconds!}, answered at ${iso(a.at)})`;
  const expires = Date.parse(a.expiresAt!);
  const ttl = c.ttlSeconds! * 1000;
  if (!(expires >= a.sentAt + ttl && expires <= a.at + ttl)) {
    out.API.push(`${what}: expiresAt ${a.expiresAt!} is not now + ttlSeconds (sent ${iso(a.sentAt)})`);
  }
  if (c.ifMatch !== undefined && a.version !== c.ifMatch + 1) {
    out.API.push(`${what}: If-Match "${c.ifMatch}" answered version ${String(a.version)}, not ${c.ifMatch + 1}`);
  }
}

/**
 * What a confirm sold of a line: for a partial confirm, the quantity it listed for the pair (0 unlisted); for a
 * whole one, no `confirmedQuantity` at all (everything held).
 */
const confirmedOf = (c: CallLog, l: DocumentLine): number | undefined =>
  c.lines ? (c.lines.find((x) => x.itemId === l.itemId && x.location === l.location)?.quantity ?? 0) : undefined;

/** A 200 confirm: its document's lines, and PostgreSQL's once confirmed, carry exactly what the confirm sold. */
function checkConfirmedLines(c: CallLog, a: Attempt, r: PgReservation, out: CallFindings): void {
  const what = `confirm ${c.reservationId}${c.lines ? ` of ${linesLabel(c.lines)}` : ' (whole)'}`;
  for (const l of a.lines ?? []) {
    if (l.confirmedQuantity !== confirmedOf(c, l)) {
      out.API.push(`${what}: answered ${l.itemId}@${l.location} with confirmedQuantity ${String(l.confirmedQuantity)}, not ${String(confirmedOf(c, l))}`);
    }
  }
  if (r.status !== 'confirmed') return; // reported as the answer's disagreement with the state
  for (const l of r.lines) {
    if (l.confirmedQuantity !== confirmedOf(c, l)) {
      out.I4.push(`${what}: acknowledged selling ${String(confirmedOf(c, l) ?? l.quantity)} of ${l.itemId}@${l.location}, PostgreSQL has confirmed_quantity ${String(l.confirmedQuantity ?? null)} of ${l.quantity}`);
    }
  }
}

interface ReferenceContext {
  pgs: PostgresState;
  references: ReadonlyMap<string, string | null>;
  /** The reservations of the reference the clients were answered 201 for, and when. */
  acknowledged: readonly { id: string; at: number }[];
  out: CallFindings;
  checkVersion: (r: PgReservation, docStatus: string | undefined, version: number | undefined, what: string) => void;
  checkExpiry: (r: PgReservation, claim: 'expired' | 'live', from: number, to: number, what: string) => void;
}

/**
 * A 200 to a release by reference lists every reservation of the reference (each acknowledged before the call was
 * sent, at least), each as PostgreSQL ends up with it: released ones released, confirmed ones confirmed, expired
 * ones expired, and none acknowledged before the call left pending.
 */
function checkReferenceRelease(rr: ReferenceReleaseLog, x: ReferenceContext): void {
  const { pgs, out } = x;
  for (const a of rr.attempts) {
    if (!definitive(a.status, a.code)) continue;
    const what = `release by reference ${rr.reference} (answered ${iso(a.at)})`;
    if (a.status !== 200 || !a.items) {
      out.API.push(`${what}: answered ${describe(a)}; the load's references have at most 3 reservations`);
      continue;
    }
    if (a.reference !== rr.reference) out.API.push(`${what}: the answer names reference ${String(a.reference)}`);
    const listed = new Set(a.items.map((i) => i.id));
    for (const ack of x.acknowledged) {
      if (ack.at <= a.sentAt && !listed.has(ack.id)) out.API.push(`${what}: does not list ${ack.id}, acknowledged at ${iso(ack.at)}`);
    }
    for (const item of a.items) {
      const r = pgs.reservations.get(item.id);
      const itemWhat = `${what}: ${item.id} listed ${item.status}`;
      if (!r) {
        out.I4.push(`${itemWhat}, but PostgreSQL has no such reservation`);
        continue;
      }
      if (x.references.get(item.id) !== rr.reference) out.API.push(`${itemWhat}, a reservation of reference ${String(x.references.get(item.id))}`);
      if (item.status === 'pending') {
        const ack = x.acknowledged.find((k) => k.id === item.id);
        if (ack && ack.at <= a.sentAt) out.API.push(`${itemWhat}: acknowledged at ${iso(ack.at)}, before the call, and left pending`);
      } else if (!TERMINAL.has(item.status)) {
        out.API.push(`${itemWhat}: not a status`);
      } else if (item.status === 'expired' && r.status === 'pending' && r.expiresAtMs <= pgs.nowMs) {
        // Expired by its TTL, not yet recorded: I3 reports the unrecorded expiry.
      } else if (r.status !== item.status) {
        out.I4.push(`${itemWhat}, but PostgreSQL says ${r.status}`);
      }
      x.checkVersion(r, item.status, item.version, itemWhat);
      if (item.status === 'expired') x.checkExpiry(r, 'expired', a.sentAt, a.at, itemWhat);
    }
  }
}

/**
 * Units the clients were told they bought, per pairKey: each reservation a 200 confirm (or a release by reference)
 * said is confirmed, for its confirmed quantities (all it holds unless partly confirmed).
 */
export function soldByClients(log: ClientLog): Map<string, number> {
  const sold = new Map<string, DocumentLine[]>();
  for (const c of log.calls) {
    if (c.action !== 'confirm') continue;
    const a = c.attempts.find((x) => x.status === 200 && x.docStatus === 'confirmed');
    if (a) sold.set(c.reservationId, a.lines ?? []);
  }
  for (const rr of log.referenceReleases) {
    for (const a of rr.attempts) for (const item of a.items ?? []) if (item.status === 'confirmed') sold.set(item.id, item.lines);
  }
  // A document without lines: what the create said the reservation holds.
  const heldById = new Map<string, DocumentLine[]>();
  for (const k of log.keys.values()) for (const a of k.attempts) if (a.status === 201 && a.id) heldById.set(a.id, heldLines(k));
  const units = new Map<string, number>();
  for (const [id, lines] of sold) {
    for (const l of lines.length > 0 ? lines : (heldById.get(id) ?? [])) {
      const key = pairKey(l.itemId, l.location);
      units.set(key, (units.get(key) ?? 0) + (l.confirmedQuantity ?? l.quantity));
    }
  }
  return units;
}
