import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Redis } from 'ioredis';
import type pg from 'pg';
import { parse as parseJson } from 'secure-json-parse';
import { randomUUID } from 'node:crypto';
import { maxHeaderSize } from 'node:http';
import { addressOf, type Config } from './config.js';
import { MAX_BODY_BYTES } from './domain/schemas.js';
import { registerAccess } from './http/access.js';
import { answerClientError, registerFraming } from './http/framing.js';
import { registerErrorHandling, registerNotFound, sendProblem } from './http/problem.js';
import { adminRoutes } from './http/routes/admin.js';
import { itemRoutes } from './http/routes/items.js';
import { operationRoutes } from './http/routes/operations.js';
import { reservationRoutes } from './http/routes/reservations.js';
import { NodeLease } from './jobs/node-lease.js';
import { Recovery } from './jobs/recovery.js';
import { judgeIntentsAfterMs, Reconciler, type ReconcileDeps } from './jobs/reconcile.js';
import { Sweeper } from './jobs/sweeper.js';
import { logOptions } from './log.js';
import { createMetrics, type Metrics } from './metrics.js';
import { Decisions } from './redis/decisions.js';
import { Keys } from './redis/keys.js';
import type { ReservationApi, StockApi } from './service/api.js';
import { ReservationService } from './service/reservations.js';
import { StockService } from './service/stock.js';
import { createPool } from './store/database.js';
import { autovacuumSetting } from './store/health.js';
import { BatchWriter } from './store/writer.js';

/** The parts of a running node, exposed for tests and the operator tools. */
export interface Runtime {
  config: Config;
  redis: Redis;
  db: pg.Pool;
  keys: Keys;
  metrics: Metrics;
  decisions: Decisions;
  writer: BatchWriter;
  /** This process's node id and lease (src/jobs/node-lease.ts). */
  lease: NodeLease;
  recovery: Recovery;
  sweeper: Sweeper;
  reconcileDeps: ReconcileDeps;
  reconciler: Reconciler;
}

declare module 'fastify' {
  interface FastifyInstance {
    runtime: Runtime;
  }
}

export interface BuildOptions {
  /** Replaces the reservation and stock logic behind the same HTTP layer (the benchmark's baseline designs). */
  services?: (runtime: Runtime) => { reservations: ReservationApi; stock: StockApi };
}

