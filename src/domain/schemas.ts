import { Type, type Static } from 'typebox';

/**
 * The contract's shapes and limits (api.md, "Identifiers and limits"), as JSON Schema: the same objects validate
 * requests, type the handlers, serialise responses and generate the OpenAPI document.
 */
const identifier = (maxLength: number, description: string) =>
  Type.String({ minLength: 1, maxLength, pattern: '^[A-Za-z0-9._:-]+$', description });

export const ItemId = identifier(128, 'Item identifier: 1–128 of A–Z a–z 0–9 . _ : -');
export const Location = identifier(64, 'Stock location: 1–64 of A–Z a–z 0–9 . _ : -; omitted means "default"');
export const DEFAULT_LOCATION = 'default';
export const DEFAULT_TTL_SECONDS = 900;
export const MAX_BODY_BYTES = 64 * 1024;

export const Timestamp = Type.String({ format: 'date-time', description: 'ISO-8601 UTC with milliseconds' });
export const ReservationStatus = Type.Union(
  [Type.Literal('pending'), Type.Literal('confirmed'), Type.Literal('released'), Type.Literal('expired')],
);
export type ReservationStatus = Static<typeof ReservationStatus>;

const Metadata = Type.Record(Type.String(), Type.String({ maxLength: 500 }), {
  maxProperties: 20,
  propertyNames: { minLength: 1, maxLength: 64 },
  description: 'Flat object: at most 20 keys of 1–64 chars, string values of at most 500 chars',
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
    reference: Type.Optional(Type.String({ minLength: 1, maxLength: 255, description: 'Opaque to the service' })),
    metadata: Type.Optional(Metadata),
  },
  { additionalProperties: false },
);
export type ReservationRequest = Static<typeof ReservationRequest>;

export const IdempotencyHeaders = Type.Object({
  'idempotency-key': Type.String({ minLength: 1, maxLength: 255, pattern: '^[\\x21-\\x7E]+$' }),
});

export const LineDocument = Type.Object({ itemId: Type.String(), location: Type.String(), quantity: Type.Integer() });

export const ReservationDocument = Type.Object({
  id: Type.String(),
  status: ReservationStatus,
  reference: Type.Union([Type.String(), Type.Null()]),
  lines: Type.Array(LineDocument),
  expiresAt: Timestamp,
  createdAt: Timestamp,
  updatedAt: Timestamp,
  metadata: Type.Record(Type.String(), Type.String()),
});
export type ReservationDocument = Static<typeof ReservationDocument>;

const Figures = { onHand: Type.Integer(), reserved: Type.Integer(), available: Type.Integer() };
export const AvailabilityDocument = Type.Object({
  itemId: Type.String(),
  ...Figures,
  locations: Type.Array(Type.Object({ location: Type.String(), ...Figures })),
});
export type AvailabilityDocument = Static<typeof AvailabilityDocument>;

export const StockSetRequest = Type.Object(
  { quantity: Type.Integer({ minimum: 0, maximum: 1_000_000_000 }), location: Type.Optional(Location) },
  { additionalProperties: false },
);

export const StockAdjustRequest = Type.Object(
  {
    delta: Type.Integer({ minimum: -1_000_000_000, maximum: 1_000_000_000, not: { const: 0 }, description: 'Non-zero' }),
    location: Type.Optional(Location),
    reason: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
  },
  { additionalProperties: false },
);

export const ItemParams = Type.Object({ itemId: ItemId });
/** Any shape: an id that names no reservation is a 404, never a 400 (api.md). */
export const ReservationParams = Type.Object({ id: Type.String() });

export const Problem = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    code: Type.String(),
    detail: Type.Optional(Type.String()),
    errors: Type.Optional(Type.Array(Type.Object({ field: Type.String(), message: Type.String() }))),
    lines: Type.Optional(
      Type.Array(
        Type.Object({ itemId: Type.String(), location: Type.String(), requested: Type.Integer(), available: Type.Integer() }),
      ),
    ),
  },
  { description: 'RFC 9457 problem details; `code` is the stable word clients switch on' },
);
