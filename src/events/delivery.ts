import type { FastifyBaseLogger as Logger } from 'fastify';
import type { RedisClient } from '../redis/client.js';
import type pg from 'pg';
import { LEASE_RENEW_MS, LEASE_TTL_MS } from '../jobs/node-lease.js';
import type { Metrics } from '../metrics.js';
import type { Keys } from '../redis/keys.js';
import { Pruner, PRUNER_DEFAULTS } from './pruner.js';
import { Lease } from '../redis/lease.js';
import { Relay, RELAY_DEFAULTS } from './relay.js';
import { transportNames, type TransportSettings } from './settings.js';
import { KafkaTransport } from './transports/kafka.js';
import { NatsTransport } from './transports/nats.js';
import type { Transport } from './transports/transport.js';
import { WebhookTransport } from './transports/webhook.js';

export interface DeliveryDeps {
  db: pg.Pool;
  redis: RedisClient;
  keys: Keys;
  metrics: Metrics;
  log: Logger;
  nodeId: string;
}

/** A transport for each one configured: NATS, Kafka, then each webhook endpoint. */
export function createTransports(settings: TransportSettings): Transport[] {
  const transports: Transport[] = [];
  if (settings.nats) transports.push(new NatsTransport(settings.nats));
  if (settings.kafka) transports.push(new KafkaTransport(settings.kafka));
  for (const webhook of settings.webhooks) transports.push(new WebhookTransport(webhook, settings.webhookSecret!));
  return transports;
}

/** A relay with its own lease for `transport` (the lease key: `<prefix>relay:<transport name>`). */
export function createRelay(d: DeliveryDeps, transport: Transport, source: string): Relay {
  const lease = new Lease(d.redis, d.keys.relayLease(transport.name), d.nodeId, LEASE_TTL_MS);
  return new Relay(d, transport, lease, { source, ...RELAY_DEFAULTS, leaseRenewMs: LEASE_RENEW_MS });
}

/** The node's part in delivering events: a relay per configured transport, and the pruning of delivered events. */
export class EventDelivery {
  readonly relays: Relay[];
  readonly pruner: Pruner;

  constructor(d: DeliveryDeps, settings: TransportSettings, options: { source: string; retentionHours: number }) {
    this.relays = createTransports(settings).map((t) => createRelay(d, t, options.source));
    this.pruner = new Pruner(d, { ...PRUNER_DEFAULTS, retentionHours: options.retentionHours, transports: transportNames(settings) });
  }

  start(): void {
    for (const relay of this.relays) relay.start();
    this.pruner.start();
  }

  async stop(): Promise<void> {
    await Promise.all([...this.relays.map((r) => r.stop()), this.pruner.stop()]);
  }
}
