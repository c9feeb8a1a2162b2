import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { parseTransports, transportNames, webhookName } from '../../src/events/settings.js';
import { logOptions } from '../../src/log.js';

// The event transports' settings: refused at start with a message naming the variable (and the entry), never
// quoting a secret (a NATS URL's credentials, a webhook URL, the signing secret); read into the relays' settings.

const SECRET = 's3cretPW-0123456789';
const WHSEC = `whsec_${randomBytes(32).toString('base64')}`;

function refusal(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(Object.keys(env))}`);
}

const settingsOf = (env: Record<string, string>) => parseTransports(loadConfig(env)).settings;

describe('event transport settings', () => {
  it('are all off by default: stream INVENTORY, topic inventory-events, a retention of 168 hours', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({ EVENTS_NATS_STREAM: 'INVENTORY', EVENTS_KAFKA_TOPIC: 'inventory-events', EVENTS_RETENTION_HOURS: 168 });
    expect(settingsOf({})).toEqual({ nats: null, kafka: null, webhooks: [], webhookSecret: null });
    expect(transportNames(settingsOf({}))).toEqual([]);
  });

  it('read NATS servers with their credentials (user and password, or a token) apart from the URL', () => {
    expect(settingsOf({ EVENTS_NATS_URL: `nats://relay:${SECRET}@n1.example:4222, nats://n2.example:4223`, EVENTS_NATS_STREAM: 'ORDERS' }).nats).toEqual({
      servers: ['nats://n1.example:4222', 'nats://n2.example:4223'],
      user: 'relay',
      pass: SECRET,
      stream: 'ORDERS',
    });
    expect(settingsOf({ EVENTS_NATS_URL: `tls://${SECRET}@n1.example` }).nats).toEqual({ servers: ['tls://n1.example'], token: SECRET, stream: 'INVENTORY' });
  });

  it('name each webhook endpoint webhook:<16 hex of its sha256> (its cursor, lease and metrics label, without the URL)', () => {
    const urls = ['https://hooks.example/a?token=x', 'http://10.0.0.5:8080/b'];
    const settings = settingsOf({ EVENTS_WEBHOOK_URLS: urls.join(','), EVENTS_WEBHOOK_SECRET: WHSEC, EVENTS_KAFKA_BROKERS: 'k1:9092,[::1]:9093' });
    expect(settings.webhooks.map((w) => w.name)).toEqual([webhookName(urls[0]!), webhookName(urls[1]!)]);
    expect(settings.webhooks[0]!.name).toMatch(/^webhook:[0-9a-f]{16}$/);
    expect(settings.webhooks[0]!.origin).toBe('https://hooks.example');
    expect(settings.kafka).toEqual({ brokers: ['k1:9092', '[::1]:9093'], topic: 'inventory-events', tls: false, sasl: null });
    expect(transportNames(settings)).toEqual(['kafka', webhookName(urls[0]!), webhookName(urls[1]!)]);
  });

  it('read Kafka TLS and SASL credentials', () => {
    const env = { EVENTS_KAFKA_BROKERS: 'k1:9093', EVENTS_KAFKA_TLS: 'true', EVENTS_KAFKA_SASL_MECHANISM: 'SCRAM-SHA-512', EVENTS_KAFKA_USERNAME: 'relay', EVENTS_KAFKA_PASSWORD: SECRET };
    expect(settingsOf(env).kafka).toEqual({
      brokers: ['k1:9093'],
      topic: 'inventory-events',
      tls: true,
      sasl: { mechanism: 'SCRAM-SHA-512', username: 'relay', password: SECRET },
    });
  });

  const HOOK_TOKEN = 'T0KEN-in-the-path-0123';
  const cases: [label: string, env: Record<string, string>, says: RegExp][] = [
    ['a NATS URL of another scheme', { EVENTS_NATS_URL: `http://u:${SECRET}@n1:4222` }, /EVENTS_NATS_URL entry 1 \(http:\/\/\*\*\*@n1:4222\) must start with nats:\/\/ or tls:\/\//],
    ['a NATS URL that is not one', { EVENTS_NATS_URL: `nats://${SECRET}@[bad` }, /EVENTS_NATS_URL entry 1 \(nats:\/\/\*\*\*@\[bad\) is not a valid URL/],
    ['a second NATS URL without host', { EVENTS_NATS_URL: 'nats://n1:4222,nats://' }, /EVENTS_NATS_URL entry 2 .* names no host/],
    ['a stream name with a dot', { EVENTS_NATS_STREAM: 'inv.entory' }, /EVENTS_NATS_STREAM/],
    ['a broker without port', { EVENTS_KAFKA_BROKERS: 'k1:9092,k2' }, /EVENTS_KAFKA_BROKERS entry 2 must be host:port/],
    ['a broker port out of range', { EVENTS_KAFKA_BROKERS: 'k1:99999' }, /EVENTS_KAFKA_BROKERS entry 1 must be host:port/],
    ['a topic with a slash', { EVENTS_KAFKA_TOPIC: 'a/b' }, /EVENTS_KAFKA_TOPIC/],
    ['Kafka TLS neither true nor false', { EVENTS_KAFKA_TLS: 'yes' }, /EVENTS_KAFKA_TLS/],
    ['an unknown SASL mechanism', { EVENTS_KAFKA_SASL_MECHANISM: 'GSSAPI', EVENTS_KAFKA_USERNAME: 'u', EVENTS_KAFKA_PASSWORD: SECRET }, /EVENTS_KAFKA_SASL_MECHANISM/],
    ['a SASL mechanism without a password', { EVENTS_KAFKA_SASL_MECHANISM: 'PLAIN', EVENTS_KAFKA_USERNAME: 'u' }, /EVENTS_KAFKA_SASL_MECHANISM PLAIN needs EVENTS_KAFKA_USERNAME and EVENTS_KAFKA_PASSWORD/],
    ['a Kafka password without a mechanism', { EVENTS_KAFKA_USERNAME: 'u', EVENTS_KAFKA_PASSWORD: SECRET }, /need EVENTS_KAFKA_SASL_MECHANISM/],
    ['webhooks without a secret', { EVENTS_WEBHOOK_URLS: `https://h.example/${HOOK_TOKEN}` }, /EVENTS_WEBHOOK_URLS is set: EVENTS_WEBHOOK_SECRET must be too/],
    ['a webhook URL of another scheme', { EVENTS_WEBHOOK_URLS: `ftp://h.example/${HOOK_TOKEN}`, EVENTS_WEBHOOK_SECRET: WHSEC }, /EVENTS_WEBHOOK_URLS entry 1 must start with http:\/\/ or https:\/\//],
    ['a webhook URL that is not one', { EVENTS_WEBHOOK_URLS: `https://ok.example/a,${HOOK_TOKEN}`, EVENTS_WEBHOOK_SECRET: WHSEC }, /EVENTS_WEBHOOK_URLS entry 2 is not a valid URL/],
    ['a repeated webhook URL', { EVENTS_WEBHOOK_URLS: `https://h.example/${HOOK_TOKEN},https://h.example/${HOOK_TOKEN}`, EVENTS_WEBHOOK_SECRET: WHSEC }, /EVENTS_WEBHOOK_URLS entry 2 repeats an earlier entry/],
    ['a secret without its prefix', { EVENTS_WEBHOOK_SECRET: WHSEC.slice('whsec_'.length) }, /EVENTS_WEBHOOK_SECRET must be whsec_ followed by the base64 of 24 to 64 random bytes/],
    ['a secret too short', { EVENTS_WEBHOOK_SECRET: `whsec_${Buffer.from(SECRET).toString('base64')}` }, /EVENTS_WEBHOOK_SECRET must be whsec_/],
    ['a secret not in base64', { EVENTS_WEBHOOK_SECRET: `whsec_${SECRET}${SECRET}!` }, /EVENTS_WEBHOOK_SECRET must be whsec_/],
    ['a retention of 0 hours', { EVENTS_RETENTION_HOURS: '0' }, /EVENTS_RETENTION_HOURS/],
  ];
  for (const [label, env, says] of cases) {
    it(`refuses ${label}, quoting no secret`, () => {
      const message = refusal(env);
      expect(message).toMatch(says);
      for (const secret of [SECRET, HOOK_TOKEN, WHSEC.slice(6, 30), Buffer.from(SECRET).toString('base64')]) expect(message).not.toContain(secret);
    });
  }

  it('reports a bad transport setting beside another bad variable', () => {
    const message = refusal({ PORT: 'abc', EVENTS_KAFKA_BROKERS: 'nope' });
    expect(message).toMatch(/PORT/);
    expect(message).toMatch(/EVENTS_KAFKA_BROKERS/);
  });

  it('never logs them: the configuration logged is redacted', () => {
    const lines: string[] = [];
    const log = pino(logOptions('info'), { write: (line: string) => void lines.push(line) });
    const config = loadConfig({
      EVENTS_NATS_URL: `nats://relay:${SECRET}@n1:4222`,
      EVENTS_WEBHOOK_URLS: `https://h.example/${HOOK_TOKEN}`,
      EVENTS_WEBHOOK_SECRET: WHSEC,
      EVENTS_KAFKA_SASL_MECHANISM: 'PLAIN',
      EVENTS_KAFKA_USERNAME: 'relay',
      EVENTS_KAFKA_PASSWORD: `${SECRET}-kafka`,
    });
    log.info({ config }, 'config');
    log.info(config, 'top level');
    const text = lines.join('');
    for (const secret of [SECRET, HOOK_TOKEN, WHSEC, `${SECRET}-kafka`]) expect(text).not.toContain(secret);
    expect(text).toContain('[Redacted]');
  });
});
