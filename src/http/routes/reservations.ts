import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  ConfirmRequest,
  etagOf,
  ExtendRequest,
  IdempotencyHeaders,
  IfMatchHeaders,
  ifMatchVersion,
  ReferenceListQuery,
  ReleaseByReferenceRequest,
  ReleasedByReference,
  ReservationDocument,
  ReservationPage,
  ReservationParams,
  ReservationRequest,
  type ConfirmRequest as ConfirmBody,
  type ReservationDocument as Reservation,
  type ReservationRequest as ReserveBody,
} from '../../domain/schemas.js';
import type { ReservationApi } from '../../service/api.js';
import { callerOf } from '../access.js';
import { documented, problems, type Examples } from '../openapi.js';

// Examples: a cart held while its buyer checks out, a flash-sale hold of one unit, followed through their lives, and a
// VIP order that may take the units kept as safety stock.

const cartRequest: ReserveBody = {
  lines: [
    { itemId: 'sku-tshirt-m', quantity: 2 },
    { itemId: 'sku-mug-white', quantity: 1, location: 'wh-2' },
  ],
  ttlSeconds: 600,
  reference: 'cart-8421',
  metadata: { channel: 'web', customer: 'c-1093' },
};
const cart: Reservation = {
  id: '01a217ba-1200-7c1e-9a4f-5d2b8e3c6a10',
  status: 'pending',
  reference: 'cart-8421',
  lines: [
    { itemId: 'sku-tshirt-m', location: 'default', quantity: 2 },
    { itemId: 'sku-mug-white', location: 'wh-2', quantity: 1 },
  ],
  expiresAt: '2026-11-26T12:10:00.000Z',
  createdAt: '2026-11-26T12:00:00.000Z',
  updatedAt: '2026-11-26T12:00:00.000Z',
  metadata: { channel: 'web', customer: 'c-1093' },
  priority: 'normal',
  allocation: null,
  version: 1,
};

const flashRequest: ReserveBody = { lines: [{ itemId: 'sneaker-drop-42', quantity: 1 }], ttlSeconds: 120, reference: 'checkout-77f3' };
const flash: Reservation = {
  id: '01a217ba-23a0-7b03-8e61-0f4a9c2d7e55',
  status: 'pending',
  reference: 'checkout-77f3',
  lines: [{ itemId: 'sneaker-drop-42', location: 'default', quantity: 1 }],
  expiresAt: '2026-11-26T12:02:04.512Z',
  createdAt: '2026-11-26T12:00:04.512Z',
  updatedAt: '2026-11-26T12:00:04.512Z',
  metadata: {},
  priority: 'normal',
  allocation: null,
  version: 1,
};

const vipRequest: ReserveBody = {
  lines: [{ itemId: 'sneaker-drop-42', quantity: 2 }],
  ttlSeconds: 900,
  reference: 'vip-order-5512',
  metadata: { channel: 'call-centre' },
  priority: 'high',
};
const vip: Reservation = {
  id: '01a217ba-2f10-7d44-b2c9-3e8f6a1d0b27',
  status: 'pending',
  reference: 'vip-order-5512',
  lines: [{ itemId: 'sneaker-drop-42', location: 'default', quantity: 2 }],
  expiresAt: '2026-11-26T12:15:07.301Z',
  createdAt: '2026-11-26T12:00:07.301Z',
  updatedAt: '2026-11-26T12:00:07.301Z',
  metadata: { channel: 'call-centre' },
  priority: 'high',
  allocation: null,
  version: 1,
};

// Carts the service allocates over two warehouses, Berlin with 3 t-shirts and no mugs, Paris with plenty: Berlin first,
// the rest from Paris (split); and one shipped together from one place.
const splitRequest: ReserveBody = {
  lines: [
    { itemId: 'sku-tshirt-m', quantity: 5 },
    { itemId: 'sku-mug-white', quantity: 1 },
  ],
  allocation: { strategy: 'ordered', locations: ['wh-berlin', 'wh-paris'], split: true },
  reference: 'cart-9120',
};
const split: Reservation = {
  id: '01a217ba-3f10-7d22-b5c4-6e1f0a9d8b31',
  status: 'pending',
  reference: 'cart-9120',
  lines: [
    { itemId: 'sku-tshirt-m', location: 'wh-berlin', quantity: 3 },
    { itemId: 'sku-tshirt-m', location: 'wh-paris', quantity: 2 },
    { itemId: 'sku-mug-white', location: 'wh-paris', quantity: 1 },
  ],
  expiresAt: '2026-11-26T12:15:09.004Z',
  createdAt: '2026-11-26T12:00:09.004Z',
  updatedAt: '2026-11-26T12:00:09.004Z',
  metadata: {},
  priority: 'normal',
  allocation: { strategy: 'ordered', locations: ['wh-berlin', 'wh-paris'], split: true },
  version: 1,
};

