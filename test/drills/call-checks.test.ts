import { describe, expect, it } from 'vitest';
import type { PgReservation, PostgresState, ReservationStatus } from '../helpers/invariants.js';
import { checkCalls, soldByClients } from './call-checks.js';
import { ClientLog, type Attempt, type CallLog, type ReferenceAttempt } from './load.js';

/**
 * The drills' judge of calls on reservations, on hand-made histories: what an answer said against what PostgreSQL
 * ends with (status, expiry, version), and when it said a hold had expired against the expiry last acknowledged.
 */

const T = 1_700_000_000_000;
const ID = '018bcfe5-6800-7000-8000-000000000001';
const OTHER = '018bcfe5-6800-7000-8000-000000000002';
const LINES = [{ itemId: 'sku-a', location: 'default', quantity: 2 }];
const REF = 'order-1';
const iso = (ms: number) => new Date(ms).toISOString();

/** The reservation was created at T (expiring at T + 3 s), its 201 answered at T + 10. */
function logWith(calls: CallLog[], referenceAttempts: ReferenceAttempt[] = []): ClientLog {
  const log = new ClientLog();
  for (const [n, id] of [ID, OTHER].entries()) {
    const created: Attempt = { node: 'n', sentAt: T, at: T + 10, status: 201, id, docStatus: 'pending', lines: LINES, expiresAt: iso(T + 3_000), version: 1 };
    log.keys.set(`k${n}`, { key: `k${n}`, body: { lines: LINES, ttlSeconds: 3, reference: REF }, lines: LINES, attempts: [created] });
  }
  log.calls.push(...calls);
  if (referenceAttempts.length > 0) log.referenceReleases.push({ reference: REF, attempts: referenceAttempts });
  return log;
}

function postgres(r: Partial<PgReservation>, other: Partial<PgReservation> = {}): PostgresState {
  const row = (id: string, x: Partial<PgReservation>): PgReservation => ({
    id,
    status: 'pending' as ReservationStatus,
    expiresAtMs: T + 3_000,
    updatedAtMs: T,
    version: 1,
    lines: LINES,
    ...x,
  });
  return {
    nowMs: T + 60_000,
    reservations: new Map([
      [ID, row(ID, r)],
      [OTHER, row(OTHER, { status: 'expired', expiresAtMs: T + 3_000, updatedAtMs: T + 3_000, version: 2, ...other })],
    ]),
    stock: new Map(),
    movements: [],
    idempotency: [],
  };
}

const references = new Map([
  [ID, REF],
  [OTHER, REF],
]);
const check = (log: ClientLog, pgs: PostgresState) => checkCalls({ postgres: pgs, references, log });

const extendCall = (attempts: Attempt[], ifMatch?: number): CallLog => ({
  reservationId: ID,
  action: 'extend',
  ttlSeconds: 5,
  ...(ifMatch === undefined ? {} : { ifMatch }),
  attempts,
});
/** An extend sent at T + 1 s, answered 200 at once: the hold now expires at T + 6 s, version 2. */
const extended: Attempt = { node: 'n', sentAt: T + 1_000, at: T + 1_005, status: 200, id: ID, docStatus: 'pending', lines: LINES, expiresAt: iso(T + 6_000), version: 2 };

