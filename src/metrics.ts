import { Counter, Histogram, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

/** Every metric the service exports, on a registry of its own (one per app, so tests can build many apps). */
export function createMetrics() {
  const registry = new Registry();
  /** Per transport whose relay is active on this node: when its oldest undelivered event happened (null: none). */
  const relayLagSince = new Map<string, Date | null>();
  /** Set by the read replica's router (src/store/read-replica.ts): its lag now, in ms, null while unknown. */
  let replicaLagMs: (() => number | null) | null = null;
  collectDefaultMetrics({ register: registry });
  const fast = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
  return {
    registry,
    httpDuration: new Histogram({
      name: 'http_request_duration_seconds',
      help: 'HTTP request latency by route and status',
      labelNames: ['method', 'route', 'status_code'] as const,
      buckets: fast,
      registers: [registry],
    }),
    reservations: new Counter({
      name: 'irs_reservation_outcomes_total',
      help: 'Reservation outcomes: created, insufficient, confirmed, released, expired, extended, replayed',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    luaDuration: new Histogram({
      name: 'irs_lua_duration_seconds',
      help: 'Latency of each Lua decision script, round trip included',
      labelNames: ['script'] as const,
      buckets: fast,
      registers: [registry],
    }),
    pgBatchDuration: new Histogram({
      name: 'irs_pg_batch_duration_seconds',
      help: 'Latency of one group-commit transaction in PostgreSQL',
      buckets: fast,
      registers: [registry],
    }),
    pgBatchSize: new Histogram({
      name: 'irs_pg_batch_operations',
      help: 'Operations recorded per group-commit transaction',
      buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500],
      registers: [registry],
    }),
    shed: new Counter({
      name: 'irs_shed_total',
      help: 'Write requests refused with 503 before deciding anything, because WRITER_MAX_QUEUE requests were in progress, by operation',
      labelNames: ['operation'] as const,
      registers: [registry],
    }),
    eventsAppended: new Counter({
      name: 'irs_events_appended_total',
      help: 'Events appended to the outbox by the group-commit statements that recorded their changes, by type',
      labelNames: ['type'] as const,
      registers: [registry],
    }),
    pgBatchFailures: new Counter({
      name: 'irs_pg_batch_failures_total',
      help: 'Group-commit transactions that failed (their requests were compensated and answered 503)',
      registers: [registry],
    }),
    pgRejectedOperations: new Counter({
      name: 'irs_pg_rejected_operations_total',
      help: 'Operations PostgreSQL rejected alone for their own values, found by splitting the batch that failed (answered 400 for SQLSTATE class 22, else 500), by SQLSTATE',
      labelNames: ['sqlstate'] as const,
      registers: [registry],
    }),
    compensations: new Counter({
      name: 'irs_compensations_total',
      help: 'Redis decisions whose PostgreSQL record failed, by what became of them (undone, not_needed, failed, deferred while the commit\'s fate is unknown, then committed_after_all or skipped_unknown_commit)',
      labelNames: ['operation', 'result'] as const,
      registers: [registry],
    }),
    claimsFreed: new Counter({
      name: 'irs_idempotency_claims_freed_total',
      help: 'Idempotency keys freed of a claim PostgreSQL never committed, by why: request_failed (its own request answered an error), owner_lost (its process\'s lease lapsed), outcome_never_learned (the commit\'s fate was never learned), legacy_timeout (a record without a node id, a minute old)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    sweeperRuns: new Counter({
      name: 'irs_sweeper_runs_total',
      help: 'Sweeper passes, by result',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    sweeperExpired: new Counter({
      name: 'irs_sweeper_expired_total',
      help: 'Reservations the sweeper recorded as expired in PostgreSQL',
      registers: [registry],
    }),
    rebuilds: new Counter({
      name: 'irs_redis_rebuilds_total',
      help: 'Rebuilds of Redis state from PostgreSQL this node performed',
      registers: [registry],
    }),
    reconcileDrift: new Gauge({
      name: 'irs_reconcile_drift_rows',
      help: '(item, location) rows where Redis and PostgreSQL disagreed at the last reconciliation',
      registers: [registry],
    }),
    reconcileOrphans: new Gauge({
      name: 'irs_reconcile_orphan_holds',
      help: 'Holds in Redis that PostgreSQL never recorded, found at the last reconciliation',
      registers: [registry],
    }),
    reconcileItems: new Gauge({
      name: 'irs_reconcile_items',
      help: 'Items the last periodic reconciliation pass on this node compared',
      registers: [registry],
    }),
    reconcilePassSeconds: new Gauge({
      name: 'irs_reconcile_pass_seconds',
      help: 'How long the last periodic reconciliation pass on this node took, paced by RECONCILE_DUTY_PERCENT',
      registers: [registry],
    }),
    reconcileRepairs: new Counter({
      name: 'irs_reconcile_repairs_total',
      help: 'Repairs reconciliation made, by action',
      labelNames: ['action'] as const,
      registers: [registry],
    }),
    eventsDelivered: new Counter({
      name: 'irs_events_delivered_total',
      help: 'Events a transport accepted (a redelivery counts again), by transport (nats, kafka, webhook:<hash of the URL>)',
      labelNames: ['transport'] as const,
      registers: [registry],
    }),
    eventsFailed: new Counter({
      name: 'irs_events_failed_total',
      help: 'Event deliveries that failed (each is retried), by transport',
      labelNames: ['transport'] as const,
      registers: [registry],
    }),
    eventRetries: new Counter({
      name: 'irs_event_retries_total',
      help: 'Retries of a transport\'s delivery after a failure (each after a backoff), by transport',
      labelNames: ['transport'] as const,
      registers: [registry],
    }),
    relayLagSince,
    relayLag: new Gauge({
      name: 'irs_events_relay_lag_seconds',
      help: 'Age of the oldest sealed event a transport has not delivered yet (0 when caught up), on the node whose relay is active',
      labelNames: ['transport'] as const,
      registers: [registry],
      collect() {
        for (const [transport, since] of relayLagSince) {
          this.set({ transport }, since === null ? 0 : Math.max(0, Date.now() - since.getTime()) / 1000);
        }
      },
    }),
    eventsPruned: new Counter({
      name: 'irs_events_pruned_total',
      help: 'Events deleted past EVENTS_RETENTION_HOURS once every configured transport had delivered them',
      registers: [registry],
    }),
    pgReads: new Counter({
      name: 'irs_pg_reads_total',
      help: 'Reads a read replica may serve (read: reservation by id, reference listing, events feed), by the server that answered (served_by: replica or primary)',
      labelNames: ['read', 'served_by'] as const,
      registers: [registry],
    }),
    replicaFallbacks: new Counter({
      name: 'irs_pg_replica_fallbacks_total',
      help: 'Reads the read replica could have served that the primary answered, by read and reason (down, lagging, error; for a reservation by id also not_found and pending)',
      labelNames: ['read', 'reason'] as const,
      registers: [registry],
    }),
    reportReplicaLag(lagMs: () => number | null): void {
      replicaLagMs = lagMs;
    },
    replicaLag: new Gauge({
      name: 'irs_pg_replica_lag_seconds',
      help: 'How far the read replica is behind the primary: the age of the newest primary WAL position it has replayed (NaN until first reached; 0 without a replica)',
      registers: [registry],
      collect() {
        if (replicaLagMs === null) return;
        const ms = replicaLagMs();
        this.set(ms === null ? Number.NaN : ms / 1000);
      },
    }),
    rebuildDuration: new Gauge({
      name: 'irs_redis_rebuild_last_duration_seconds',
      help: 'Duration of the last rebuild this node performed',
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