const togetherRequest: ReserveBody = {
  lines: [
    { itemId: 'sku-tshirt-m', quantity: 2 },
    { itemId: 'sku-mug-white', quantity: 2 },
  ],
  allocation: { strategy: 'single_location', locations: ['wh-berlin', 'wh-paris'] },
  reference: 'cart-9121',
};
const together: Reservation = {
  id: '01a217ba-4a77-7e09-8d13-2c5b7f0e4a92',
  status: 'pending',
  reference: 'cart-9121',
  lines: [
    { itemId: 'sku-tshirt-m', location: 'wh-paris', quantity: 2 },
    { itemId: 'sku-mug-white', location: 'wh-paris', quantity: 2 },
  ],
  expiresAt: '2026-11-26T12:15:12.640Z',
  createdAt: '2026-11-26T12:00:12.640Z',
  updatedAt: '2026-11-26T12:00:12.640Z',
  metadata: {},
  priority: 'normal',
  allocation: { strategy: 'single_location', locations: ['wh-berlin', 'wh-paris'] },
  version: 1,
};

const confirmed: Reservation = { ...cart, status: 'confirmed', updatedAt: '2026-11-26T12:04:31.207Z', version: 2 };
// The cart's payment covered one of the two t-shirts: that one is sold, the other and the mug are given back.
const partialRequest: ConfirmBody = { lines: [{ itemId: 'sku-tshirt-m', quantity: 1 }] };
const partlyConfirmed: Reservation = {
  ...confirmed,
  lines: [
    { itemId: 'sku-tshirt-m', location: 'default', quantity: 2, confirmedQuantity: 1 },
    { itemId: 'sku-mug-white', location: 'wh-2', quantity: 1, confirmedQuantity: 0 },
  ],
};
// Named as the answers they get (the cart's), so /docs shows each request beside its answer.
const confirmExamples: Examples<ConfirmBody> = {
  confirmed: { summary: 'Sell every unit held (the same as no body)', value: {} },
  partly: { summary: 'Sell one of the two t-shirts; the other and the mug are released', value: partialRequest },
};
const released: Reservation = { ...cart, status: 'released', updatedAt: '2026-11-26T12:03:12.880Z', version: 2 };
const expired: Reservation = { ...flash, status: 'expired', updatedAt: flash.expiresAt, version: 2 };

// A slow payment: the cart's hold is extended by ten minutes from the call, at version 2.
const extended: Reservation = {
  ...cart,
  expiresAt: '2026-11-26T12:23:40.118Z',
  updatedAt: '2026-11-26T12:13:40.118Z',
  version: 2,
};

const etag = {
  ETag: {
    description: 'The reservation\'s version as a strong entity tag (`"1"`): send it back as `If-Match` to confirm, release or extend only that version',
    type: 'string',
  },
} as const;

const precondition = {
  means:
    'The request carried `If-Match` and the reservation is at another version (it changed since the caller read it). ' +
    'Nothing changed. A repeat of a call that already happened is answered as without `If-Match`.',
  example: { detail: 'If-Match names version 1; the reservation is at version 2' },
};
const badIfMatch = {
  means: 'A malformed `If-Match` (only `"<version>"` or `*`); `errors` names the header.',
  example: {
    detail: 'If-Match: is not in the expected format',
    errors: [{ field: 'If-Match', message: 'is not in the expected format' }],
  },
};