describe('drill checks of extend', () => {
  it('holds PostgreSQL to the expiry an extend acknowledged', () => {
    const log = logWith([extendCall([extended])]);
    expect(check(log, postgres({ expiresAtMs: T + 6_000, version: 2 }))).toEqual({ I3: [], I4: [], I6: [], API: [] });
    const lost = check(log, postgres({ expiresAtMs: T + 3_000, version: 1 }));
    expect(lost.I4.join()).toContain(`acknowledged expiresAt ${iso(T + 6_000)}`);
  });

  it('allows any later expiry an extend without an answer may have set, and names a 503 one that applied', () => {
    const unanswered: Attempt = { node: 'n', sentAt: T + 2_000, at: T + 6_000, status: 'network' };
    const found = check(logWith([extendCall([extended]), extendCall([unanswered])]), postgres({ expiresAtMs: T + 7_500, version: 3 }));
    expect(found.I4).toEqual([]);
    const refused: Attempt = { node: 'n', sentAt: T + 2_000, at: T + 2_600, status: 503, code: 'unavailable', nothingApplied: true };
    const applied = check(logWith([extendCall([extended]), extendCall([refused])]), postgres({ expiresAtMs: T + 7_500, version: 3 }));
    expect(applied.I6).toHaveLength(1);
    expect(applied.I6[0]).toContain('answered 503');
    // A 503 that could not say whether it was applied (the commit's outcome unknown) promises nothing.
    const unsure: Attempt = { ...refused, nothingApplied: undefined };
    const maybe = check(logWith([extendCall([extended]), extendCall([unsure])]), postgres({ expiresAtMs: T + 7_500, version: 3 }));
    expect(maybe.I6).toEqual([]);
    expect(maybe.I4).toEqual([]);
  });

  it('allows the expiry of an extend that outlived its own record (409 expired), only when sent while the hold was live', () => {
    // Sent at T + 1 s (live until T + 3 s), decided at once, its record hung past T + 6 s: expired at the new expiry.
    const outlived: Attempt = { node: 'n', sentAt: T + 1_000, at: T + 7_000, status: 409, code: 'reservation_expired' };
    const pg = postgres({ status: 'expired', expiresAtMs: T + 6_000, updatedAtMs: T + 6_000, version: 3 });
    expect(check(logWith([extendCall([outlived])]), pg)).toEqual({ I3: [], I4: [], I6: [], API: [] });
    // Not an expiry it could have set: reported.
    expect(check(logWith([extendCall([outlived])]), postgres({ status: 'expired', expiresAtMs: T + 13_000, updatedAtMs: T + 13_000, version: 3 })).I4).toHaveLength(1);
    // Its own answer, and a release's after it, saw the hold expired at the new expiry, before the one last given.
    const shortened: CallLog = { ...extendCall([{ ...outlived, sentAt: T + 1_000, at: T + 2_700 }]), ttlSeconds: 1 };
    const release: CallLog = { reservationId: ID, action: 'release', attempts: [{ node: 'n', sentAt: T + 2_750, at: T + 2_760, status: 200, id: ID, docStatus: 'expired', version: 3 }] };
    const early = postgres({ status: 'expired', expiresAtMs: T + 2_000, updatedAtMs: T + 2_000, version: 3 });
    expect(check(logWith([shortened, release]), early)).toEqual({ I3: [], I4: [], I6: [], API: [] });
    // Sent after the hold expired: nothing could be extended.
    const late: Attempt = { ...outlived, sentAt: T + 3_500, at: T + 3_510 };
    const found = check(logWith([extendCall([late])]), postgres({ status: 'expired', expiresAtMs: T + 8_500, updatedAtMs: T + 8_500, version: 3 }));
    expect(found.I4.join()).toContain(`acknowledged expiresAt ${iso(T + 3_000)}`);
  });

  it('finds an "expired" answered before the expiry the client was last given', () => {
    const confirm = (at: number): CallLog => ({
      reservationId: ID,
      action: 'confirm',
      attempts: [{ node: 'n', sentAt: at - 5, at, status: 409, code: 'reservation_expired' }],
    });
    const pg = postgres({ status: 'expired', expiresAtMs: T + 6_000, updatedAtMs: T + 6_000, version: 3 });
    const early = check(logWith([extendCall([extended]), confirm(T + 4_000)]), pg);
    expect(early.I3).toHaveLength(1);
    expect(early.I3[0]).toContain(`PostgreSQL recorded it expired at ${iso(T + 6_000)}`);
    expect(check(logWith([extendCall([extended]), confirm(T + 6_010)]), pg).I3).toEqual([]);
    // The extension lost: PostgreSQL agrees with the early answer, the client was told otherwise.
    const lost = check(logWith([extendCall([extended]), confirm(T + 4_000)]), postgres({ status: 'expired', updatedAtMs: T + 3_000, version: 2 }));
    expect(lost.I3.join()).toContain(`the expiry the client was last given is ${iso(T + 6_000)}`);
  });

  it('counts an extend left without an answer as possibly applied, by any later attempt of the same call too', () => {
    const shortened: CallLog = {
      reservationId: ID,
      action: 'extend',
      ttlSeconds: 1,
      attempts: [
        { node: 'n', sentAt: T + 500, at: T + 900, status: 'network' },
        { node: 'n', sentAt: T + 1_600, at: T + 1_610, status: 409, code: 'reservation_expired' },
      ],
    };
    const pg = postgres({ status: 'expired', expiresAtMs: T + 1_500, updatedAtMs: T + 1_500, version: 3 });
    expect(check(logWith([shortened]), pg)).toEqual({ I3: [], I4: [], I6: [], API: [] });
  });

  it('finds a 200 whose expiry is not now + ttlSeconds, and a 412 while PostgreSQL is still at the If-Match version', () => {
    const wrong = { ...extended, expiresAt: iso(T + 9_000) };
    const pg = postgres({ expiresAtMs: T + 9_000, version: 2 });
    expect(check(logWith([extendCall([wrong])]), pg).API.join()).toContain('is not now + ttlSeconds');
    const refused: Attempt = { node: 'n', sentAt: T + 1_000, at: T + 1_005, status: 412, code: 'precondition_failed' };
    const released = postgres({ status: 'released', version: 2, updatedAtMs: T + 500 });
    expect(check(logWith([extendCall([refused], 2)]), released).API.join()).toContain('nothing moved it past 2');
    expect(check(logWith([extendCall([refused], 1)]), released).API).toEqual([]);
  });
});

