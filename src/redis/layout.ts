import { HoldState } from './status.js';

/**
 * What is written inside the Redis values, for both languages: TypeScript formats and parses through the helpers
 * below, and the loader (scripts.ts) injects `luaLayout` into every script as `L`, so includes/common.lua builds
 * and parses the same strings. Keys are made in keys.ts; this module says what goes in them.
 *
 * - stock hash `{i:<item>}:stock`: `h:<location>` on-hand, `r:<location>` reserved (units of pending holds),
 *   `p:<location>` supply decided but not yet recorded (not available), `s:<location>` safety stock (units only
 *   high-priority reservations may take; enforced), `q:<location>` safety stock decreases decided but not yet
 *   recorded (still enforced, part of `s:` until applied).
 * - holds hash `{i:<item>}:holds`: field `<reservationId>:<location>`, value
 *   `<state>:<quantity>:<expiresAtMs>:<version>` (state: a HoldState code; quantity: the units held, or for a
 *   confirmed hold the units it sold, fewer after a partial confirm; version: the reservation's, api.md
 *   "Versions", the same in each of its holds). A value of an older version has no `:<version>` and reads as the
 *   version it would have had (`legacyVersion`). A location may itself contain `:`; a reservation id never does, so
 *   a field splits at its first separator.
 * - idempotency record: `<requestHash>|<reservationId>|<claimedAtMs>|<nodeId>[|?]`. TypeScript makes the part
 *   before the clock (`recordPrefix`) and after it (`recordSuffix`), the reserve script puts Redis' clock between
 *   them (`formatRecord` in common.lua); the rebuild writes whole records (`formatRecord` here). Neither a hash
 *   (base64url), a UUID nor a node id (hex) contains `|`.
 * - reservation header hash `{r:<id>}`: `body` (a JSON object: `lines`, the lines as held, then reference,
 *   metadata, tenant, allocation), `created` and `expires` (ms). The reserve script writes `{"lines":[…],` itself
 *   (it allocates; identifiers need no escaping, and it encodes them with cjson all the same) in front of the
 *   object TypeScript made of the rest. Headers of older versions have no `allocation`.
 * - stock intents hash `{i:<item>}:intents`: field the op id (a UUIDv7, also recorded with the ledger row),
 *   value `<location>|<delta>|<kind>|<decidedMs>|<nodeId>[|<safetyDelta>]`: a stock decision whose fate is still
 *   open. kind `supply` (an on-hand increase, waiting in pending supply) or `debit` (applied to on-hand at once).
 *   `safetyDelta`, only there when the decision changed the safety stock: an increase is applied at once, a
 *   decrease waits in `q:` (both mirror on-hand's: Redis never enforces less safety stock than PostgreSQL records).
 *   An identifier never contains `|`; the value is split from its right all the same, so the location takes
 *   whatever is left (a value without a safety delta has four fields after the location, one with it five).
 */

const STOCK_PREFIX = { onHand: 'h:', reserved: 'r:', pending: 'p:', safety: 's:', safetyPending: 'q:' } as const;
const HOLD_FIELD_SEPARATOR = ':';
const HOLD_VALUE_SEPARATOR = ':';
const RECORD_SEPARATOR = '|';
const HEADER_FIELD = { body: 'body', created: 'created', expires: 'expires' } as const;
const INTENT_SEPARATOR = '|';
/** What a stock intent waits for: a supply is applied once recorded, a debit (applied already) only settled. */
export const IntentKind = { supply: 'supply', debit: 'debit' } as const;

/** The layout as Lua reads it (injected as `L`; a test fails if a script names a key missing here). */
export const luaLayout = {
  onHand: STOCK_PREFIX.onHand,
  reserved: STOCK_PREFIX.reserved,
  pending: STOCK_PREFIX.pending,
  safety: STOCK_PREFIX.safety,
  safetyPending: STOCK_PREFIX.safetyPending,
  holdFieldSep: HOLD_FIELD_SEPARATOR,
  holdValueSep: HOLD_VALUE_SEPARATOR,
  recordSep: RECORD_SEPARATOR,
  headerBody: HEADER_FIELD.body,
  headerCreated: HEADER_FIELD.created,
  headerExpires: HEADER_FIELD.expires,
  intentSep: INTENT_SEPARATOR,
  intentSupply: IntentKind.supply,
  intentDebit: IntentKind.debit,
} as const;

// ---- stock hash ----------------------------------------------------------------------------------------------

/** The figures the stock hash keeps per location. */
export type StockFigure = keyof typeof STOCK_PREFIX;

