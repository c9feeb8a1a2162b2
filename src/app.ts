import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import { addressOf, redisAddress, type Config } from './config.js';
import { adminRoutes } from './http/routes/admin.js';
import { eventRoutes } from './http/routes/events.js';
import { itemRoutes } from './http/routes/items.js';
import { operationRoutes } from './http/routes/operations.js';
import { reservationRoutes } from './http/routes/reservations.js';
import { newNodeId, type NodeLease } from './jobs/node-lease.js';
import type { EventSealer } from './jobs/event-sealer.js';
import type { Recovery } from './jobs/recovery.js';
import type { Reconciler, ReconcileDeps } from './jobs/reconcile.js';
import type { Sweeper } from './jobs/sweeper.js';
import type { Metrics } from './metrics.js';
import { docsPlugin } from './plugins/docs.js';
import { httpOptions, httpPlugin } from './plugins/http.js';
import { jobsPlugin } from './plugins/jobs.js';
import { leasePlugin } from './plugins/lease.js';
import { metricsPlugin } from './plugins/metrics.js';
import { postgresPlugin } from './plugins/postgres.js';
import { readReplicaPlugin } from './plugins/read-replica.js';
import { redisPlugin } from './plugins/redis.js';
import { statePlugin } from './plugins/state.js';
import { writerPlugin } from './plugins/writer.js';
import type { Decisions } from './redis/decisions.js';
import type { Keys } from './redis/keys.js';
import type { ReservationApi, StockApi } from './service/api.js';
import { ReservationService } from './service/reservations.js';
import { StockService } from './service/stock.js';
import type { Reads } from './store/read-replica.js';
import type { BatchWriter } from './store/writer.js';

/** The parts of a running node, exposed for tests and the operator tools. */
export interface Runtime {
  config: Config;
  /**
   * The Redis handle. Typed as a single Redis for the tools that scan its keyspace (tests, bench/); on a cluster
   * (REDIS_CLUSTER_NODES) it is the Cluster client, which takes the same commands but scans one node only (see
   * src/redis/client.ts, scanTargets). The service's own modules take it as a RedisClient.
   */
  redis: Redis;
  db: pg.Pool;
  /** The reads a replica may serve (DATABASE_REPLICA_URL), else the primary's. */
  reads: Reads;
  keys: Keys;
  metrics: Metrics;
  decisions: Decisions;
  writer: BatchWriter;
  /** This process's node id and lease (src/jobs/node-lease.ts). */
  lease: NodeLease;
  recovery: Recovery;
  sweeper: Sweeper;
  eventSealer: EventSealer;
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
  /**
   * false: the writer appends no events (the benchmark's `durable-no-outbox` design, which exists only to measure
   * what the outbox costs). Deliberately not in the configuration: the outbox is a guarantee, not an option.
   */
  appendEvents?: boolean;
}

/**
 * Builds the app from plugins (src/plugins/): clients, Redis state, writer, jobs, the HTTP layer, docs, then the
 * routes. Each plugin closes what it opened; Fastify runs onClose hooks in reverse order of registration, so the
 * jobs stop first, then the writer drains, then the clients close. Never listens (server.ts does; tests inject).
 * Migrations run before.
 */
export async function buildApp(config: Config, options: BuildOptions = {}): Promise<FastifyInstance> {
  const app = Fastify(httpOptions(config)).withTypeProvider<TypeBoxTypeProvider>();
  // Known before the clients exist: the node's PostgreSQL sessions carry it (src/store/nodes.ts).
  const nodeId = newNodeId();
  await app.register(metricsPlugin);
  await app.register(redisPlugin, { config });
  await app.register(postgresPlugin, { config, nodeId });
  await app.register(readReplicaPlugin, { config, nodeId });
  await app.register(statePlugin, { config });
  await app.register(leasePlugin, { nodeId });
  await app.register(writerPlugin, { config, nodeId, appendEvents: options.appendEvents });
  await app.register(jobsPlugin, { config });
  const { redis, db, reads, keys, metrics, decisions, writer, lease, recovery, sweeper, eventSealer, reconcileDeps, reconciler } = app;
  const runtime: Runtime = { config, redis: redis as Redis, db, reads, keys, metrics, decisions, writer, lease, recovery, sweeper, eventSealer, reconcileDeps, reconciler };
  app.decorate('runtime', runtime);

  await app.register(httpPlugin, { config });
  await app.register(docsPlugin);

  const { reservations, stock } = options.services?.(runtime) ?? defaultServices(runtime, app.log);
  const addresses = { redis: redisAddress(config), postgres: addressOf(config.DATABASE_URL) };
  await app.register(itemRoutes, { stock });
  await app.register(reservationRoutes, { reservations });
  await app.register(operationRoutes, { redis, db, recovery, metrics, addresses });
  await app.register(adminRoutes, { reconcileDeps, orphanAfterMs: config.ORPHAN_HOLD_AFTER_MS });
  await app.register(eventRoutes, { reads, source: config.EVENTS_SOURCE, kafkaTopic: config.EVENTS_KAFKA_TOPIC });
  return app;
}

/** The service's own reservation and stock logic over a node's runtime (tests call it to reach them directly). */
export function defaultServices(r: Runtime, log: FastifyBaseLogger): { reservations: ReservationApi; stock: StockApi } {
  const { db, reads, keys, decisions, writer, metrics, config, lease } = r;
  return {
    reservations: new ReservationService({
      db,
      reads,
      keys,
      decisions,
      writer,
      metrics,
      log,
      idempotencyRetentionMs: config.IDEMPOTENCY_RETENTION_HOURS * 3_600_000,
      lease,
      sessionEndWaitMs: Math.floor(config.DATABASE_QUERY_TIMEOUT_MS / 2),
    }),
    stock: new StockService({ decisions, writer, metrics, log, nodeId: lease.nodeId }),
  };
}
