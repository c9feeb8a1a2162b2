import { createHash } from 'node:crypto';
import { stringify } from 'safe-stable-stringify';

/** Canonical hash of a request body: the same JSON value (key order, whitespace aside) gives the same hash. */
export function requestHash(body: unknown): string {
  return createHash('sha256').update(stringify(body) ?? '').digest('base64url');
}
