import { LogController, type FastifyHttpOptions } from 'fastify';
import fp from 'fastify-plugin';
import { randomUUID } from 'node:crypto';
import { maxHeaderSize, type Server } from 'node:http';
import { parse as parseJson } from 'secure-json-parse';
import type { Config } from '../config.js';
import { MAX_BODY_BYTES } from '../domain/schemas.js';
import { registerAccess } from '../http/access.js';
import { answerClientError, registerFraming } from '../http/framing.js';
import { ProblemDocument } from '../http/openapi.js';
import { registerErrorHandling, registerNotFound, sendProblem } from '../http/problem.js';
import { childOnFirstLog, logOptions } from '../log.js';

/** How long a client may take to send one whole request, head and body. */
export const REQUEST_TIMEOUT_MS = 30_000;

/** What the HTTP layer needs at construction (Fastify takes these only then); the rest is `httpPlugin`. */
export function httpOptions(config: Config): FastifyHttpOptions<Server> {
  return {
    logger: logOptions(config.LOG_LEVEL),
    // No access log on the hot path; failures are logged by the error handler and the onResponse hook.
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: childOnFirstLog,
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
    bodyLimit: MAX_BODY_BYTES,
    // A request must arrive whole within this (Fastify's default, 0, lets a client trickle a body in forever and hold
    // its connection); past it the client gets 408 request_timeout (src/http/framing.ts).
    requestTimeout: REQUEST_TIMEOUT_MS,
    // While closing, requests still arriving get our problem+json 503 (see the onRequest hook in httpPlugin).
    return503OnClosing: false,
    // Ids longer than any valid one must still reach the routes, to be answered 400 or 404 as problems: no path
    // segment is longer than the request head Node accepts.
    routerOptions: { maxParamLength: maxHeaderSize },
    frameworkErrors: (error, request, reply) => {
      // A URL that cannot be decoded names nothing.
      const reservation = /^\/reservations\/[^/]+(\/(confirm|release))?$/.test(request.url.split('?')[0] ?? '');
      if (reservation) return sendProblem(reply, 'reservation_not_found', 'no reservation has that id');
      const message = error.code === 'FST_ERR_BAD_URL' ? 'has a malformed percent-escape' : 'is malformed';
      return sendProblem(reply, 'validation_failed', `url: ${message}`, { errors: [{ field: 'url', message }] });
    },
    // Bytes Node's parser refuses, as problem+json (src/http/framing.ts), which also answers a missing Host.
    clientErrorHandler: answerClientError,
    http: { requireHostHeader: false },
    ajv: {
      customOptions: {
        allErrors: true,
        coerceTypes: false,
        removeAdditional: false,
        useDefaults: false,
        // Patterns match code points, so a pattern can tell an unpaired surrogate from a pair (domain/schemas.ts).
        unicodeRegExp: true,
        // Errors carry their schema, so messages are written from the limits (http/problem.ts).
        verbose: true,
      },
    },
  };
}

/**
 * Everything between the socket and the routes: the JSON body parser, problem+json for every error (framing,
 * unknown routes, validation, handlers), authentication and rate limits, the request id, the 503 while closing,
 * and the latency metric. Registered before the routes, whose requests its hooks see.
 */
export const httpPlugin = fp<{ config: Config }>(
  async (app, { config }) => {
    const { metrics, redis, keys } = app;

    // Bodies are JSON only: any other media type is 415. JSON goes through secure-json-parse; an empty body is
    // "no body" (confirm/release need none).
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
      if (body === '') return done(null, undefined);
      try {
        done(null, parseJson(body as string, { protoAction: 'error', constructorAction: 'error' }));
      } catch {
        done(Object.assign(new Error('malformed JSON'), { statusCode: 400, code: 'FST_ERR_CTP_INVALID_JSON_BODY' }), undefined);
      }
    });

    // The problem+json shape every route's error responses refer to (`Problem#`).
    app.addSchema(ProblemDocument);
    registerErrorHandling(app);
    registerNotFound(app);
    registerFraming(app);
    let closing = false;
    app.addHook('preClose', async () => {
      closing = true;
    });
    // The per-request hooks take a callback rather than being async: none of them waits for anything, and an async
    // hook costs every request a promise and a turn of the microtask queue. A hook that answers does not call `done`.
    // The framing hook is the exception, async for a reason of its own (src/http/framing.ts).
    app.addHook('onRequest', (_request, reply, done) => {
      if (closing) sendProblem(reply, 'unavailable', 'this node is shutting down; retry');
      else done();
    });
    await registerAccess(app, {
      apiKeys: config.API_KEYS,
      rateLimitMax: config.RATE_LIMIT_MAX,
      rateLimitWindowMs: config.RATE_LIMIT_WINDOW_MS,
      redis,
      keys,
    });
    app.addHook('onSend', (request, reply, payload, done) => {
      reply.header('x-request-id', request.id);
      // Answers sent while closing end their keep-alive connection, so the server can finish closing.
      if (closing) reply.header('connection', 'close');
      done(null, payload);
    });
    app.addHook('onResponse', (request, reply, done) => {
      metrics.httpDuration.observe(
        { method: request.method, route: request.routeOptions.url ?? 'unmatched', status_code: reply.statusCode },
        reply.elapsedTime / 1000,
      );
      // A refusal that says when to retry (a shed write) is expected under overload and counted: a log line each
      // would turn an overload into a flood of them.
      if (reply.statusCode >= 500 && !reply.hasHeader('retry-after')) {
        request.log.warn({ url: request.url, statusCode: reply.statusCode }, 'request failed');
      }
      done();
    });
  },
  { name: 'http', fastify: '5.x', dependencies: ['metrics', 'redis', 'state'] },
);
