import { Type, type Static, type TSchema } from 'typebox';

// The contract's shapes and limits (api.md, "Identifiers and limits"), as JSON Schema: the same objects validate
// requests, type the handlers, serialise responses and generate the OpenAPI document.

/**
 * What a stored string may contain. Every string the service keeps goes through PostgreSQL `text`, which cannot hold
 * NUL, and through UTF-8, which cannot encode an unpaired UTF-16 surrogate (it would read back as U+FFFD), so none
 * may contain either. Beyond that:
 * - identifiers (item ids, locations) are 1+ of `A–Z a–z 0–9 . _ : -`, and never `.` or `..`, which a URL path reads
 *   as "this" or "parent" segments;
 * - labels (a reservation's `reference`, metadata keys) admit no control character at all: C0 U+0000–U+001F, DEL
 *   U+007F, C1 U+0080–U+009F;
 * - free text (metadata values, a stock adjustment's `reason`) admits tab, line feed and carriage return, and no other
 *   control character.
 * Lengths count code points (an emoji is one). The ranges are `\u` escapes rather than `\p{Cc}`/`\p{Cs}` so that the
 * OpenAPI document's readers without Unicode property escapes read them too; Ajv compiles patterns with the `u` flag
 * (`unicodeRegExp`, set in plugins/http.ts), under which `\uD800-\uDFFF` matches only unpaired surrogates, never a pair.
 * Each pattern's sentence is what a client reads in a 400 (`patternMessages`).
 */
const IDENTIFIER_PATTERN = '^(?!\\.{1,2}$)[A-Za-z0-9._:-]*$'; // `*`: minLength says an empty one is too short
const LABEL_PATTERN = '^[^\\u0000-\\u001F\\u007F-\\u009F\\uD800-\\uDFFF]*$';
const TEXT_PATTERN = '^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F\\uD800-\\uDFFF]*$';
const IDEMPOTENCY_KEY_PATTERN = '^[\\x21-\\x7E]+$';

/** The message of a `pattern` failure, keyed by the pattern (Ajv reports it in `params.pattern`). */
export const patternMessages: Readonly<Record<string, string>> = {
  [IDENTIFIER_PATTERN]: 'may contain only A–Z a–z 0–9 . _ : - and may not be "." or ".."',
  [LABEL_PATTERN]: 'must not contain control characters or unpaired surrogates',
  [TEXT_PATTERN]: 'must not contain control characters other than tab, line feed and carriage return, or unpaired surrogates',
  [IDEMPOTENCY_KEY_PATTERN]: 'may contain only visible ASCII characters (0x21–0x7E)',
};

const identifier = (maxLength: number, description: string, example: string) =>
  Type.String({ minLength: 1, maxLength, pattern: IDENTIFIER_PATTERN, description, examples: [example] });
const label = (options: { minLength?: number; maxLength: number; description: string }) =>
  Type.String({ ...options, pattern: LABEL_PATTERN });
const text = (options: { minLength?: number; maxLength: number; description?: string }) =>
  Type.String({ ...options, pattern: TEXT_PATTERN });

export const ItemId = identifier(128, 'Item identifier: 1–128 of A–Z a–z 0–9 . _ : -, not "." or ".."', 'sku-tshirt-m');
export const Location = identifier(
  64,
  'Stock location: 1–64 of A–Z a–z 0–9 . _ : -, not "." or ".."; omitted means "default"',
  'wh-2',
);
export const DEFAULT_LOCATION = 'default';
export const DEFAULT_TTL_SECONDS = 900;
export const MAX_BODY_BYTES = 64 * 1024;

export const Timestamp = Type.String({ format: 'date-time', description: 'ISO-8601 UTC with milliseconds' });
export const ReservationStatus = Type.Union(
  [Type.Literal('pending'), Type.Literal('confirmed'), Type.Literal('released'), Type.Literal('expired')],
);
export type ReservationStatus = Static<typeof ReservationStatus>;

