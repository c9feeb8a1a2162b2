import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  AvailabilityDocument,
  DEFAULT_LOCATION,
  ItemParams,
  StockAdjustRequest,
  StockSetRequest,
  type AvailabilityDocument as Availability,
} from '../../domain/schemas.js';
import type { StockApi } from '../../service/api.js';
import { documented, problems, type Examples } from '../openapi.js';

// Examples: one T-shirt size stocked at the default location and a second warehouse, a count, a delivery, a write-off,
// and a limited sneaker whose last units at the default location are kept for VIP orders (safety stock).

const twoLocations: Availability = {
  itemId: 'sku-tshirt-m',
  onHand: 140,
  reserved: 7,
  safetyStock: 0,
  available: 133,
  availableHighPriority: 133,
  locations: [
    { location: 'default', onHand: 100, reserved: 7, safetyStock: 0, available: 93, availableHighPriority: 93 },
    { location: 'wh-2', onHand: 40, reserved: 0, safetyStock: 0, available: 40, availableHighPriority: 40 },
  ],
};

const vipReserve: Availability = {
  itemId: 'sneaker-drop-42',
  onHand: 50,
  reserved: 38,
  safetyStock: 10,
  available: 2,
  availableHighPriority: 12,
  locations: [{ location: 'default', onHand: 50, reserved: 38, safetyStock: 10, available: 2, availableHighPriority: 12 }],
};

const availabilityExamples: Examples<Availability> = {
  twoLocations: { summary: 'Stocked at two locations, 7 units held by pending reservations', value: twoLocations },
  soldOut: {
    summary: 'Sold out: every unit on hand is held',
    value: {
      itemId: 'sneaker-drop-42',
      onHand: 500,
      reserved: 500,
      safetyStock: 0,
      available: 0,
      availableHighPriority: 0,
      locations: [{ location: 'default', onHand: 500, reserved: 500, safetyStock: 0, available: 0, availableHighPriority: 0 }],
    },
  },
  vipReserve: {
    summary: '10 units kept for high-priority (VIP) reservations: normal ones may take 2 more, high-priority ones 12',
    value: vipReserve,
  },
};

const unavailable = 'Redis or PostgreSQL is unreachable, or Redis state is being rebuilt: nothing changed, retry.';

