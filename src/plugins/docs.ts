import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import fp from 'fastify-plugin';

/** The OpenAPI document, generated from the routes' schemas, at `/openapi.json`, and the interactive docs at `/docs`. */
export const docsPlugin = fp(
  async (app) => {
    await app.register(swagger, {
      openapi: {
        openapi: '3.1.0',
        info: {
          title: 'Inventory Reservation Service',
          version: '0.1.0',
          description:
            'Atomic, time-bound inventory holds. Errors are RFC 9457 problem+json with a stable `code`. ' +
            'POST /reservations needs an Idempotency-Key header.',
        },
        tags: [{ name: 'reservations' }, { name: 'stock' }, { name: 'operations' }],
        // Required only when API_KEYS is configured.
        components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      },
    });
    await app.register(swaggerUi, { routePrefix: '/docs' });
    app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  },
  { name: 'docs', fastify: '5.x', dependencies: ['http'] },
);