/**
 * A flat object of strings: `additionalProperties`, not Type.Record, whose `patternProperties: { "^.*$": … }` misses
 * every key holding a line terminator (`.` matches none): such a key's value went unchecked, and the response
 * serialiser left the key out.
 */
const StringMap = <Value extends TSchema>(value: Value, options: Record<string, unknown> = {}) =>
  Type.Unsafe<Record<string, Static<Value>>>({ type: 'object', additionalProperties: value, ...options });

const Metadata = StringMap(text({ maxLength: 500 }), {
  maxProperties: 20,
  propertyNames: { minLength: 1, maxLength: 64, pattern: LABEL_PATTERN },
  description:
    'Flat object: at most 20 keys of 1–64 chars without control characters, string values of at most 500 chars ' +
    'without control characters other than tab, line feed and carriage return; no unpaired surrogates anywhere',
});

const PRIORITIES = ['normal', 'high'] as const;
export type Priority = (typeof PRIORITIES)[number];
/** An enum, not a union of literals: a wrong value is told the allowed ones in one message. */
const priority = (description: string) => Type.Unsafe<Priority>({ type: 'string', enum: [...PRIORITIES], description });
export const DEFAULT_PRIORITY: Priority = 'normal';
/** Safety stock and stock quantities share one limit (api.md, "Identifiers and limits"). */
const MAX_STOCK = 1_000_000_000;
export const MAX_ALLOCATION_LOCATIONS = 32;

const STRATEGIES = ['ordered', 'most_available', 'single_location'] as const;
/** An enum rather than a union of literals, so that a wrong value is one error naming the three. */
export const AllocationStrategy = Type.Unsafe<(typeof STRATEGIES)[number]>({
  type: 'string',
  enum: [...STRATEGIES],
  description:
    '`ordered`: the candidates in the order of `locations` (required). `most_available`: the candidate with the most ' +
    'available units (`locations`, or every location the item is stocked at when omitted). `single_location`: every ' +
    'allocated line from the first candidate in `locations` (required) that can hold them all (ship together)',
});
export type AllocationStrategy = Static<typeof AllocationStrategy>;

/**
 * Lets the service choose where lines without a `location` are held. The rules JSON Schema cannot say (which
 * strategies need `locations`, `split` with `single_location`, an allocated item in one line only) are
 * src/domain/allocation.ts's.
 */
export const Allocation = Type.Object(
  {
    strategy: AllocationStrategy,
    locations: Type.Optional(
      Type.Array(Location, {
        minItems: 1,
        maxItems: MAX_ALLOCATION_LOCATIONS,
        uniqueItems: true,
        description:
          `The candidate locations, most preferred first: 1–${MAX_ALLOCATION_LOCATIONS} distinct. Required for \`ordered\` ` +
          'and `single_location`. Candidates an item is not stocked at are skipped',
      }),
    ),
    split: Type.Optional(
      Type.Boolean({
        description: 'Default false. true: a line may be held at several locations (not with `single_location`)',
      }),
    ),
  },
  {
    additionalProperties: false,
    description:
      'With `allocation`, each line without `location` is allocated by the strategy (an allocated item may appear in ' +
      'one line only); a line with `location` is held exactly there. Without it, a line without `location` is held at "default"',
  },
);
export type Allocation = Static<typeof Allocation>;

/** A reservation's `reference`: the order, cart or saga it belongs to (lists and releases by reference name it). */
export const Reference = label({
  minLength: 1,
  maxLength: 255,
  description: 'Opaque to the service: 1–255 chars, no control characters or unpaired surrogates',
});

export const ReservationRequest = Type.Object(
  {
    lines: Type.Array(
      Type.Object(
        {
          itemId: ItemId,
          location: Type.Optional(Location),
          quantity: Type.Integer({ minimum: 1, maximum: 1_000_000 }),
        },
        { additionalProperties: false },
      ),
      { minItems: 1, maxItems: 100, description: 'One (itemId, location) pair at most once' },
    ),
    ttlSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400, description: `Default ${DEFAULT_TTL_SECONDS}` })),
    reference: Type.Optional(Reference),
    metadata: Type.Optional(Metadata),
    priority: Type.Optional(
      priority(
        '`normal` (the default) may take at most `onHand − reserved − safetyStock` at a location; `high` (a VIP, B2B ' +
          'or call-centre channel) may take the safety stock too: `onHand − reserved`',
      ),
    ),
    allocation: Type.Optional(Allocation),
  },
  { additionalProperties: false },
);
export type ReservationRequest = Static<typeof ReservationRequest>;

