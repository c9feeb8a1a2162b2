import { createHash } from 'node:crypto';
import { stringify } from 'safe-stable-stringify';

/** Canonical hash of a request body: the same JSON value (key order, whitespace aside) gives the same hash. */
export function requestHash(body: unknown): string {
  return createHash('sha256').update(stringify(body) ?? '').digest('base64url');
}

/**
 * The Redis idempotency record, `<requestHash>|<reservationId>|<claimedAtMs>|<nodeId>[|?]`, with the idempotency
 * retention as its TTL. The reserve script writes it (prefix, its clock, suffix) in the same step that holds the
 * units: a claim on the key for one attempt, named by its reservation id. Whether that attempt committed is
 * PostgreSQL's to say; the rest says what to make of a claim PostgreSQL has no commit for:
 * - `nodeId` is the process that made it (src/jobs/node-lease.ts): while its lease lives the attempt is in flight,
 *   once it lapsed the process died and the claim is free. Records a rebuild restored from PostgreSQL (committed
 *   ones) and records of older versions have no node id.
 * - a trailing `?` marks an attempt that answered 503 without knowing whether PostgreSQL committed it (its batch's
 *   answer was lost and PostgreSQL could not be asked). Its node clears the mark once it learns the outcome.
 */
export interface Claim {
  hash: string;
  reservationId: string;
  claimedAtMs: number;
  nodeId: string | null;
  outcomeUnknown: boolean;
}

const UNKNOWN_MARK = '?';

/** What identifies one attempt's record: the part before the script's clock. */
export const recordPrefix = (hash: string, reservationId: string): string => `${hash}|${reservationId}|`;

/** What the reserve script appends after its clock. */
export const recordSuffix = (nodeId: string): string => `|${nodeId}`;

export function formatRecord(claim: Claim): string {
  const node = claim.nodeId === null ? '' : recordSuffix(claim.nodeId);
  return `${recordPrefix(claim.hash, claim.reservationId)}${claim.claimedAtMs}${node}${claim.outcomeUnknown ? `|${UNKNOWN_MARK}` : ''}`;
}

export function parseRecord(record: string): Claim {
  const [hash = '', reservationId = '', claimedAtMs = '0', nodeId = '', mark = ''] = record.split('|');
  return { hash, reservationId, claimedAtMs: Number(claimedAtMs), nodeId: nodeId || null, outcomeUnknown: mark === UNKNOWN_MARK };
}
