import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  IdempotencyHeaders,
  Problem,
  ReservationDocument,
  ReservationParams,
  ReservationRequest,
} from '../../domain/schemas.js';
import type { ReservationApi } from '../../service/api.js';
import { callerOf } from '../access.js';

export const reservationRoutes: FastifyPluginAsyncTypebox<{ reservations: ReservationApi }> = async (
  app,
  { reservations },
) => {
  app.post(
    '/reservations',
    {
      config: { access: 'client' },
      schema: {
        tags: ['reservations'],
        summary: 'Hold every line for ttlSeconds, or nothing',
        headers: IdempotencyHeaders,
        body: ReservationRequest,
        response: { 201: ReservationDocument, 400: Problem, 404: Problem, 409: Problem, 422: Problem, 503: Problem },
      },
    },
    async (request, reply) => {
      const answer = await reservations.reserve(callerOf(request), request.headers['idempotency-key'], request.body);
      reply.code(answer.statusCode as 201).header('location', `/reservations/${answer.body.id}`);
      if (answer.replayed) reply.header('idempotent-replayed', 'true');
      return answer.body;
    },
  );

  const byId = { params: ReservationParams };
  const errors = { 404: Problem, 409: Problem, 503: Problem };

  app.get(
    '/reservations/:id',
    { config: { access: 'client' }, schema: { tags: ['reservations'], summary: 'Read a reservation', ...byId, response: { 200: ReservationDocument, ...errors } } },
    (request) => reservations.get(callerOf(request), request.params.id),
  );

  app.post(
    '/reservations/:id/confirm',
    {
      config: { access: 'client' },
      schema: {
        tags: ['reservations'],
        summary: 'Sell the held units (idempotent)',
        ...byId,
        response: { 200: ReservationDocument, ...errors },
      },
    },
    (request) => reservations.confirm(callerOf(request), request.params.id),
  );

  app.post(
    '/reservations/:id/release',
    {
      config: { access: 'client' },
      schema: {
        tags: ['reservations'],
        summary: 'Give the held units back (idempotent)',
        ...byId,
        response: { 200: ReservationDocument, ...errors },
      },
    },
    (request) => reservations.release(callerOf(request), request.params.id),
  );
};
