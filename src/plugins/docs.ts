import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifySchema } from 'fastify';
import fp from 'fastify-plugin';
import type { Access } from '../http/access.js';
import { errorCatalogue } from '../domain/errors.js';
import { codeTable, problems, transportCodes, transportResponse, type Examples } from '../http/openapi.js';

declare module 'fastify' {
  interface FastifySchema {
    /** Named examples of the request body, shown in /docs (Ajv never sees them: only the document carries them). */
    bodyExamples?: Examples<unknown>;
    /** The body may be left out (the route reads none as `{}`): the document says `requestBody.required: false`. */
    bodyOptional?: boolean;
  }
}

const ACCESS: Record<Access, string> = {
  public: '**Access:** open, also when API keys are configured.',
  client: '**Access:** a `client` or `operator` key (`Authorization: Bearer <key>`) when API keys are configured.',
  operator: '**Access:** an `operator` key (`Authorization: Bearer <key>`) when API keys are configured.',
};

/** The answers an operation's access rule adds: who may call it decides 401, 403 and 429 (src/http/access.ts). */
const accessProblems = (access: Access) =>
  access === 'public'
    ? {}
    : problems({
        unauthorized: 'No `Authorization: Bearer <key>`, or a key the service does not know.',
        ...(access === 'operator' ? { forbidden: 'A `client` key: this operation needs an `operator` key.' } : {}),
        rate_limited: 'Over the rate limit an operator configured (`RATE_LIMIT_MAX`) for this key.',
      });

/**
 * The OpenAPI document, generated from the routes' schemas at `/openapi.json`, and the interactive docs at
 * `/docs`. The routes give each operation's id, summary, responses, codes and examples; this adds what follows
 * from each route's access rule (security, 401/403/429) and from the HTTP layer (`4XX`), so neither is written twice.
 */
export const docsPlugin = fp(
  async (app) => {
    // Operations whose body may be left out: @fastify/swagger marks every body required, so the document is mended.
    const optionalBodies = new Set<string>();
    await app.register(swagger, {
      openapi: {
        openapi: '3.1.0',
        info: {
          title: 'Inventory Reservation Service',
          version: '0.1.0',
          license: { name: 'MIT', identifier: 'MIT' },
          description: apiDescription(),
        },
        servers: [{ url: '/', description: 'The node serving this document' }],
        tags: [
          {
            name: 'reservations',
            description: 'Hold units for a cart or checkout, then confirm (sell) or release them; find and release them by reference.',
          },
          { name: 'stock', description: 'Availability per item and location; operators set and adjust on-hand stock.' },
          { name: 'operations', description: 'Health, metrics, reconciliation of Redis with PostgreSQL, and this document.' },
        ],
        components: {
          securitySchemes: {
            bearer: {
              type: 'http',
              scheme: 'bearer',
              description:
                'An API key from the service\'s `API_KEYS`, as `Authorization: Bearer <key>`. Only when keys are configured; ' +
                'without them every operation is open.',
            },
          },
        },
        security: [{ bearer: [] }],
      },
      // Shared schemas keep their `$id` as their name (`#/components/schemas/Problem`), not `def-0`.
      refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
      transform: ({ schema, url, route }) => {
        if (!schema || schema.hide) return { schema, url };
        const access = route.config?.access ?? 'public';
        const method = Array.isArray(route.method) ? String(route.method[0]) : String(route.method);
        const { bodyExamples, bodyOptional, ...rest } = schema;
        if (bodyOptional && typeof rest.operationId === 'string') optionalBodies.add(rest.operationId);
        const documented: FastifySchema = {
          ...rest,
          ...(bodyExamples ? { body: { ...(rest.body as object), 'x-examples': bodyExamples } } : {}),
          ...(access === 'public' ? { security: [] } : {}),
          description: [rest.description, ACCESS[access]].filter(Boolean).join('\n\n'),
          response: { ...(rest.response as object), ...accessProblems(access), '4XX': transportResponse(method) },
        };
        return { schema: documented, url };
      },
      transformObject: (document) => {
        if (!('openapiObject' in document)) return document.swaggerObject;
        const { openapiObject } = document;
        for (const path of Object.values(openapiObject.paths ?? {})) {
          for (const operation of Object.values(path as Record<string, { operationId?: string; requestBody?: { required?: boolean } }>)) {
            if (operation.requestBody && optionalBodies.has(operation.operationId ?? '')) operation.requestBody.required = false;
          }
        }
        return openapiObject;
      },
    });
    await app.register(swaggerUi, { routePrefix: '/docs' });
    app.get(
      '/openapi.json',
      {
        schema: {
          operationId: 'getOpenApiDocument',
          tags: ['operations'],
          summary: 'This document (OpenAPI 3.1)',
          response: {
            200: {
              description: 'The OpenAPI document, generated from the schemas that validate requests',
              content: { 'application/json': { schema: { type: 'object', additionalProperties: true } } },
            },
          },
        },
      },
      async () => app.swagger(),
    );
  },
  { name: 'docs', fastify: '5.x', dependencies: ['http'] },
);

function apiDescription(): string {
  const transport = transportCodes.map((code) => `\`${errorCatalogue[code].status} ${code}\``).join(', ');
  return `Atomic, time-bound inventory holds for shops and marketplaces: reserve every line of a cart for a TTL, or
nothing; confirm (sell) or release it; a forgotten one expires by itself at its \`expiresAt\`. No unit is ever sold
twice, and every acknowledged change is committed in PostgreSQL before the answer.

JSON in, JSON out, UTF-8. Times are ISO-8601 UTC with milliseconds (\`2026-11-26T12:00:00.000Z\`); quantities are
integers. Every answer carries \`X-Request-Id\` (the request's own, or a new one), also in the service's logs.

## Authentication

Off unless the operator configures API keys (\`API_KEYS\`). Then every operation except health, metrics and this
document needs \`Authorization: Bearer <key>\`: a \`client\` key may reserve, confirm, release and read (its own
tenant's reservations only; another tenant's answer 404 as if they did not exist); an \`operator\` key may also set
and adjust stock and run reconciliation. Each operation says which key it needs.

## Idempotency

\`POST /reservations\` needs an \`Idempotency-Key\` header: the same key with the same body answers the first success
again (\`Idempotent-Replayed: true\`), also after Redis lost its state; with another body it is \`422\`. A request that
failed binds nothing. Confirm and release are idempotent by nature: repeating one answers the same document; so is
a release by reference (a saga's compensation step): repeating it releases nothing more and answers the same states.

## Errors

Every error is an RFC 9457 \`application/problem+json\` document with a stable \`code\`; switch on \`code\`, not on
\`detail\`. A request that fails changes nothing. Each operation lists the codes it can answer, with examples; these
are all of them:

${codeTable()}

Before any operation runs, the HTTP layer may refuse a request with ${transport} (each operation's \`4XX\`
response): bytes that are not HTTP/1.1, a head that does not arrive in time, a body that is not JSON, an \`Expect\`
other than \`100-continue\`, or more than 16 KiB of request line and headers; \`malformed_request\`,
\`request_timeout\`, \`expectation_failed\` and \`request_header_too_large\` close the connection. An unknown path is
\`404 not_found\`, a known path with another method \`405 method_not_allowed\` (with \`Allow\`), and any operation
may answer \`500 internal\`, or \`503 unavailable\` while its node shuts down. An answer never repeats more than the
first 128 characters of a URL or key it was sent.

The interactive docs are at [/docs](/docs).`;
}
