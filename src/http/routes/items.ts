import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  AvailabilityDocument,
  DEFAULT_LOCATION,
  ItemParams,
  Problem,
  StockAdjustRequest,
  StockSetRequest,
} from '../../domain/schemas.js';
import type { StockApi } from '../../service/api.js';

export const itemRoutes: FastifyPluginAsyncTypebox<{ stock: StockApi }> = async (app, { stock }) => {
  const errors = { 400: Problem, 404: Problem, 409: Problem, 503: Problem };

  app.get(
    '/items/:itemId/availability',
    {
      config: { access: 'client' },
      schema: {
        tags: ['stock'],
        summary: 'Availability of an item, per location and in total',
        params: ItemParams,
        response: { 200: AvailabilityDocument, ...errors },
      },
    },
    (request) => stock.availability(request.params.itemId),
  );

  app.put(
    '/items/:itemId/stock',
    {
      config: { access: 'operator' },
      schema: {
        tags: ['stock'],
        summary: 'Set the on-hand quantity of a location (absolute; creates the item/location if new)',
        params: ItemParams,
        body: StockSetRequest,
        response: { 200: AvailabilityDocument, ...errors },
      },
    },
    (request) => stock.set(request.params.itemId, request.body.location ?? DEFAULT_LOCATION, request.body.quantity),
  );

  app.post(
    '/items/:itemId/stock/adjustments',
    {
      config: { access: 'operator' },
      schema: {
        tags: ['stock'],
        summary: 'Change the on-hand quantity of a stocked location by a delta',
        params: ItemParams,
        body: StockAdjustRequest,
        response: { 200: AvailabilityDocument, ...errors },
      },
    },
    async (request, reply) => {
      const { delta, location, reason } = request.body;
      reply.code(200);
      return stock.adjust(request.params.itemId, location ?? DEFAULT_LOCATION, delta, reason ?? null);
    },
  );
};
