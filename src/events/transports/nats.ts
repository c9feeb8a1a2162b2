import { jetstream, jetstreamManager, JetStreamApiCodes, JetStreamApiError, type JetStreamClient } from '@nats-io/jetstream';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import type { CloudEvent } from '../envelope.js';
import { EVENT_TYPE_PREFIX } from '../envelope.js';
import type { NatsSettings } from '../settings.js';
import { deliverBySubject, type Delivery, type Transport } from './transport.js';

/** The subjects a stream the relay creates listens on: every event type (a type is its NATS subject). */
export const STREAM_SUBJECTS = [`${EVENT_TYPE_PREFIX}>`];

export interface NatsOptions {
  /** How long a publish waits for the stream's acknowledgement before it counts as failed. */
  publishTimeoutMs: number;
  /** Subjects published at once (each subject's events one after another). */
  concurrency: number;
}

export const NATS_DEFAULTS: NatsOptions = { publishTimeoutMs: 5_000, concurrency: 32 };

/**
 * NATS JetStream: each event published to the subject named by its type (`inventory.reservation.created`) with
 * the event id as `Nats-Msg-Id`, so the stream drops a redelivery within its duplicate window (2 minutes unless
 * the stream says otherwise); delivered once the stream acknowledged it (stored, or recognised as a duplicate).
 * The stream is created over `inventory.>` if missing; an existing one is used as it is.
 */
export class NatsTransport implements Transport {
  readonly name = 'nats';
  private connection: NatsConnection | null = null;
  private js: JetStreamClient | null = null;

  constructor(
    private readonly settings: NatsSettings,
    private readonly options: NatsOptions = NATS_DEFAULTS,
  ) {}

  get target(): string {
    return `NATS ${this.settings.servers.join(',')} stream ${this.settings.stream}`;
  }

  async open(): Promise<void> {
    if (this.connection && !this.connection.isClosed()) return;
    const { servers, user, pass, token, stream } = this.settings;
    const nc = await connect({
      servers,
      user,
      pass,
      token,
      name: 'inventory-reservation-service events relay',
      // Once connected, reconnect for ever: a publish meanwhile fails (its timeout) and the relay retries it.
      maxReconnectAttempts: -1,
      reconnectTimeWait: 1_000,
      timeout: this.options.publishTimeoutMs,
    });
    try {
      await ensureStream(nc, stream);
    } catch (err) {
      await nc.close().catch(() => undefined);
      throw err;
    }
    this.connection = nc;
    this.js = jetstream(nc, { timeout: this.options.publishTimeoutMs });
  }

  deliver(events: readonly CloudEvent[], signal: AbortSignal): Promise<Delivery> {
    const js = this.js;
    if (!js) return Promise.resolve({ delivered: events.map(() => false), failed: 1, error: new Error('not connected') });
    return deliverBySubject(
      events,
      async (event) => {
        // Headers of their own per message: the client writes the Nats-Msg-Id into the object it is given.
        const h = headers();
        h.set('Content-Type', 'application/cloudevents+json');
        await js.publish(event.type, JSON.stringify(event), { msgID: event.id, headers: h, timeout: this.options.publishTimeoutMs });
      },
      this.options.concurrency,
      signal,
    );
  }

  async close(): Promise<void> {
    const nc = this.connection;
    this.connection = null;
    this.js = null;
    await nc?.close().catch(() => undefined);
  }
}

/** Creates `stream` over STREAM_SUBJECTS unless it exists (whatever its subjects: the operator's choice). */
async function ensureStream(nc: NatsConnection, stream: string): Promise<void> {
  const jsm = await jetstreamManager(nc);
  try {
    await jsm.streams.info(stream);
  } catch (err) {
    if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound)) throw err;
    await jsm.streams.add({ name: stream, subjects: STREAM_SUBJECTS });
  }
}