export const itemRoutes: FastifyPluginAsyncTypebox<{ stock: StockApi }> = async (app, { stock }) => {
  app.get(
    '/items/:itemId/availability',
    {
      config: { access: 'client' },
      schema: {
        operationId: 'getAvailability',
        tags: ['stock'],
        summary: 'Availability of an item, per location and in total',
        description:
          'Exact at every instant: a reservation past its `expiresAt` no longer counts as reserved, whether or not a ' +
          'background job has recorded its expiry.',
        params: ItemParams,
        response: {
          200: documented(
            'On-hand, reserved, safety stock and available units (for normal and for high-priority reservations), per location (by name) and summed',
            AvailabilityDocument,
            availabilityExamples,
          ),
          ...problems({
            validation_failed: {
              means: 'The item id breaks its rule (1–128 of `A–Z a–z 0–9 . _ : -`).',
              example: {
                detail: 'itemId: may contain only A–Z a–z 0–9 . _ : - and may not be "." or ".."',
                errors: [{ field: 'itemId', message: 'may contain only A–Z a–z 0–9 . _ : - and may not be "." or ".."' }],
              },
            },
            item_not_found: 'The item was never stocked.',
            unavailable: 'Redis is unreachable or its state is being rebuilt: retry.',
          }),
        },
      },
    },
    (request) => stock.availability(request.params.itemId),
  );

  app.put(
    '/items/:itemId/stock',
    {
      config: { access: 'operator' },
      schema: {
        operationId: 'setStock',
        tags: ['stock'],
        summary: 'Set the on-hand quantity (and optionally the safety stock) of a location (absolute; creates the item/location if new)',
        description:
          'Safe to repeat. On-hand may be set below what is reserved (a count found units missing): existing holds ' +
          'stay, `available` is 0 until restocked, and a confirm succeeds only while on-hand still covers it. ' +
          '`safetyStock` keeps units for high-priority reservations only (normal ones see `available` less it); ' +
          'omitted, the location keeps its safety stock. Both change in one step, recorded in the stock ledger.',
        params: ItemParams,
        body: StockSetRequest,
        bodyExamples: {
          count: { summary: 'Count at the default location', value: { quantity: 100 } },
          secondWarehouse: { summary: 'Stock a second warehouse', value: { quantity: 40, location: 'wh-2' } },
          vipReserve: { summary: 'Keep the last 10 units for VIP (high-priority) orders', value: { quantity: 50, safetyStock: 10 } },
        },
        response: {
          200: documented("The item's availability after the change", AvailabilityDocument, {
            afterCount: { summary: 'After stocking wh-2 with 40', value: twoLocations },
            afterVipReserve: { summary: 'After keeping 10 of 50 units for VIP orders (38 held)', value: vipReserve },
          }),
          ...problems({
            validation_failed: {
              means:
                'A field breaks its rule (`quantity` and `safetyStock` 0–1,000,000,000, `location` 1–64 of ' +
                '`A–Z a–z 0–9 . _ : -`), or an unknown field.',
              example: {
                detail: 'quantity: must be at most 1000000000',
                errors: [{ field: 'quantity', message: 'must be at most 1000000000' }],
              },
            },
            unavailable,
          }),
        },
      },
    },
    (request) => {
      const { quantity, location, safetyStock } = request.body;
      return stock.set(request.params.itemId, location ?? DEFAULT_LOCATION, quantity, safetyStock);
    },
  );

  app.post(
    '/items/:itemId/stock/adjustments',
    {
      config: { access: 'operator' },
      schema: {
        operationId: 'adjustStock',
        tags: ['stock'],
        summary: 'Change the on-hand quantity of a stocked location by a delta',
        description:
          'Atomic with concurrent reservations; recorded in the stock ledger with its `reason`. Not idempotent: after a ' +
          '503, read the availability before repeating it.',
        params: ItemParams,
        body: StockAdjustRequest,
        bodyExamples: {
          delivery: { summary: 'A delivery arrives at wh-2', value: { delta: 24, location: 'wh-2', reason: 'delivery PO-1182' } },
          writeOff: { summary: 'Two units found damaged', value: { delta: -2, reason: 'damaged in handling' } },
        },
        response: {
          200: documented("The item's availability after the change", AvailabilityDocument, {
            afterWriteOff: {
              summary: 'After writing off 2 units at the default location',
              value: {
                ...twoLocations,
                onHand: 138,
                available: 131,
                availableHighPriority: 131,
                locations: [
                  { location: 'default', onHand: 98, reserved: 7, safetyStock: 0, available: 91, availableHighPriority: 91 },
                  twoLocations.locations[1]!,
                ],
              },
            },
          }),
          ...problems({
            validation_failed: {
              means: 'A field breaks its rule (`delta` a non-zero integer within ±1,000,000,000, `reason` 1–255 characters), or an unknown field.',
              example: { detail: 'delta: must not be 0', errors: [{ field: 'delta', message: 'must not be 0' }] },
            },
            item_not_found: {
              means: 'The item, or this location of it, was never stocked: only setting stock creates one.',
              example: { detail: 'sku-tshirt-m is not stocked at wh-9' },
            },
            insufficient_stock: {
              means: 'The delta would make on-hand negative; `lines` says how much there is. Nothing changed.',
              example: {
                detail: 'sku-tshirt-m@wh-2: on hand 3, delta -5',
                lines: [{ itemId: 'sku-tshirt-m', location: 'wh-2', requested: 5, available: 3 }],
              },
            },
            unavailable: 'Redis or PostgreSQL is unreachable, or Redis state is being rebuilt: read the availability, then retry.',
          }),
        },
      },
    },
    async (request, reply) => {
      const { delta, location, reason } = request.body;
      reply.code(200);
      return stock.adjust(request.params.itemId, location ?? DEFAULT_LOCATION, delta, reason ?? null);
    },
  );
};
