import { createHash } from 'node:crypto';
import { stringify } from 'safe-stable-stringify';

/** Canonical hash of a request body: the same JSON value (key order, whitespace aside) gives the same hash. */
export function requestHash(body: unknown): string {
  return createHash('sha256').update(stringify(body) ?? '').digest('base64url');
}

/**
 * The Redis idempotency record: `<state>|<requestHash>|<reservationId>`, state `i` while the first request is in
 * flight and `d` once its answer is committed.
 */
export const idempotencyRecord = (state: 'i' | 'd', hash: string, reservationId: string): string =>
  `${state}|${hash}|${reservationId}`;

export function parseIdempotencyRecord(record: string): { state: string; hash: string; reservationId: string } {
  const [state = '', hash = '', reservationId = ''] = record.split('|');
  return { state, hash, reservationId };
}