export const IdempotencyHeaders = Type.Object({
  'idempotency-key': Type.String({
    minLength: 1,
    maxLength: 255,
    pattern: IDEMPOTENCY_KEY_PATTERN,
    description:
      'Required: 1–255 visible ASCII characters (0x21–0x7E), chosen by the client, one per reservation it means to ' +
      'make (a cart or checkout id will do). The same key with the same body, within the idempotency retention ' +
      '(24 h by default), answers the first success again, with `Idempotent-Replayed: true`, and holds nothing more; ' +
      'with another body it is `422 idempotency_key_reused`. A request that failed binds nothing: retry a 503 with the ' +
      'same key. Keys are scoped per API key.',
    examples: ['checkout-8421-1'],
  }),
});

/** `"<version>"` (a strong entity tag, api.md "Versions") or `*`. */
export const IF_MATCH_PATTERN = '^(\\*|"[1-9][0-9]{0,14}")$';

export const IfMatchHeaders = Type.Object({
  'if-match': Type.Optional(
    Type.String({
      pattern: IF_MATCH_PATTERN,
      description:
        'Optional: `"<version>"`, the `ETag` of the reservation as the caller last read it. The call then happens only ' +
        'while the reservation is at that version, else `412 precondition_failed` and nothing changes; a repeat of a ' +
        'call that already happened (confirming a confirmed reservation, releasing a released one) answers as without ' +
        'it. `*` matches any version (RFC 9110: the reservation exists), as if the header were absent. Anything else ' +
        '(a weak tag `W/"1"`, a list of tags, a tag that is not a positive integer) is `400 validation_failed`: every ' +
        'ETag this service sends is strong and names one version.',
      examples: ['"1"'],
    }),
  ),
});

/** The version an If-Match header names; null when there is none or it is `*` (unconditional). */
export function ifMatchVersion(header: string | undefined): number | null {
  if (header === undefined || header === '*') return null;
  return Number(header.slice(1, -1));
}

/** The ETag of a reservation document: its version, as a strong entity tag. */
export const etagOf = (document: { version: number }): string => `"${document.version}"`;

export const LineDocument = Type.Object({
  itemId: Type.String(),
  location: Type.String({ description: 'Where the units are held ("default" when the request named none)' }),
  quantity: Type.Integer(),
  confirmedQuantity: Type.Optional(
    Type.Integer({
      minimum: 0,
      description:
        'Only on a reservation confirmed with `lines` (a partial confirm): the units of this line sold; the rest of ' +
        '`quantity` was released (0: all of it)',
    }),
  ),
});

export const ReservationDocument = Type.Object({
  id: Type.String({ description: 'The reservation id (a UUIDv7)' }),
  status: Type.Union(ReservationStatus.anyOf, {
    description:
      '`pending` (units held until `expiresAt`) → `confirmed` (sold), `released` (given back) or `expired` (read so the ' +
      'instant `expiresAt` passes); the last three never change again',
  }),
  reference: Type.Union([Type.String(), Type.Null()], { description: "The request's `reference`, or null" }),
  lines: Type.Array(LineDocument),
  expiresAt: Timestamp,
  createdAt: Timestamp,
  updatedAt: Timestamp,
  metadata: StringMap(Type.String(), { description: "The request's `metadata`, or {}" }),
  priority: priority("The request's `priority` (`normal` when it named none)"),
  allocation: Type.Union([Allocation, Type.Null()], {
    description: "The request's `allocation` as sent (an omitted `split` stays omitted: false), or null",
  }),
  version: Type.Integer({
    minimum: 1,
    description:
      '1 when created, +1 on every change (confirm, release, expiry, extend); a reservation that reads `expired` has its ' +
      "expiry's version at once. Also sent as the `ETag` header (`\"<version>\"`); send it back as `If-Match` to make " +
      'a confirm or release conditional',
  }),
});
export type ReservationDocument = Static<typeof ReservationDocument>;

