import { ProduceAcks, Producer, stringSerializers } from '@platformatic/kafka';
import type { CloudEvent } from '../envelope.js';
import type { KafkaSettings } from '../settings.js';
import type { Delivery, Transport } from './transport.js';

export interface KafkaOptions {
  /** How long one batch may take to be acknowledged by every in-sync replica before it counts as failed. */
  sendTimeoutMs: number;
}

export const KAFKA_DEFAULTS: KafkaOptions = { sendTimeoutMs: 30_000 };

type StringProducer = Producer<string, string, string, string>;

/**
 * Kafka: each batch sent as one produce request to the topic, record key = the event's subject (so a subject's
 * events share a partition, where Kafka keeps their order), value = the CloudEvent JSON (structured mode:
 * `content-type: application/cloudevents+json`). The producer is idempotent (acks from all in-sync replicas, one
 * request in flight per connection, the broker dropping the producer's own retries), so a batch is stored once
 * and in order however often the client retries it. A batch that fails or times out is sent again by the relay,
 * on a new producer (the old one may still be retrying it): records it had stored arrive twice, under the same ids.
 */
export class KafkaTransport implements Transport {
  readonly name = 'kafka';
  private producer: StringProducer | null = null;

  constructor(
    private readonly settings: KafkaSettings,
    private readonly options: KafkaOptions = KAFKA_DEFAULTS,
  ) {}

  get target(): string {
    return `Kafka ${this.settings.brokers.join(',')} topic ${this.settings.topic}`;
  }

  async open(): Promise<void> {
    this.producer ??= new Producer({
      clientId: 'inventory-reservation-service-relay',
      bootstrapBrokers: this.settings.brokers,
      serializers: stringSerializers,
      idempotent: true,
      acks: ProduceAcks.ALL,
      autocreateTopics: true,
      timeout: this.options.sendTimeoutMs,
      connectTimeout: this.options.sendTimeoutMs,
      ...(this.settings.tls ? { tls: {} } : {}),
      ...(this.settings.sasl ? { sasl: this.settings.sasl } : {}),
    });
  }

  async deliver(events: readonly CloudEvent[], signal: AbortSignal): Promise<Delivery> {
    try {
      await this.open();
      const send = this.producer!.send({
        messages: events.map((event) => ({
          topic: this.settings.topic,
          key: event.subject,
          value: JSON.stringify(event),
          headers: { 'content-type': 'application/cloudevents+json' },
        })),
      });
      await settleWithin(send, this.options.sendTimeoutMs, signal);
      return { delivered: events.map(() => true), failed: 0 };
    } catch (error) {
      await this.close();
      return { delivered: events.map(() => false), failed: events.length, error };
    }
  }

  async close(): Promise<void> {
    const producer = this.producer;
    this.producer = null;
    await producer?.close().catch(() => undefined);
  }
}

/** `promise`, or a rejection once `ms` pass or `signal` aborts (an idempotent producer retries without end). */
function settleWithin<T>(promise: Promise<T>, ms: number, signal: AbortSignal): Promise<T> {
  promise.catch(() => undefined); // settled later, after the race was lost: not an unhandled rejection
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => done(() => reject(new Error(`no acknowledgement within ${ms} ms`))), ms);
    const onAbort = () => done(() => reject(new Error('aborted')));
    const done = (settle: () => void) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      settle();
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort);
    promise.then(
      (value) => done(() => resolve(value)),
      (err: unknown) => done(() => reject(err as Error)),
    );
  });
}
