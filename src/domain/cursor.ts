/**
 * The cursor of a list by reference: opaque to clients, here the last row of a page as `<created_at µs>.<id>` in
 * base64url. A cursor names a position, not a snapshot: paging goes on below it however many reservations are
 * created meanwhile (they are newer, so they sort above it).
 */

export interface Position {
  /** created_at as whole microseconds since the epoch, in decimal. */
  createdUs: string;
  id: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** Up to 16 digits: microseconds until the year 2286, and within bigint however it is read. */
const MICROSECONDS = /^(0|[1-9][0-9]{0,15})$/;

export function encodeCursor(p: Position): string {
  return Buffer.from(`${p.createdUs}.${p.id}`, 'utf8').toString('base64url');
}

/** The position a cursor names, or null when it is not one this service issued (a 400 for the client). */
export function decodeCursor(cursor: string): Position | null {
  if (!/^[A-Za-z0-9_-]+$/.test(cursor)) return null;
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  const [createdUs, id, ...rest] = text.split('.');
  if (rest.length > 0 || createdUs === undefined || id === undefined) return null;
  if (!MICROSECONDS.test(createdUs) || !UUID.test(id)) return null;
  return { createdUs, id };
}