/** One location's figures as stored; null where the hash has no such field. */
export interface LocationStock {
  onHand: number | null;
  reserved: number | null;
  pending: number | null;
  /** Safety stock enforced (a decrease not yet recorded included). */
  safety: number | null;
  /** Safety stock decreases decided, not yet recorded. */
  safetyPending: number | null;
}

/** The stock hash field of one figure at one location. */
export const stockField = (figure: StockFigure, location: string): string => STOCK_PREFIX[figure] + location;

/** Which figure of which location a stock hash field holds, or null for a field that is not of this layout. */
export function parseStockField(field: string): { figure: StockFigure; location: string } | null {
  for (const figure of Object.keys(STOCK_PREFIX) as StockFigure[]) {
    if (field.startsWith(STOCK_PREFIX[figure])) return { figure, location: field.slice(STOCK_PREFIX[figure].length) };
  }
  return null;
}

/**
 * An item's stock hash per location, from HGETALL as a script returns it (a flat field, value list) or as ioredis
 * returns it (an object). Fields not of this layout are left out.
 */
export function parseStock(hash: readonly string[] | Readonly<Record<string, string>>): Map<string, LocationStock> {
  const out = new Map<string, LocationStock>();
  for (const [field, value] of hashEntries(hash)) {
    const parsed = parseStockField(field);
    if (!parsed) continue;
    let figures = out.get(parsed.location);
    if (!figures) out.set(parsed.location, (figures = emptyLocation()));
    figures[parsed.figure] = Number(value);
  }
  return out;
}

/** A location's figures with no field read yet. */
export const emptyLocation = (): LocationStock => ({ onHand: null, reserved: null, pending: null, safety: null, safetyPending: null });

/** A hash's fields and values, from HGETALL as ioredis answers it (an object) or as a script returns it (flat). */
export function hashEntries(hash: readonly string[] | Readonly<Record<string, string>>): [string, string][] {
  if (!Array.isArray(hash)) return Object.entries(hash);
  const flat = hash as readonly string[];
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!]);
  return out;
}

// ---- holds hash ----------------------------------------------------------------------------------------------

export type HoldStateCode = (typeof HoldState)[keyof typeof HoldState];

export interface Hold {
  state: HoldStateCode;
  /** Units held; for a confirmed hold, the units it sold (a partial confirm sells fewer than held, even none). */
  quantity: number;
  expiresAtMs: number;
  /** The reservation's version (1 when created, +1 on every change). */
  version: number;
}

/** The version of a hold stored without one: creation and one transition were the only changes there were. */
export const legacyVersion = (state: HoldStateCode): number => (state === HoldState.pending ? 1 : 2);

const holdStates = new Set<string>(Object.values(HoldState));
const DIGITS = /^\d+$/;

/** The holds hash field of one reservation's line at one location. */
export const holdField = (reservationId: string, location: string): string => reservationId + HOLD_FIELD_SEPARATOR + location;

/** Splits a holds hash field at its first separator (a location may contain one); null if it has none. */
export function parseHoldField(field: string): { reservationId: string; location: string } | null {
  const at = field.indexOf(HOLD_FIELD_SEPARATOR);
  if (at < 0) return null;
  return { reservationId: field.slice(0, at), location: field.slice(at + HOLD_FIELD_SEPARATOR.length) };
}

export const formatHold = (hold: Hold): string =>
  [hold.state, hold.quantity, hold.expiresAtMs, hold.version].join(HOLD_VALUE_SEPARATOR);

/**
 * A hold value, or null when it is not `<state>:<quantity>:<expiresAtMs>[:<version>]` with a known state (as
 * common.lua's parseHold: without a version, the legacy one).
 */
export function parseHold(value: string): Hold | null {
  const parts = value.split(HOLD_VALUE_SEPARATOR);
  if (parts.length !== 3 && parts.length !== 4) return null;
  const [state, quantity, expiresAtMs, version] = parts as [string, string, string, string?];
  if (!holdStates.has(state) || !DIGITS.test(quantity) || !DIGITS.test(expiresAtMs)) return null;
  if (version !== undefined && !DIGITS.test(version)) return null;
  const code = state as HoldStateCode;
  return {
    state: code,
    quantity: Number(quantity),
    expiresAtMs: Number(expiresAtMs),
    version: version === undefined ? legacyVersion(code) : Number(version),
  };
}

// ---- idempotency record --------------------------------------------------------------------------------------

/**
 * A claim on an idempotency key by one attempt, named by its reservation id. Whether that attempt committed is
 * PostgreSQL's to say; the rest says what to make of a claim PostgreSQL has no commit for:
 * - `nodeId` is the process that made it (src/jobs/node-lease.ts): while its lease lives the attempt is in flight,
 *   once it lapsed the process died and the claim is free. Records a rebuild restored from PostgreSQL (committed
 *   ones) and records of older versions have none.
 * - `outcomeUnknown` marks an attempt that answered 503 without knowing whether PostgreSQL committed it (its batch's
 *   answer was lost and PostgreSQL could not be asked). Its node clears the mark once it learns the outcome.
 */
