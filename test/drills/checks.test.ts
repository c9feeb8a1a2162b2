import { describe, expect, it } from 'vitest';
import { HoldState } from '../../src/redis/status.js';
import { pairKey } from '../helpers/invariants.js';
import { checkInvariants, type Snapshot } from './checks.js';
import { ClientLog, type Attempt } from './load.js';

/**
 * The drills' client-log check of I2 on hand-made histories: a key the client was told "nothing reserved" for, while
 * PostgreSQL holds a reservation under it, is a violation, unless the reservation was decided after the refused
 * retry was sent and an earlier attempt was abandoned without an answer (the network delivered it late).
 */

const T = 1_700_000_000_000;
const SKU = { itemId: 'sku-a', location: 'default' };
const A = pairKey(SKU.itemId, SKU.location);
const KEY = 'drill-c1-0';

/** A UUIDv7 made at `ms`. */
const idAt = (ms: number) => {
  const hex = ms.toString(16).padStart(12, '0');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-7000-8000-000000000001`;
};

/** PostgreSQL and Redis agreeing on one pending reservation of 1 unit under KEY, decided at `decidedMs`. */
function snapshot(decidedMs: number): Snapshot {
  const id = idAt(decidedMs);
  const lines = [{ ...SKU, quantity: 1 }];
  return {
    postgres: {
      nowMs: T + 10_000,
      reservations: new Map([[id, { id, status: 'pending' as const, expiresAtMs: T + 60_000, updatedAtMs: decidedMs, version: 1, lines }]]),
      stock: new Map([[A, { ...SKU, onHand: 10, reserved: 1, safetyStock: 0 }]]),
      movements: [
        { ...SKU, kind: 'set', onHand: 10, reserved: 0, safety: 0, reservationId: null, reason: null },
        { ...SKU, kind: 'reserve', onHand: 0, reserved: 1, safety: 0, reservationId: id, reason: null },
      ],
      idempotency: [{ scope: '_', key: KEY, reservationId: id, statusCode: 201, responseId: id }],
    },
    redis: {
      nowMs: T + 10_000,
      marker: '1',
      items: new Set([SKU.itemId]),
      stock: new Map([[A, { ...SKU, onHand: 10, reserved: 1, pending: null, safety: null, safetyPending: null }]]),
      holds: [{ ...SKU, reservationId: id, state: HoldState.pending, quantity: 1, expiresAtMs: T + 60_000, version: 1 }],
      malformed: [],
    },
    references: new Map([[id, KEY]]),
  };
}

function check(attempts: Attempt[], decidedMs: number) {
  const log = new ClientLog();
  const lines = [{ ...SKU, quantity: 1 }];
  log.keys.set(KEY, { key: KEY, body: { lines, ttlSeconds: 60, reference: KEY }, lines, attempts });
  const notes: string[] = [];
  const results = checkInvariants({
    snapshot: snapshot(decidedMs),
    log,
    skus: [SKU],
    overdue: [],
    monitorViolations: [],
    strandedSessions: [],
    notes,
  });
  return { i2: results.find((r) => r.id === 'I2')!.violations, notes };
}

const abandoned: Attempt = { node: 'n', sentAt: T, at: T + 4_000, status: 'network' };
const refused: Attempt = { node: 'n', sentAt: T + 4_100, at: T + 4_150, status: 409, code: 'insufficient_stock' };

describe('I2 in the drills: "nothing reserved", yet a reservation under the key', () => {
  it('is a violation when the reservation was decided before the refused retry was sent', () => {
    const { i2, notes } = check([abandoned, refused], T + 10);
    expect(i2).toHaveLength(1);
    expect(i2[0]).toContain('nothing reserved');
    expect(notes).toEqual([]);
  });

  it('is a violation without an abandoned attempt, whenever it was decided', () => {
    const { i2 } = check([{ ...refused, sentAt: T, at: T + 50 }], T + 100);
    expect(i2).toHaveLength(1);
  });

  it('is a note when an abandoned attempt was decided after the refused retry was sent', () => {
    const { i2, notes } = check([abandoned, refused], refused.sentAt + 20);
    expect(i2).toEqual([]);
    expect(notes).toHaveLength(1);
    expect(notes[0]).toContain('abandoned');
  });
});
