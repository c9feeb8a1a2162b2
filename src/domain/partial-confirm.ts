import { ProblemError, type FieldError } from './errors.js';
import { pairKey, type Line } from './reservation.js';
import { DEFAULT_LOCATION, type ConfirmRequest } from './schemas.js';

/** A pair a partial confirm names, location resolved, and the units it sells there. */
export interface ConfirmedPair {
  itemId: string;
  location: string;
  quantity: number;
}

const refuse = (errors: FieldError[]): never => {
  throw new ProblemError('validation_failed', errors.map((e) => `${e.field}: ${e.message}`).join('; '), { errors });
};

/**
 * The pairs a confirm body names (api.md, "Partial confirm"), or null for a whole confirm (no body, or no `lines`).
 * A pair named twice is refused here, before the reservation is looked up: it is wrong whatever the reservation.
 */
export function confirmedPairs(request: ConfirmRequest | undefined): ConfirmedPair[] | null {
  if (request?.lines === undefined) return null;
  const seen = new Set<string>();
  const errors: FieldError[] = [];
  const pairs = request.lines.map((line, i) => {
    const pair = { itemId: line.itemId, location: line.location ?? DEFAULT_LOCATION, quantity: line.quantity };
    const key = pairKey(pair.itemId, pair.location);
    if (seen.has(key)) errors.push({ field: `lines[${i}]`, message: `names ${pair.itemId} at ${pair.location} twice` });
    seen.add(key);
    return pair;
  });
  if (errors.length > 0) refuse(errors);
  return pairs;
}

/**
 * The reservation's lines, each with the units a partial confirm sells of it (`confirmedQuantity`; 0 for a line it
 * does not name, whose units are released). Refuses (400, naming the field) a pair the reservation does not hold and
 * a quantity above what it holds: judged on the lines alone, which never change, so whatever the reservation's state.
 */
export function partlyConfirmed(lines: readonly Line[], pairs: readonly ConfirmedPair[]): Line[] {
  const sold = new Map(pairs.map((p) => [pairKey(p.itemId, p.location), p.quantity]));
  const held = new Map(lines.map((l) => [pairKey(l.itemId, l.location), l.quantity]));
  const errors: FieldError[] = [];
  pairs.forEach((p, i) => {
    const quantity = held.get(pairKey(p.itemId, p.location));
    if (quantity === undefined) {
      errors.push({ field: `lines[${i}]`, message: `the reservation holds nothing of ${p.itemId} at ${p.location}` });
    } else if (p.quantity > quantity) {
      errors.push({ field: `lines[${i}].quantity`, message: `must be <= ${quantity}, the units held of ${p.itemId} at ${p.location}` });
    }
  });
  if (errors.length > 0) refuse(errors);
  return lines.map((l) => ({ ...l, confirmedQuantity: sold.get(pairKey(l.itemId, l.location)) ?? 0 }));
}
