import fp from 'fastify-plugin';
import type { Config } from '../config.js';
import { EventSealer } from '../jobs/event-sealer.js';
import { EventDelivery } from '../events/delivery.js';
import { parseTransports } from '../events/settings.js';
import { judgeIntentsAfterMs, Reconciler, type ReconcileDeps } from '../jobs/reconcile.js';
import { Sweeper } from '../jobs/sweeper.js';

declare module 'fastify' {
  interface FastifyInstance {
    sweeper: Sweeper;
    reconciler: Reconciler;
    eventSealer: EventSealer;
    /** What reconciliation reads and repairs through: the periodic job, the admin routes and `npm run reconcile`. */
    reconcileDeps: ReconcileDeps;
    /** The event relays (one per configured transport) and the pruning of delivered events. */
    eventDelivery: EventDelivery;
  }
}

/** The background jobs (safe on every node at once): started once the node is ready, stopped first on close. */
export const jobsPlugin = fp<{ config: Config }>(
  async (app, { config }) => {
    const { redis, db, keys, decisions, recovery, writer, lease, metrics, log } = app;
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
      dutyPercent: config.RECONCILE_DUTY_PERCENT,
      nodeId: lease.nodeId,
    });
    const eventSealer = new EventSealer({ db, log }, { intervalMs: config.EVENTS_SEAL_INTERVAL_MS });
    const eventDelivery = new EventDelivery(
      { db, redis, keys, metrics, log, nodeId: lease.nodeId },
      parseTransports(config).settings,
      { source: config.EVENTS_SOURCE, retentionHours: config.EVENTS_RETENTION_HOURS },
    );
    app.decorate('sweeper', sweeper);
    app.decorate('eventSealer', eventSealer);
    app.decorate('reconciler', reconciler);
    app.decorate('reconcileDeps', reconcileDeps);
    app.decorate('eventDelivery', eventDelivery);

    app.addHook('onReady', async () => {
      sweeper.start();
      reconciler.start();
      eventSealer.start();
      eventDelivery.start();
    });
    // Registered after the writer and the clients, so this runs before their onClose hooks (Fastify runs onClose
    // hooks in reverse order): no job submits to a closed writer or queries an ended pool.
    app.addHook('onClose', async () => {
      await Promise.all([sweeper.stop(), reconciler.stop(), eventSealer.stop(), eventDelivery.stop()]);
    });
  },
  { name: 'jobs', fastify: '5.x', dependencies: ['metrics', 'redis', 'postgres', 'state', 'lease', 'writer'] },
);