/** Builds the app: clients, jobs, routes. Never listens (server.ts does; tests inject). Migrations run before. */
export async function buildApp(config: Config, options: BuildOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: logOptions(config.LOG_LEVEL),
    // No access log on the hot path; failures are logged by the error handler and the onResponse hook.
    logController: new LogController({ disableRequestLogging: true }),
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
    bodyLimit: MAX_BODY_BYTES,
    // While closing, requests still arriving get our problem+json 503 (see the onRequest hook below).
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
  }).withTypeProvider<TypeBoxTypeProvider>();
  const log = app.log;

  const metrics = createMetrics();
  const redis = new Redis(config.REDIS_URL, {
    // Fail fast while Redis is away (the request answers 503) instead of queueing commands.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: config.REDIS_COMMAND_TIMEOUT_MS,
    retryStrategy: (times) => Math.min(times * 50, 1000),
    lazyConnect: true,
    // Commands issued in the same tick (concurrent requests' scripts) go out in one write.
    enableAutoPipelining: true,
  });
  // ioredis' own errors ("Connection is closed.") do not say where; every Redis log line names the address.
  const addresses = { redis: addressOf(config.REDIS_URL), postgres: addressOf(config.DATABASE_URL) };
  redis.on('error', (err) => log.debug({ err, redis: addresses.redis }, `Redis connection error (${addresses.redis})`));
  await redis
    .connect()
    .catch((err: unknown) =>
      log.warn({ err, redis: addresses.redis }, `Redis at ${addresses.redis} is unreachable at start; will keep trying`),
    );

  const db = createPool(config.DATABASE_URL, { max: config.DATABASE_POOL_SIZE, queryTimeoutMs: config.DATABASE_QUERY_TIMEOUT_MS });
  const keys = new Keys(config.REDIS_KEY_PREFIX);
  const lease = new NodeLease(redis, keys);
  let recovery: Recovery | undefined;
  const decisions = new Decisions(redis, keys, metrics, config.TOMBSTONE_RETENTION_SECONDS * 1000, () => void recovery?.ensure());
  recovery = new Recovery(
    { redis, db, keys, decisions, metrics, log: log.child({ redis: addresses.redis }) },
    { idempotencyRetentionHours: config.IDEMPOTENCY_RETENTION_HOURS },
  );
  const writer = new BatchWriter(db, metrics, {
    maxBatch: config.WRITER_MAX_BATCH,
    concurrency: config.WRITER_CONCURRENCY,
    fateWaitMs: config.WRITER_FATE_WAIT_MS,
  });
  const sweeper = new Sweeper(
    { db, decisions, writer, metrics, log },
    {
      intervalMs: config.SWEEPER_INTERVAL_MS,
      unrecordedGraceMs: config.UNRECORDED_GRACE_MS,
      idempotencyRetentionHours: config.IDEMPOTENCY_RETENTION_HOURS,
    },
  );
  const reconcileDeps: ReconcileDeps = {
    redis,
    db,
    keys,
    decisions,
    recovery,
    metrics,
    log,
    lease,
    judgeIntentsAfterMs: judgeIntentsAfterMs(config.DATABASE_QUERY_TIMEOUT_MS),
  };
  const reconciler = new Reconciler(reconcileDeps, {
    intervalMs: config.RECONCILE_INTERVAL_MS,
    orphanAfterMs: config.ORPHAN_HOLD_AFTER_MS,
  });
  const runtime: Runtime = { config, redis, db, keys, metrics, decisions, writer, lease, recovery, sweeper, reconcileDeps, reconciler };
  app.decorate('runtime', runtime);
  const { reservations, stock } = options.services?.(runtime) ?? defaultServices(runtime, log);

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

  registerErrorHandling(app);
  registerNotFound(app);
  registerFraming(app);
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async (_request, reply) => {
    if (closing) return sendProblem(reply, 'unavailable', 'this node is shutting down; retry');
  });
  await registerAccess(app, {
    apiKeys: config.API_KEYS,
    rateLimitMax: config.RATE_LIMIT_MAX,
    rateLimitWindowMs: config.RATE_LIMIT_WINDOW_MS,
    redis,
    keys,
  });
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
    // Answers sent while closing end their keep-alive connection, so the server can finish closing.
    if (closing) reply.header('connection', 'close');
  });
  app.addHook('onResponse', async (request, reply) => {
    metrics.httpDuration.observe(
      { method: request.method, route: request.routeOptions.url ?? 'unmatched', status_code: reply.statusCode },
      reply.elapsedTime / 1000,
    );
    if (reply.statusCode >= 500) request.log.warn({ url: request.url, statusCode: reply.statusCode }, 'request failed');
  });

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

  await app.register(itemRoutes, { stock });
  await app.register(reservationRoutes, { reservations });
  await app.register(operationRoutes, { redis, db, recovery, metrics, addresses });
  await app.register(adminRoutes, { runtime });

  app.addHook('onReady', async () => {
    lease.start();
    // Start serving with Redis state in place when Redis is up; otherwise start not-ready and recover later.
    if (!(await recovery.check()) && recovery.phase !== 'redis_unreachable') {
      await Promise.race([recovery.ensure(), new Promise((r) => setTimeout(r, 30_000).unref())]);
    }
    await warnIfRedisEvicts(redis, log);
    await warnIfAutovacuumOff(db, log);
    sweeper.start();
    reconciler.start();
  });
  app.addHook('onClose', async () => {
    await Promise.all([sweeper.stop(), reconciler.stop()]);
    await writer.close();
    // After the last commit: until then this node's claims are in flight.
    await lease.stop();
    await Promise.allSettled([db.end(), redis.quit()]);
  });
  return app;
}

function defaultServices(r: Runtime, log: FastifyBaseLogger): { reservations: ReservationApi; stock: StockApi } {
  const { db, keys, decisions, writer, metrics, config, lease } = r;
  return {
    reservations: new ReservationService({
      db,
      keys,
      decisions,
      writer,
      metrics,
      log,
      idempotencyRetentionMs: config.IDEMPOTENCY_RETENTION_HOURS * 3_600_000,
    }),
    stock: new StockService({ decisions, writer, metrics, log, nodeId: lease.nodeId }),
  };
}

/**
 * Every confirm and release leaves a dead reservation row: without autovacuum the tables and the index of pending
 * reservations keep growing, and the sweeper walks ever more dead entries.
 */
async function warnIfAutovacuumOff(db: pg.Pool, log: FastifyBaseLogger): Promise<void> {
  try {
    if ((await autovacuumSetting(db)) === 'off') log.warn('PostgreSQL runs with autovacuum off: turn it on, or VACUUM ANALYZE on a schedule');
  } catch {
    // PostgreSQL unreachable at start: readiness reports it.
  }
}

/** Evicting keys would silently drop holds and idempotency records: Redis must run with `noeviction`. */
async function warnIfRedisEvicts(redis: Redis, log: FastifyBaseLogger): Promise<void> {
  try {
    const [, policy] = (await redis.config('GET', 'maxmemory-policy')) as [string, string];
    if (policy !== 'noeviction') log.warn({ policy }, 'Redis maxmemory-policy should be noeviction: evicted keys lose holds');
  } catch {
    // CONFIG is disabled on some managed Redis services; nothing to check then.
  }
}