const Figures = {
  onHand: Type.Integer({ description: 'Units physically held and not yet sold' }),
  reserved: Type.Integer({ description: 'Units held by pending reservations that have not expired' }),
  safetyStock: Type.Integer({ description: 'Units only high-priority reservations may take (set with the stock PUT)' }),
  available: Type.Integer({
    description: 'What a normal-priority reservation may take: max(0, onHand − reserved − safetyStock) per location; the sum of the locations at the top',
  }),
  availableHighPriority: Type.Integer({
    description: 'What a high-priority reservation may take: max(0, onHand − reserved) per location; the sum of the locations at the top',
  }),
};
export const AvailabilityDocument = Type.Object({
  itemId: Type.String(),
  ...Figures,
  locations: Type.Array(Type.Object({ location: Type.String(), ...Figures })),
});
export type AvailabilityDocument = Static<typeof AvailabilityDocument>;

export const StockSetRequest = Type.Object(
  {
    quantity: Type.Integer({ minimum: 0, maximum: MAX_STOCK }),
    location: Type.Optional(Location),
    safetyStock: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: MAX_STOCK,
        description:
          'Units of this location only high-priority reservations may take (0–1,000,000,000). Omitted: the location ' +
          'keeps its safety stock (0 when new). Recorded in the stock ledger like a stock change.',
      }),
    ),
  },
  { additionalProperties: false },
);

export const StockAdjustRequest = Type.Object(
  {
    delta: Type.Integer({ minimum: -1_000_000_000, maximum: 1_000_000_000, not: { const: 0 }, description: 'Non-zero' }),
    location: Type.Optional(Location),
    reason: Type.Optional(
      text({
        minLength: 1,
        maxLength: 255,
        description: '1–255 chars; no control characters other than tab, line feed and carriage return, no unpaired surrogates',
      }),
    ),
  },
  { additionalProperties: false },
);

export const ItemParams = Type.Object({ itemId: ItemId });
/** Any shape: an id that names no reservation is a 404, never a 400 (api.md). */
export const ReservationParams = Type.Object({
  id: Type.String({ description: 'The reservation id', examples: ['01a217ba-1200-7c1e-9a4f-5d2b8e3c6a10'] }),
});

export const Problem = Type.Object(
  {
    type: Type.String({ description: 'Always `about:blank`: `code` says what happened' }),
    title: Type.String({ description: "The code's title (the error catalogue's)" }),
    status: Type.Integer({ description: 'The HTTP status, repeated' }),
    code: Type.String({ description: 'The stable word clients switch on (see "Errors" in the API description)' }),
    detail: Type.Optional(Type.String({ description: 'This occurrence in words, for people; do not parse it' })),
    errors: Type.Optional(
      Type.Array(Type.Object({ field: Type.String(), message: Type.String() }), {
        description: '`validation_failed`: each field (a JSON path, a header name, or `body`) and the rule it breaks',
      }),
    ),
    lines: Type.Optional(
      Type.Array(
        Type.Object({
          itemId: Type.String(),
          location: Type.Union([Type.String(), Type.Null()], {
            description: 'null for an allocated line (the service chose, and no choice could hold it)',
          }),
          requested: Type.Integer(),
          available: Type.Integer({
            description:
              'Units there (that the reservation\'s priority may take); for an allocated line what the strategy could find: with `split` the sum over the candidates, ' +
              'without it the most at any one candidate, with `single_location` what the best single candidate has ' +
              '(the candidate short by the fewest units over all allocated lines; the earlier one on a tie)',
          }),
        }),
        {
          description:
            '`insufficient_stock`: each short line, what it asked for and what there is (for a reservation: what its ' +
            'priority may take, so a normal one is told the units beyond the safety stock)',
        },
      ),
    ),
    checks: Type.Optional(
      Type.Object(
        { redis: Type.String(), postgres: Type.String(), state: Type.String() },
        { description: 'Readiness (`GET /health/ready`) only: the state of each dependency' },
      ),
    ),
  },
  { description: 'RFC 9457 problem details; `code` is the stable word clients switch on' },
);

