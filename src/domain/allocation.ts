import { ProblemError, type FieldError } from './errors.js';
import { pairKey } from './reservation.js';
import { DEFAULT_LOCATION, type Allocation, type ReservationRequest } from './schemas.js';

/** A line as requested, location resolved: null when the service allocates it (api.md, "Allocation across locations"). */
export interface RequestedLine {
  itemId: string;
  location: string | null;
  quantity: number;
}

/** The strategies that choose among `locations` only, and so cannot go without them. */
const NEEDS_LOCATIONS: ReadonlySet<Allocation['strategy']> = new Set(['ordered', 'single_location']);

/** The rules of `allocation` the JSON Schema cannot say. */
function allocationErrors(allocation: Allocation): FieldError[] {
  const errors: FieldError[] = [];
  if (NEEDS_LOCATIONS.has(allocation.strategy) && allocation.locations === undefined) {
    errors.push({ field: 'allocation.locations', message: `is required for strategy ${allocation.strategy}` });
  }
  if (allocation.strategy === 'single_location' && allocation.split === true) {
    errors.push({ field: 'allocation.split', message: 'must not be true with strategy single_location (one location per reservation)' });
  }
  return errors;
}

/**
 * The request's lines with locations resolved: a line without one is allocated when the request has `allocation`,
 * else held at "default". Rejects (400, nothing changed) a repeated (itemId, location) pair, an allocated item in
 * more than one line, and the allocation rules above.
 */
export function requestedLines(request: Pick<ReservationRequest, 'lines' | 'allocation'>): RequestedLine[] {
  const errors = request.allocation ? allocationErrors(request.allocation) : [];
  const pairs = new Set<string>();
  const allocated = new Set<string>();
  const fixedItems = new Set<string>();
  const lines = request.lines.map((line, i): RequestedLine => {
    const location = line.location ?? (request.allocation ? null : DEFAULT_LOCATION);
    const l = { itemId: line.itemId, location, quantity: line.quantity };
    if (location === null) {
      if (allocated.has(l.itemId) || fixedItems.has(l.itemId)) {
        errors.push({ field: `lines[${i}].itemId`, message: `${l.itemId} is allocated, so it may appear in one line only` });
      }
      allocated.add(l.itemId);
      return l;
    }
    const pair = pairKey(l.itemId, location);
    if (pairs.has(pair)) errors.push({ field: `lines[${i}]`, message: `duplicates an earlier line for ${l.itemId} at ${location}` });
    else if (allocated.has(l.itemId)) {
      errors.push({ field: `lines[${i}].itemId`, message: `${l.itemId} is allocated, so it may appear in one line only` });
    }
    pairs.add(pair);
    fixedItems.add(l.itemId);
    return l;
  });
  if (errors.length > 0) {
    throw new ProblemError('validation_failed', errors.map((e) => `${e.field}: ${e.message}`).join('; '), { errors });
  }
  return lines;
}
