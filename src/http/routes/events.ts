import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { unavailable } from '../../domain/errors.js';
import { DEFAULT_EVENTS_LIMIT, EventPage, EventsQuery, type EventPage as Page } from '../../domain/schemas.js';
import { asyncApiDocument } from '../../events/asyncapi.js';
import { toCloudEvent } from '../../events/envelope.js';
import { eventsAfter } from '../../store/events.js';
import type { Reads } from '../../store/read-replica.js';
import { documented, problems } from '../openapi.js';

const created: Page['items'][number] = {
  specversion: '1.0',
  id: '0193a5c4-1f0e-4c1a-9d0e-2f4b6a8c0d12',
  source: '/inventory-reservation-service',
  type: 'inventory.reservation.created',
  subject: '01a217ba-1200-7c1e-9a4f-5d2b8e3c6a10',
  time: '2026-11-26T12:00:00.000Z',
  datacontenttype: 'application/json',
  sequence: '1',
  data: {
    id: '01a217ba-1200-7c1e-9a4f-5d2b8e3c6a10',
    status: 'pending',
    reference: 'order-123',
    lines: [{ itemId: 'sneaker-drop-42', location: 'default', quantity: 1 }],
    expiresAt: '2026-11-26T12:15:00.000Z',
    createdAt: '2026-11-26T12:00:00.000Z',
    updatedAt: '2026-11-26T12:00:00.000Z',
    metadata: {},
    priority: 'normal',
    allocation: null,
    version: 1,
  },
};

const depleted: Page['items'][number] = {
  specversion: '1.0',
  id: '0193a5c4-1f0e-4c1a-9d0e-2f4b6a8c0d13',
  source: '/inventory-reservation-service',
  type: 'inventory.availability.depleted',
  subject: 'sneaker-drop-42',
  time: '2026-11-26T12:00:00.004Z',
  datacontenttype: 'application/json',
  sequence: '7',
  data: { itemId: 'sneaker-drop-42', location: 'default', onHand: 50, reserved: 50, safetyStock: 0, available: 0, availableHighPriority: 0 },
};

/**
 * The pull feed of committed events (api.md, "Events"), for consumers without a broker, and the AsyncAPI document
 * of every event type. The feed reads sealed events only, by position (src/store/events.ts), so a consumer that
 * polls with the last `nextCursor` it got reads every event once, in order.
 */
export const eventRoutes: FastifyPluginAsyncTypebox<{ reads: Reads; source: string; kafkaTopic: string }> = async (app, { reads, source, kafkaTopic }) => {
  app.get(
    '/events',
    {
      config: { access: 'operator' },
      // A query string is text: a limit written as a decimal integer is read as the number it spells (as GET /reservations).
      preValidation: async (request) => {
        const query = request.query as Record<string, unknown>;
        if (typeof query.limit === 'string' && /^-?[0-9]+$/.test(query.limit)) query.limit = Number(query.limit);
      },
      schema: {
        operationId: 'listEvents',
        tags: ['operations'],
        summary: 'Read the committed events in order, a page at a time (the pull feed)',
        description:
          'Every event the service appended, as CloudEvents 1.0 envelopes (their types and data: `GET /asyncapi.json`), ' +
          'in one order that keeps each subject\'s `sequence` order. Pass `nextCursor` back as `after` for the next ' +
          'page; an empty page answers the `after` it was sent: poll again with it later. At least once: after a ' +
          'consumer\'s crash it may read an event again (deduplicate by `id`). An event shows here about ' +
          '`EVENTS_SEAL_INTERVAL_MS` after its change committed (plus up to `DATABASE_REPLICA_MAX_LAG_MS` when a read ' +
          'replica serves the feed), and stays until pruned (`EVENTS_RETENTION_HOURS`).',
        querystring: EventsQuery,
        response: {
          200: documented('A page of events', EventPage, {
            page: { summary: 'A reservation that took the last pair: its creation, and the item sold out', value: { items: [created, depleted], nextCursor: '4712' } },
            caughtUp: { summary: 'Nothing after the cursor yet', value: { items: [], nextCursor: '4712' } },
          }),
          ...problems({
            validation_failed: {
              means: `\`after\` not a cursor this feed answered, \`limit\` not an integer from 1 to 1000, or an unknown parameter; \`errors\` names each.`,
              example: { detail: 'limit: must be at most 1000', errors: [{ field: 'limit', message: 'must be at most 1000' }] },
            },
            unavailable: 'PostgreSQL is unreachable: retry.',
          }),
        },
      },
    },
    async (request) => {
      const after = request.query.after ?? '0';
      const limit = request.query.limit ?? DEFAULT_EVENTS_LIMIT;
      let rows;
      try {
        rows = await reads.run('events', (db) => eventsAfter(db, after, limit));
      } catch (err) {
        throw unavailable('PostgreSQL is unreachable', err);
      }
      const last = rows.at(-1);
      return { items: rows.map((row) => toCloudEvent(row, source)), nextCursor: last ? String(last.position) : after };
    },
  );

  const document = asyncApiDocument({ source, kafkaTopic });
  app.get(
    '/asyncapi.json',
    {
      schema: {
        operationId: 'getAsyncApiDocument',
        tags: ['operations'],
        summary: 'The events the service sends, and their schemas (AsyncAPI 3.0)',
        description:
          'Every event type with its `data` schema, and where each transport sends it (NATS subjects, the Kafka topic, ' +
          'webhook POSTs), generated from the schemas the service uses.',
        response: {
          200: documented('The AsyncAPI document', Type.Object({}, { additionalProperties: true })),
        },
      },
    },
    async () => document,
  );
};
