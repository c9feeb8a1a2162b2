import { createHash } from 'node:crypto';
import { stringify } from 'safe-stable-stringify';

/** Canonical hash of a request body: the same JSON value (key order, whitespace aside) gives the same hash. */
export function requestHash(body: unknown): string {
  return createHash('sha256').update(stringify(body) ?? '').digest('base64url');
}

/**
 * The Redis idempotency record is `<requestHash>|<reservationId>|<claimedAtMs>`, written by the reserve script
 * with the idempotency retention as its TTL. Whether the first request committed is PostgreSQL's to say.
 */
export const recordPrefix = (hash: string, reservationId: string): string => `${hash}|${reservationId}|`;

export function parseRecord(record: string): { hash: string; reservationId: string; claimedAtMs: number } {
  const [hash = '', reservationId = '', claimedAtMs = '0'] = record.split('|');
  return { hash, reservationId, claimedAtMs: Number(claimedAtMs) };
}