export interface IdempotencyRecord {
  /** requestHash() of the first request's body. */
  hash: string;
  reservationId: string;
  /** Redis' clock when the reserve script claimed the key (or the row's creation time, after a rebuild). */
  claimedAtMs: number;
  nodeId: string | null;
  outcomeUnknown: boolean;
}

const UNKNOWN_MARK = '?';

/** The record up to its clock: what identifies one attempt (the reserve script appends its clock, then the suffix). */
export const recordPrefix = (hash: string, reservationId: string): string =>
  hash + RECORD_SEPARATOR + reservationId + RECORD_SEPARATOR;

/** What the reserve script appends after its clock: the node that made the claim. */
export const recordSuffix = (nodeId: string): string => RECORD_SEPARATOR + nodeId;

/** A whole record (the rebuild writes one from PostgreSQL's row; a node marks or rewrites its own). */
export function formatRecord(record: IdempotencyRecord): string {
  const node = record.nodeId === null ? '' : recordSuffix(record.nodeId);
  const mark = record.outcomeUnknown ? RECORD_SEPARATOR + UNKNOWN_MARK : '';
  return recordPrefix(record.hash, record.reservationId) + record.claimedAtMs + node + mark;
}

/** Reads a record; a field it lacks reads empty (0 for the clock), so a record with fewer fields still parses. */
export function parseRecord(record: string): IdempotencyRecord {
  const [hash = '', reservationId = '', claimedAtMs = '0', nodeId = '', mark = ''] = record.split(RECORD_SEPARATOR);
  return { hash, reservationId, claimedAtMs: Number(claimedAtMs), nodeId: nodeId || null, outcomeUnknown: mark === UNKNOWN_MARK };
}

// ---- reservation header --------------------------------------------------------------------------------------

export interface StoredHeader {
  /** JSON of the header's body (lines, reference, metadata, tenant, allocation); decisions.ts gives it its type. */
  body: string;
  createdMs: number;
  expiresMs: number;
}

/** The header hash as HGETALL returns it, or null when there is none (never cached, expired, or lost). */
export function parseHeader(fields: Readonly<Record<string, string>>): StoredHeader | null {
  const body = fields[HEADER_FIELD.body];
  if (!body) return null;
  return { body, createdMs: Number(fields[HEADER_FIELD.created]), expiresMs: Number(fields[HEADER_FIELD.expires]) };
}

// ---- stock intents -------------------------------------------------------------------------------------------

export type IntentKindName = (typeof IntentKind)[keyof typeof IntentKind];

/** A stock decision whose fate is open: decided in Redis, not yet known to be recorded or taken back. */
export interface StockIntent {
  location: string;
  /** The on-hand change decided: positive for a supply, negative (or 0, for a set that created the location) for a debit. */
  delta: number;
  kind: IntentKindName;
  /** Redis' clock when the stock script decided. */
  decidedMs: number;
  /** The deciding process (src/jobs/node-lease.ts). */
  nodeId: string;
  /** The safety stock change decided: positive applied at once, negative waiting in `q:`; 0 (or absent) when untouched. */
  safetyDelta?: number;
}

/** The safety delta is written only when there is one, so a plain stock change keeps the older five fields. */
export const formatIntent = (intent: StockIntent): string =>
  [intent.location, intent.delta, intent.kind, intent.decidedMs, intent.nodeId, ...(intent.safetyDelta ? [intent.safetyDelta] : [])].join(
    INTENT_SEPARATOR,
  );

const INTEGER = /^-?\d+$/;
const isKind = (kind: string) => kind === IntentKind.supply || kind === IntentKind.debit;

/** An intent value, or null when it is not of the layout (as common.lua's parseIntent: six fields first, then five). */
export function parseIntent(value: string): StockIntent | null {
  const parts = value.split(INTENT_SEPARATOR);
  for (const tail of [5, 4]) {
    if (parts.length < tail + 1) continue;
    const [delta, kind, decidedMs, nodeId, safetyDelta = '0'] = parts.slice(-tail) as [string, string, string, string, string?];
    const location = parts.slice(0, -tail).join(INTENT_SEPARATOR);
    if (!location || !INTEGER.test(delta) || !isKind(kind) || !DIGITS.test(decidedMs) || !INTEGER.test(safetyDelta)) continue;
    return { location, delta: Number(delta), kind: kind as IntentKindName, decidedMs: Number(decidedMs), nodeId, safetyDelta: Number(safetyDelta) };
  }
  return null;
}
