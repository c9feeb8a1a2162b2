import { CloudEventDocument, LocationFigures, ReservationDocument } from '../domain/schemas.js';
import { EVENT_TYPE_PREFIX } from './envelope.js';
import { EVENT_TYPES, type EventType } from './types.js';

/** The Kafka topic a deployment publishes to unless configured otherwise. */
export const DEFAULT_KAFKA_TOPIC = 'inventory-events';

/** `inventory.reservation.created` → `reservationCreated`: the event's name in the document. */
const nameOf = (t: EventType) =>
  t.type
    .slice(EVENT_TYPE_PREFIX.length)
    .split('.')
    .map((word, i) => (i === 0 ? word : word[0]!.toUpperCase() + word.slice(1)))
    .join('');

const capitalised = (name: string) => name[0]!.toUpperCase() + name.slice(1);

/**
 * The AsyncAPI 3.0 document of every event the service sends (`GET /asyncapi.json`), made from the schemas the code
 * uses: the envelope (CloudEventDocument) with each type's `data` (EVENT_TYPES), on each transport: a NATS subject
 * per type, one Kafka topic for all (record key: the subject), and webhook POSTs.
 */
export function asyncApiDocument(options: { source: string; kafkaTopic?: string }): Record<string, unknown> {
  const kafkaTopic = options.kafkaTopic ?? DEFAULT_KAFKA_TOPIC;
  const ref = (path: string) => ({ $ref: path });
  const messages = Object.fromEntries(
    EVENT_TYPES.map((t) => {
      const { properties } = CloudEventDocument;
      const payload = {
        ...CloudEventDocument,
        properties: {
          ...properties,
          source: { ...properties.source, examples: [options.source] },
          type: { type: 'string', const: t.type },
          subject: { type: 'string', description: t.subject === 'reservation' ? 'The reservation id' : 'The item id' },
          data: ref(`#/components/schemas/${t.dataName}`),
        },
      };
      return [
        nameOf(t),
        {
          name: t.type,
          title: t.type,
          summary: t.summary,
          contentType: 'application/json',
          payload,
          bindings: {
            kafka: { key: { type: 'string', description: 'The subject: one partition keeps its order' }, bindingVersion: '0.5.0' },
            http: { headers: WEBHOOK_HEADERS, bindingVersion: '0.3.0' },
          },
        },
      ];
    }),
  );
  // A channel of every type lists each message; its operation names them through the channel (AsyncAPI 3).
  const allMessages = (channel: string) => Object.keys(messages).map((name) => ref(`#/channels/${channel}/messages/${name}`));
  const everyMessage = Object.fromEntries(Object.keys(messages).map((name) => [name, ref(`#/components/messages/${name}`)]));

  const channels: Record<string, unknown> = {};
  const operations: Record<string, unknown> = {};
  for (const t of EVENT_TYPES) {
    const name = nameOf(t);
    const channel = `nats${capitalised(name)}`;
    channels[channel] = {
      address: t.type,
      title: `NATS subject ${t.type}`,
      description: 'A JetStream stream over `inventory.>` (`EVENTS_NATS_STREAM`) keeps them; the message id (`Nats-Msg-Id`) is the event id.',
      messages: { [name]: ref(`#/components/messages/${name}`) },
    };
    operations[`send${capitalised(name)}OverNats`] = {
      action: 'send',
      channel: ref(`#/channels/${channel}`),
      summary: `${t.type} to its NATS subject`,
      messages: [ref(`#/channels/${channel}/messages/${name}`)],
    };
  }
  channels.kafka = {
    address: kafkaTopic,
    title: `Kafka topic ${kafkaTopic}`,
    description: 'Every event (`EVENTS_KAFKA_TOPIC`), keyed by its subject, from an idempotent producer.',
    messages: everyMessage,
    bindings: { kafka: { topic: kafkaTopic, bindingVersion: '0.5.0' } },
  };
  operations.sendOverKafka = {
    action: 'send',
    channel: ref('#/channels/kafka'),
    summary: 'Every event to the Kafka topic',
    messages: allMessages('kafka'),
  };
  channels.webhook = {
    address: null,
    title: 'Webhook endpoints',
    description:
      'Each URL of `EVENTS_WEBHOOK_URLS` receives every event as a `POST` of its JSON, signed per Standard Webhooks; ' +
      'a 2xx answer delivers it, anything else is retried with backoff.',
    messages: everyMessage,
  };
  operations.sendOverWebhook = {
    action: 'send',
    channel: ref('#/channels/webhook'),
    summary: 'Every event to each webhook endpoint',
    messages: allMessages('webhook'),
    bindings: { http: { method: 'POST', bindingVersion: '0.3.0' } },
  };

  return {
    asyncapi: '3.0.0',
    info: {
      title: 'Inventory Reservation Service events',
      version: '0.1.0',
      description: DESCRIPTION,
      license: { name: 'MIT', url: 'https://opensource.org/licenses/MIT' },
    },
    defaultContentType: 'application/json',
    channels,
    operations,
    components: {
      schemas: { ReservationDocument, LocationFigures },
      messages,
    },
  };
}

const WEBHOOK_HEADERS = {
  type: 'object',
  description: 'A webhook delivery\'s headers (Standard Webhooks)',
  properties: {
    'webhook-id': { type: 'string', description: 'The event id' },
    'webhook-timestamp': { type: 'string', description: 'Seconds since the epoch when this delivery was signed' },
    'webhook-signature': { type: 'string', description: '`v1,<base64 HMAC-SHA256>` of `<id>.<timestamp>.<body>`, keyed by `EVENTS_WEBHOOK_SECRET`' },
  },
};

const DESCRIPTION = `Every change the service records appends its events in the same PostgreSQL transaction (a
transactional outbox): an event exists if and only if its change was committed. Each is a CloudEvents 1.0 envelope
in structured JSON mode; \`subject\` is the reservation or item it is about, and \`sequence\` counts 1, 2, 3… per
subject in the order its changes were decided.

Delivery is at least once, in per-subject order, on every configured transport and the pull feed
(\`GET /events\`, see the OpenAPI document): deduplicate by \`id\`, and use \`sequence\` to tell a duplicate or a gap.`;