// A checkout saga for order-123 that held its shirts and its mug in two reservations, then failed at payment: its
// compensation step releases both; had the shirts been confirmed already, they would stay sold.
const orderShirts: Reservation = {
  ...cart,
  id: '01a217ba-5c01-7a3e-9b42-1d7e3f5a2c84',
  reference: 'order-123',
  lines: [{ itemId: 'sku-tshirt-m', location: 'default', quantity: 2 }],
  metadata: {},
};
const orderMug: Reservation = {
  ...cart,
  id: '01a217ba-5c4e-7f10-8a07-6b2c9d1e4f53',
  reference: 'order-123',
  lines: [{ itemId: 'sku-mug-white', location: 'wh-2', quantity: 1 }],
  createdAt: '2026-11-26T12:00:01.250Z',
  updatedAt: '2026-11-26T12:00:01.250Z',
  expiresAt: '2026-11-26T12:10:01.250Z',
  metadata: {},
};
const compensatedAt = '2026-11-26T12:03:40.118Z';
const ofOrder: ReservationPage = { items: [orderMug, orderShirts], nextCursor: null };
const firstPage: ReservationPage = { items: [orderMug], nextCursor: 'MTc5NTY5NDQwMTI1MDAwMC4wMWEyMTdiYS01YzRlLTdmMTAtOGEwNy02YjJjOWQxZTRmNTM' };
const compensated: ReleasedByReference = {
  reference: 'order-123',
  items: [
    { ...orderMug, status: 'released', updatedAt: compensatedAt },
    { ...orderShirts, status: 'released', updatedAt: compensatedAt },
  ],
};
const partlySold: ReleasedByReference = {
  reference: 'order-123',
  items: [
    { ...orderMug, status: 'released', updatedAt: compensatedAt },
    { ...orderShirts, status: 'confirmed', updatedAt: '2026-11-26T12:02:55.406Z' },
  ],
};

const reserveExamples: Examples<ReserveBody> = {
  cart: { summary: 'A cart: two lines held for 10 minutes while the buyer checks out', value: cartRequest },
  flashSale: { summary: 'A flash-sale hold: one unit for 2 minutes', value: flashRequest },
  vip: { summary: 'A VIP order: high priority, so it may take the safety stock', value: vipRequest },
  splitOverWarehouses: {
    summary: 'A cart the service allocates: Berlin first, the rest from Paris, a line split where one warehouse is short',
    value: splitRequest,
  },
  shipTogether: { summary: 'A cart held in one warehouse, the first that has every line (ship together)', value: togetherRequest },
};

const notFound = 'No reservation has this id, or it is another tenant\'s.';
const unavailable = 'Redis or PostgreSQL is unreachable, or Redis state is being rebuilt: retry (repeating this call is safe).';

