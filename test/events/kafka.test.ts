import { randomBytes } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import { Consumer, stringDeserializers, type Message } from '@platformatic/kafka';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import type { CloudEvent } from '../../src/events/envelope.js';
import { parseTransports } from '../../src/events/settings.js';
import { KafkaTransport } from '../../src/events/transports/kafka.js';
import { createMetrics } from '../../src/metrics.js';
import { appendEvents } from '../helpers/events.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';
import {
  cursorOf,
  interleaved,
  orderViolations,
  startAtEnd,
  useRelays,
} from './support.js';

// Kafka end to end against a real broker: runs only where EVENTS_KAFKA_BROKERS names one (no broker runs on the
// machine the suite was written on; vitest reports the test as skipped), e.g.
//   docker run -d -p 9092:9092 apache/kafka:3.9.0 && EVENTS_KAFKA_BROKERS=127.0.0.1:9092 npx vitest run test/events/kafka.test.ts

const BROKERS = process.env.EVENTS_KAFKA_BROKERS ?? '';

const env = useRelays();

describe('Kafka without a broker', () => {
  it('fails each send (no broker at the address), retries it on a new producer, records nothing as delivered, and stops at once', async () => {
    const port = await freePort(); // nothing listens there
    await startAtEnd(env.database.db, 'kafka');
    const before = await cursorOf(env.database.db, 'kafka');
    await appendEvents(env.database.db, interleaved(10, 2, Math.random, 'nobroker'));
    const metrics = createMetrics();
    const relay = env.relays.relay(new KafkaTransport({ brokers: [`127.0.0.1:${port}`], topic: 'irs-none', tls: false, sasl: null }, { sendTimeoutMs: 500 }), {
      metrics,
      backoff: { baseMs: 10, capMs: 50 },
    });
    relay.start();
    const count = async (name: string) => (await metrics.registry.getSingleMetric(name)!.get()).values.find((v) => v.labels.transport === 'kafka')?.value ?? 0;
    await waitFor('retries', async () => ((await count('irs_event_retries_total')) >= 2 ? true : undefined));
    await relay.stop();
    expect(await count('irs_events_failed_total')).toBeGreaterThanOrEqual(20); // the batch of 10, twice at least
    expect(await count('irs_events_delivered_total')).toBe(0);
    expect(await cursorOf(env.database.db, 'kafka')).toBe(before);
  });
});

const EVENT: CloudEvent = {
  specversion: '1.0',
  id: '018bcfe5-6800-7000-8000-000000000001',
  source: '/test',
  type: 'inventory.stock.changed',
  subject: 'items/sku-tls',
  time: new Date().toISOString(),
  datacontenttype: 'application/json',
  sequence: '1',
  data: {},
};

describe('Kafka over TLS', () => {
  it('opens its connection to the broker with a TLS handshake (EVENTS_KAFKA_TLS=true), and without one otherwise', async () => {
    // What the relay's first bytes to a broker are: a TLS record (0x16, handshake) or a Kafka request (a length).
    const firstBytes = async (tls: boolean): Promise<Buffer> => {
      const server = createServer();
      const seen = new Promise<Buffer>((resolve) => server.on('connection', (socket) => socket.once('data', (data: Buffer) => { resolve(data); socket.destroy(); })));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const { port } = server.address() as AddressInfo;
      const transport = new KafkaTransport({ brokers: [`127.0.0.1:${port}`], topic: 'irs-tls', tls, sasl: null }, { sendTimeoutMs: 1_000 });
      const delivery = transport.deliver([EVENT], new AbortController().signal);
      const data = await seen;
      await delivery;
      await transport.close();
      server.close();
      return data;
    };
    expect((await firstBytes(true))[0]).toBe(0x16);
    expect((await firstBytes(false))[0]).not.toBe(0x16);
  });
});

describe.runIf(BROKERS)('Kafka', () => {
  it('sends every event to the topic, keyed by subject, once per send and in per-subject order; a consumer reads them all', async () => {
    // The broker's TLS and SASL settings too, when the environment has them (EVENTS_KAFKA_TLS, _SASL_MECHANISM, …).
    const kafkaEnv = Object.fromEntries(Object.entries(process.env).filter(([name]) => name.startsWith('EVENTS_KAFKA_')));
    const { settings, problems } = parseTransports(loadConfig({ ...kafkaEnv, EVENTS_KAFKA_TOPIC: `irs-test-${randomBytes(4).toString('hex')}` }));
    expect(problems).toEqual([]);
    const kafka = settings.kafka!;
    await startAtEnd(env.database.db, 'kafka');
    const appended = await appendEvents(env.database.db, interleaved(300, 20, Math.random, 'kafka'));
    const relay = env.relays.relay(new KafkaTransport(kafka, { sendTimeoutMs: 15_000 }), { batchSize: 100 });
    relay.start();
    await waitFor('the cursor at the end', async () => ((await cursorOf(env.database.db, 'kafka')) === appended.at(-1)!.position ? true : undefined), {
      timeoutMs: 30_000,
    });
    await relay.stop();

    const consumer = new Consumer({
      groupId: `irs-test-${randomBytes(4).toString('hex')}`,
      clientId: 'irs-test',
      bootstrapBrokers: kafka.brokers,
      deserializers: stringDeserializers,
    });
    const received: Message<string, string, string, string>[] = [];
    try {
      const stream = await consumer.consume({ topics: [kafka.topic], mode: 'earliest', autocommit: false });
      stream.on('data', (m: Message<string, string, string, string>) => received.push(m));
      await waitFor('every record', async () => (received.length >= appended.length ? true : undefined), { timeoutMs: 30_000 });
      await stream.close();
    } finally {
      await consumer.close(true);
    }
    const events = received.map((m) => JSON.parse(m.value) as CloudEvent);
    expect(events.map((e) => e.id).sort()).toEqual(appended.map((e) => e.id).sort()); // nothing failed: once each
    for (const [i, m] of received.entries()) {
      expect(m.key).toBe(events[i]!.subject);
      expect(m.headers.get('content-type')).toBe('application/cloudevents+json');
    }
    // A subject's records share a partition, where Kafka keeps their order (partitions interleave freely).
    const partitionsOf = new Map<string, Set<number>>();
    for (const [i, m] of received.entries()) partitionsOf.set(events[i]!.subject, (partitionsOf.get(events[i]!.subject) ?? new Set()).add(m.partition));
    for (const partitions of partitionsOf.values()) expect(partitions.size).toBe(1);
    expect(orderViolations(events)).toEqual([]);
  });
});