/** Page sizes of list queries (api.md, "Identifiers and limits"). */
export const MAX_LIMIT = 100;
export const DEFAULT_LIMIT = 20;
/**
 * The most reservations one reference may have for `POST /reservations/release` (its answer lists them all): one
 * page's worth. A reference with more is refused whole, nothing released (`too_many_reservations`).
 */
export const MAX_RELEASE_BY_REFERENCE = 100;

const STATUSES = ['pending', 'confirmed', 'released', 'expired'] as const;

/**
 * `GET /reservations`. A query string carries text: `limit` written as a decimal integer is read as a number before
 * validation (src/http/routes/reservations.ts), so that its range is checked as an integer's and the OpenAPI
 * document says what it is.
 */
export const ReferenceListQuery = Type.Object(
  {
    reference: label({
      minLength: 1,
      maxLength: 255,
      description: 'Required: the reference the reservations were created with (1–255 chars, no control characters or unpaired surrogates)',
    }),
    status: Type.Optional(
      Type.Unsafe<ReservationStatus>({
        type: 'string',
        enum: [...STATUSES],
        description: 'Only reservations in this status now (a pending one past its `expiresAt` reads `expired`)',
      }),
    ),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_LIMIT, description: `At most this many items: 1–${MAX_LIMIT}, default ${DEFAULT_LIMIT}` })),
    cursor: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 200,
        description: "The previous page's `nextCursor`, as it came: the page after it",
      }),
    ),
  },
  { additionalProperties: false },
);
export type ReferenceListQuery = Static<typeof ReferenceListQuery>;

export const ReservationPage = Type.Object({
  items: Type.Array(ReservationDocument, { description: 'Newest first (by `createdAt`, then `id`)' }),
  nextCursor: Type.Union([Type.String(), Type.Null()], {
    description: 'Pass as `cursor` for the next page; null on the last page',
  }),
});
export type ReservationPage = Static<typeof ReservationPage>;

/** `POST /reservations/{id}/extend`: the new TTL, from now (same limits as creation). */
export const ExtendRequest = Type.Object(
  {
    ttlSeconds: Type.Integer({
      minimum: 1,
      maximum: 86_400,
      description: 'The reservation now expires this many seconds from now (it may also shorten it)',
    }),
  },
  { additionalProperties: false },
);
export type ExtendRequest = Static<typeof ExtendRequest>;

/** `POST /reservations/{id}/confirm`'s optional body: without `lines`, everything held is confirmed. */
export const ConfirmRequest = Type.Object(
  {
    lines: Type.Optional(
      Type.Array(
        Type.Object(
          {
            itemId: ItemId,
            location: Type.Optional(Location),
            quantity: Type.Integer({ minimum: 1, maximum: 1_000_000, description: 'Units to sell: 1 to what the reservation holds there' }),
          },
          { additionalProperties: false },
        ),
        {
          minItems: 1,
          maxItems: 100,
          description:
            'The (itemId, location) pairs to sell, each at most once and held by the reservation, and how many units of ' +
            'each; every unit held and not named here is released, in the same step',
        },
      ),
    ),
  },
  { additionalProperties: false },
);
export type ConfirmRequest = Static<typeof ConfirmRequest>;

export const ReleaseByReferenceRequest = Type.Object({ reference: Reference }, { additionalProperties: false });
export type ReleaseByReferenceRequest = Static<typeof ReleaseByReferenceRequest>;

export const ReleasedByReference = Type.Object({
  reference: Type.String(),
  items: Type.Array(ReservationDocument, {
    description: `Every reservation of the reference (at most ${MAX_RELEASE_BY_REFERENCE}), newest first, as it is after the call`,
  }),
});
export type ReleasedByReference = Static<typeof ReleasedByReference>;