export const reservationRoutes: FastifyPluginAsyncTypebox<{ reservations: ReservationApi }> = async (
  app,
  { reservations },
) => {
  app.post(
    '/reservations',
    {
      config: { access: 'client' },
      schema: {
        operationId: 'createReservation',
        tags: ['reservations'],
        summary: 'Hold every line for ttlSeconds, or nothing',
        description:
          'All lines or none: either every line is held until `expiresAt`, or nothing is held and the answer names each ' +
          'short line. Confirm the reservation to sell its units, release it to give them back; past `expiresAt` its ' +
          'units are available again by themselves. A `normal` reservation (the default) may take at most ' +
          '`onHand − reserved − safetyStock` at a location, a `high` one `onHand − reserved`.',
        headers: IdempotencyHeaders,
        body: ReservationRequest,
        bodyExamples: reserveExamples,
        response: {
          201: documented(
            'Created (or, with `Idempotent-Replayed: true`, the first answer to this key and body again): every line is held until `expiresAt`',
            ReservationDocument,
            {
              cart: { summary: 'The cart, held for 10 minutes', value: cart },
              flashSale: { summary: 'The flash-sale hold', value: flash },
              vip: { summary: 'The VIP order, held from the safety stock', value: vip },
              splitOverWarehouses: {
                summary: 'Berlin had 3 t-shirts and no mugs: 3 t-shirts held there, 2 and the mug in Paris',
                value: split,
              },
              shipTogether: { summary: 'Berlin has no mugs: both lines held in Paris', value: together },
            },
            {
              ...etag,
              Location: { description: 'The reservation: `/reservations/{id}`', type: 'string' },
              'Idempotent-Replayed': {
                description: '`true` when this answers an earlier request with the same Idempotency-Key and body',
                type: 'string',
              },
            },
          ),
          ...problems({
            validation_failed: {
              means:
                'A field breaks its rule, a line repeats an (itemId, location) pair, an unknown field, the ' +
                '`Idempotency-Key` header is missing or malformed, or an allocation rule is broken (`locations` missing ' +
                'for `ordered` or `single_location`, `split` with `single_location`, an allocated item in two lines); ' +
                '`errors` names each.',
              example: {
                detail: 'lines[0].quantity: must be at least 1; ttlSeconds: must be at most 86400',
                errors: [
                  { field: 'lines[0].quantity', message: 'must be at least 1' },
                  { field: 'ttlSeconds', message: 'must be at most 86400' },
                ],
              },
            },
            item_not_found: {
              means:
                'A line names an item, or a location of it, that was never stocked, or an allocated item is stocked at ' +
                'none of its candidate locations. Nothing is held.',
              example: { detail: 'not stocked: sku-mug-white@wh-9' },
            },
            insufficient_stock: {
              means:
                'A line asks for more than is available to its priority (a normal reservation cannot take the safety ' +
                'stock); `lines` names each short line with what that priority could take. An allocated line has ' +
                '`location: null` and `available` = what its strategy could find. Nothing is held.',
              example: {
                detail: 'sneaker-drop-42: requested 1, available 0',
                lines: [{ itemId: 'sneaker-drop-42', location: 'default', requested: 1, available: 0 }],
              },
              also: {
                allocated: {
                  summary: 'A split line over Berlin and Paris: 4 units there in all',
                  value: {
                    detail: 'sku-tshirt-m (allocated): requested 5, available 4',
                    lines: [{ itemId: 'sku-tshirt-m', location: null, requested: 5, available: 4 }],
                  },
                },
              },
            },
            idempotency_key_in_use: 'The first request with this key and body is still being processed: retry shortly with the same key.',
            idempotency_key_reused: 'This key was first used with another body (also while that request is in flight).',
            unavailable:
              'Redis or PostgreSQL is unreachable, or Redis state is being rebuilt: nothing is held; retry with the same Idempotency-Key.',
          }),
        },
      },
    },
    async (request, reply) => {
      const answer = await reservations.reserve(callerOf(request), request.headers['idempotency-key'], request.body);
      reply.code(answer.statusCode as 201).header('location', `/reservations/${answer.body.id}`).header('etag', etagOf(answer.body));
      if (answer.replayed) reply.header('idempotent-replayed', 'true');
      return answer.body;
    },
  );

  app.get(
    '/reservations',
    {
      config: { access: 'client' },
      // A query string is text: a limit written as a decimal integer is read as the number it spells, so the schema
      // checks its range (anything else stays text and is refused as not an integer).
      preValidation: async (request) => {
        const query = request.query as Record<string, unknown>;
        if (typeof query.limit === 'string' && /^-?[0-9]+$/.test(query.limit)) query.limit = Number(query.limit);
      },
      schema: {
        operationId: 'listReservationsByReference',
        tags: ['reservations'],
        summary: 'Find the reservations of a reference (an order, a cart, a saga), newest first',
        description:
          'Every reservation created with this `reference` (a client key sees its own tenant\'s), newest first (by ' +
          '`createdAt`, then `id`), `limit` at a time. Pass `nextCursor` back as `cursor` for the next page; paging ' +
          'goes on where it left off however many reservations are created meanwhile (they are newer: they come ' +
          'before the first page, never twice and never in place of one). `status` filters by the status read now ' +
          '(a pending reservation past its `expiresAt` reads `expired`). Read from PostgreSQL; with a read replica ' +
          '(`DATABASE_REPLICA_URL`) it may be up to `DATABASE_REPLICA_MAX_LAG_MS` behind: a reservation created or changed ' +
          'that recently may be missing or show its former state.',
        querystring: ReferenceListQuery,
        response: {
          200: documented('A page of reservations', ReservationPage, {
            order: { summary: "The two reservations of order-123's checkout", value: ofOrder },
            paged: { summary: 'The same with `limit=1`: the first page, and the cursor of the next', value: firstPage },
          }),
          ...problems({
            validation_failed: {
              means:
                '`reference` missing or breaking its rule, `status` not one of the four, `limit` not an integer from 1 to ' +
                `100, a \`cursor\` this service did not issue, or an unknown parameter; \`errors\` names each.`,
              example: {
                detail: 'reference: is required; limit: must be at most 100',
                errors: [
                  { field: 'reference', message: 'is required' },
                  { field: 'limit', message: 'must be at most 100' },
                ],
              },
            },
            unavailable: 'PostgreSQL is unreachable: retry.',
          }),
        },
      },
    },
    (request) => reservations.listByReference(callerOf(request), request.query),
  );

  // A static path: it takes precedence over `/reservations/:id/...`, and `GET /reservations/release` still reads the
  // reservation with id "release" (none: 404).
  app.post(
    '/reservations/release',
    {
      config: { access: 'client' },
      schema: {
        operationId: 'releaseReservationsByReference',
        tags: ['reservations'],
        summary: "Release every pending reservation of a reference: a saga's compensation step (idempotent)",
        description:
          'Each pending reservation of the reference (a client key: of its own tenant) is released as by ' +
          '`POST /reservations/{id}/release`, and the answer lists every reservation of the reference as it is ' +
          'after, newest first. Confirmed ones stay confirmed (also when a confirm races this call: each reservation ' +
          'ends one way), expired ones stay expired. Calling again releases nothing more and answers the same; an ' +
          'unknown reference answers an empty list. A reference with more than 100 reservations is refused whole ' +
          '(`409 too_many_reservations`, nothing released): list them and release each.',
        body: ReleaseByReferenceRequest,
        bodyExamples: { order: { summary: "Compensate order-123's checkout", value: { reference: 'order-123' } } },
        response: {
          200: documented('Every reservation of the reference, as it is now', ReleasedByReference, {
            compensated: { summary: 'Both holds given back', value: compensated },
            partlySold: { summary: 'The shirts had been confirmed already: they stay sold, the mug is given back', value: partlySold },
          }),
          ...problems({
            validation_failed: {
              means: '`reference` missing or breaking its rule, or an unknown field; `errors` names each.',
              example: { detail: 'reference: is required', errors: [{ field: 'reference', message: 'is required' }] },
            },
            too_many_reservations: 'The reference has more than 100 reservations: nothing was released.',
            unavailable:
              'Redis or PostgreSQL is unreachable, or Redis state is being rebuilt: some reservations may have been released; ' +
              'repeat the call (it is safe) to release the rest.',
          }),
        },
      },
    },
    (request) => reservations.releaseByReference(callerOf(request), request.body.reference),
  );

  app.get(
    '/reservations/:id',
    {
      config: { access: 'client' },
      schema: {
        operationId: 'getReservation',
        tags: ['reservations'],
        summary: 'Read a reservation',
        description:
          'A reservation whose `expiresAt` has passed reads `expired` at once, whether or not a background job has run. ' +
          'Never stale, also with a read replica: every change answered before this call shows.',
        params: ReservationParams,
        response: {
          200: documented(
            'The reservation as it is now',
            ReservationDocument,
            {
              pending: { summary: 'A cart, held', value: cart },
              expired: { summary: 'A flash-sale hold its buyer never confirmed', value: expired },
            },
            etag,
          ),
          ...problems({ reservation_not_found: notFound, unavailable: 'PostgreSQL is unreachable: retry.' }),
        },
      },
    },
    async (request, reply) => {
      const document = await reservations.get(callerOf(request), request.params.id);
      reply.header('etag', etagOf(document));
      return document;
    },
  );

  app.post(
    '/reservations/:id/confirm',
    {
      config: { access: 'client' },
      // The body is optional: none is `{}` (confirm everything), which the schema then checks like any other.
      preValidation: async (request) => {
        if (request.body === undefined) request.body = {};
      },
      schema: {
        operationId: 'confirmReservation',
        tags: ['reservations'],
        summary: 'Sell the held units, or some of them (idempotent)',
        description:
          'The held units leave on-hand for good. The body is optional: without it (or without `lines`) every unit ' +
          'held is sold. With `lines`, only the units named are sold and everything else the reservation holds is ' +
          'released, in one step (a partial confirm: what was paid for or packed); the lines then carry ' +
          '`confirmedQuantity`. Confirming a confirmed reservation answers the same document again, whatever the body; ' +
          'nothing changes twice. With `If-Match: "<version>"`, only while the reservation is at that version.',
        params: ReservationParams,
        headers: IfMatchHeaders,
        body: ConfirmRequest,
        bodyOptional: true,
        bodyExamples: confirmExamples,
        response: {
          200: documented(
            'The reservation, `confirmed`',
            ReservationDocument,
            {
              confirmed: { summary: 'The cart, sold', value: confirmed },
              partly: { summary: 'One t-shirt sold; the other and the mug released', value: partlyConfirmed },
            },
            etag,
          ),
          ...problems({
            validation_failed: {
              means:
                'A malformed body or `If-Match`, a pair named twice, a pair the reservation does not hold, or a quantity ' +
                'above what it holds there; `errors` names the field.',
              example: {
                detail: 'lines[0].quantity: must be <= 2, the units held of sku-tshirt-m at default',
                errors: [{ field: 'lines[0].quantity', message: 'must be <= 2, the units held of sku-tshirt-m at default' }],
              },
            },
            reservation_not_found: notFound,
            precondition_failed: precondition,
            reservation_expired: 'Its `expiresAt` passed first: the units are available again; reserve anew.',
            reservation_released: 'It was released.',
            insufficient_stock: {
              means:
                'On-hand was set below what this reservation holds (a count found units missing) and no longer covers ' +
                'it; the hold stays pending until restocked or released.',
              example: {
                detail: 'sku-tshirt-m: on hand 1 no longer covers 2',
                lines: [{ itemId: 'sku-tshirt-m', location: 'default', requested: 2, available: 1 }],
              },
            },
            unavailable,
          }),
        },
      },
    },
    async (request, reply) => {
      const ifMatch = ifMatchVersion(request.headers['if-match']);
      const document = await reservations.confirm(callerOf(request), request.params.id, ifMatch, request.body);
      reply.header('etag', etagOf(document));
      return document;
    },
  );

  app.post(
    '/reservations/:id/release',
    {
      config: { access: 'client' },
      schema: {
        operationId: 'releaseReservation',
        tags: ['reservations'],
        summary: 'Give the held units back (idempotent)',
        description:
          'The units are available again at once. Releasing a released reservation answers the same document again; ' +
          'releasing an expired one answers it `expired`. No body. With `If-Match: "<version>"`, only while the ' +
          'reservation is at that version (an expired one is at its expiry\'s version).',
        params: ReservationParams,
        headers: IfMatchHeaders,
        response: {
          200: documented(
            'The reservation, `released` (or `expired`, if its TTL had passed)',
            ReservationDocument,
            {
              released: { summary: 'The cart, given back', value: released },
              expired: { summary: 'Already expired: nothing to give back', value: expired },
            },
            etag,
          ),
          ...problems({
            validation_failed: badIfMatch,
            reservation_not_found: notFound,
            precondition_failed: precondition,
            reservation_confirmed: 'It was confirmed: its units are sold.',
            unavailable,
          }),
        },
      },
    },
    async (request, reply) => {
      const document = await reservations.release(callerOf(request), request.params.id, ifMatchVersion(request.headers['if-match']));
      reply.header('etag', etagOf(document));
      return document;
    },
  );

  app.post(
    '/reservations/:id/extend',
    {
      config: { access: 'client' },
      schema: {
        operationId: 'extendReservation',
        tags: ['reservations'],
        summary: 'Move a pending hold\'s expiry',
        description:
          'A pending, unexpired reservation now expires `ttlSeconds` from now (the server\'s clock), which may also ' +
          'shorten it; its version goes up by one. Extend racing the expiry has one outcome: extended, or ' +
          '`409 reservation_expired`. With `If-Match: "<version>"`, only while the reservation is at that version.',
        params: ReservationParams,
        headers: IfMatchHeaders,
        body: ExtendRequest,
        bodyExamples: { extended: { summary: 'Ten more minutes from now, while the payment completes', value: { ttlSeconds: 600 } } },
        response: {
          200: documented(
            'The reservation, `pending`, with its new `expiresAt`',
            ReservationDocument,
            { extended: { summary: 'The cart, ten more minutes while the payment completes', value: extended } },
            etag,
          ),
          ...problems({
            validation_failed: {
              means: '`ttlSeconds` missing or not an integer from 1 to 86,400, another field, or a malformed `If-Match`; `errors` names it.',
              example: {
                detail: 'ttlSeconds: must be <= 86400',
                errors: [{ field: 'ttlSeconds', message: 'must be <= 86400' }],
              },
            },
            reservation_not_found: notFound,
            precondition_failed: precondition,
            reservation_expired: 'Its `expiresAt` passed first: the units are available again; reserve anew.',
            reservation_released: 'It was released.',
            reservation_confirmed: 'It was confirmed: its units are sold.',
            unavailable,
          }),
        },
      },
    },
    async (request, reply) => {
      const caller = callerOf(request);
      const ifMatch = ifMatchVersion(request.headers['if-match']);
      const document = await reservations.extend(caller, request.params.id, request.body.ttlSeconds, ifMatch);
      reply.header('etag', etagOf(document));
      return document;
    },
  );
};