describe('drill checks of partial confirm', () => {
  const partly = (confirmedQuantity: number): CallLog => ({
    reservationId: ID,
    action: 'confirm',
    lines: [{ itemId: 'sku-a', location: 'default', quantity: 1 }],
    attempts: [
      {
        node: 'n',
        sentAt: T + 100,
        at: T + 110,
        status: 200,
        id: ID,
        docStatus: 'confirmed',
        lines: [{ ...LINES[0]!, confirmedQuantity }],
        expiresAt: iso(T + 3_000),
        version: 2,
      },
    ],
  });
  const confirmed = (confirmedQuantity?: number) =>
    postgres({ status: 'confirmed', updatedAtMs: T + 105, version: 2, lines: [{ ...LINES[0]!, ...(confirmedQuantity === undefined ? {} : { confirmedQuantity }) }] });

  it('holds the answer and PostgreSQL to the units the confirm listed', () => {
    expect(check(logWith([partly(1)]), confirmed(1))).toEqual({ I3: [], I4: [], I6: [], API: [] });
    expect(check(logWith([partly(2)]), confirmed(1)).API.join()).toContain('confirmedQuantity 2, not 1');
    expect(check(logWith([partly(1)]), confirmed(2)).I4.join()).toContain('acknowledged selling 1 of sku-a@default, PostgreSQL has confirmed_quantity 2');
    expect(check(logWith([partly(1)]), confirmed()).I4).toHaveLength(1);
  });

  it('counts what a partial confirm sold, not what was held', () => {
    expect([...soldByClients(logWith([partly(1)]))]).toEqual([['sku-a@default', 1]]);
  });
});

describe('drill checks of versions and expiries as stored', () => {
  it('finds an answer whose version PostgreSQL never reached', () => {
    const confirmed: CallLog = {
      reservationId: ID,
      action: 'confirm',
      attempts: [{ node: 'n', sentAt: T + 100, at: T + 110, status: 200, id: ID, docStatus: 'confirmed', lines: LINES, expiresAt: iso(T + 3_000), version: 3 }],
    };
    const found = check(logWith([confirmed]), postgres({ status: 'confirmed', updatedAtMs: T + 105, version: 2 }));
    expect(found.I4.join()).toContain('answered version 3, PostgreSQL is at 2');
  });

  it('finds an expiry recorded before the reservation expired', () => {
    const found = check(logWith([]), postgres({ status: 'expired', expiresAtMs: T + 3_000, updatedAtMs: T + 2_000, version: 2 }));
    expect(found.I3.join()).toContain('recorded expired');
  });
});

describe('drill checks of release by reference', () => {
  const listed = (status: string, version: number): ReferenceAttempt => ({
    node: 'n',
    sentAt: T + 2_500,
    at: T + 3_020,
    status: 200,
    reference: REF,
    items: [
      { id: ID, status, version, lines: LINES },
      { id: OTHER, status: 'expired', version: 2, lines: LINES },
    ],
  });

  it('holds PostgreSQL to every state the answer listed', () => {
    const pg = postgres({ status: 'released', updatedAtMs: T + 2_600, version: 2 });
    expect(check(logWith([], [listed('released', 2)]), pg)).toEqual({ I3: [], I4: [], I6: [], API: [] });
    const found = check(logWith([], [listed('released', 2)]), postgres({}));
    expect(found.I4.join()).toContain(`${ID} listed released, but PostgreSQL says pending`);
  });

  it('finds a reservation acknowledged before the call left pending or left out, and a refused call', () => {
    expect(check(logWith([], [listed('pending', 1)]), postgres({})).API.join()).toContain('left pending');
    const partial: ReferenceAttempt = { ...listed('released', 2), items: [{ id: ID, status: 'released', version: 2, lines: LINES }] };
    const pg = postgres({ status: 'released', updatedAtMs: T + 2_600, version: 2 });
    expect(check(logWith([], [partial]), pg).API.join()).toContain(`does not list ${OTHER}`);
    const refused: ReferenceAttempt = { node: 'n', sentAt: T + 500, at: T + 520, status: 409, code: 'reservation_expired' };
    expect(check(logWith([], [refused]), postgres({})).API.join()).toContain('answered 409 reservation_expired');
  });

  it('counts units listed confirmed as sold to the clients', () => {
    const log = logWith([], [listed('confirmed', 2)]);
    expect([...soldByClients(log)]).toEqual([['sku-a@default', 2]]);
  });
});
