import { createHash } from 'node:crypto';
import { Webhook } from 'standardwebhooks';

/**
 * The event transports' settings (`EVENTS_*`, README "Configuration"): the one place their formats are defined.
 * The config check (src/config.ts) refuses a bad value at start; the relays (src/events/delivery.ts) are built from
 * what this returns. Each transport is off until its variable is set.
 *
 * Secrets: a NATS URL may carry a user and password or a token, a webhook URL is often a capability (a token in
 * its path or query), and the webhook secret is one. A problem never quotes them: a NATS URL is shown with its
 * user information masked, a webhook URL by its position and origin only.
 */

export interface NatsSettings {
  servers: string[];
  /** From the URL's user information (`nats://user:pass@host`), or a token (`nats://token@host`). */
  user?: string;
  pass?: string;
  token?: string;
  stream: string;
}

export interface KafkaSettings {
  /** `host:port` each. */
  brokers: string[];
  topic: string;
  tls: boolean;
  sasl: { mechanism: 'PLAIN' | 'SCRAM-SHA-256' | 'SCRAM-SHA-512'; username: string; password: string } | null;
}

export interface WebhookSettings {
  url: string;
  /** The relay's name, cursor row and metrics label: `webhook:` and the first 16 hex digits of sha256(url). */
  name: string;
  /** scheme://host[:port] only: what a log line may show of it. */
  origin: string;
}

export interface TransportSettings {
  nats: NatsSettings | null;
  kafka: KafkaSettings | null;
  webhooks: WebhookSettings[];
  /** The Standard Webhooks signing secret (`whsec_` + base64); set whenever `webhooks` is not empty. */
  webhookSecret: string | null;
}

export const TRANSPORT_VARIABLES = [
  'EVENTS_NATS_URL',
  'EVENTS_NATS_STREAM',
  'EVENTS_KAFKA_BROKERS',
  'EVENTS_KAFKA_TOPIC',
  'EVENTS_KAFKA_TLS',
  'EVENTS_KAFKA_SASL_MECHANISM',
  'EVENTS_KAFKA_USERNAME',
  'EVENTS_KAFKA_PASSWORD',
  'EVENTS_WEBHOOK_URLS',
  'EVENTS_WEBHOOK_SECRET',
] as const;

/** The raw values, as the configuration holds them. */
export type TransportVariables = Record<(typeof TRANSPORT_VARIABLES)[number], string>;

const NATS_SCHEMES = ['nats:', 'tls:'];
const WEBHOOK_SCHEMES = ['http:', 'https:'];
const BROKER = /^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})$/;
/** Standard Webhooks: the key is 24 to 64 random bytes. */
const SECRET_BYTES = { min: 24, max: 64 };

const list = (value: string): string[] =>
  value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');

/** `webhook:` + the first 16 hex digits of sha256(url): names the endpoint without showing it. */
export const webhookName = (url: string): string => `webhook:${createHash('sha256').update(url).digest('hex').slice(0, 16)}`;

/** A URL with its whole user information replaced by `***` (a token alone has no `:` for maskCredentials to find). */
const maskUserInfo = (value: string): string => value.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@\s]*@/i, '$1***@');

function parseNats(value: string, problems: string[]): Omit<NatsSettings, 'stream'> | null {
  const servers: string[] = [];
  let credentials: { user?: string; pass?: string; token?: string } = {};
  for (const [i, entry] of list(value).entries()) {
    const shown = `EVENTS_NATS_URL entry ${i + 1} (${maskUserInfo(entry)})`;
    let url: URL;
    try {
      url = new URL(entry);
    } catch {
      problems.push(`${shown} is not a valid URL`);
      continue;
    }
    if (!NATS_SCHEMES.includes(url.protocol)) {
      problems.push(`${shown} must start with nats:// or tls://`);
      continue;
    }
    if (url.hostname === '') {
      problems.push(`${shown} names no host`);
      continue;
    }
    const user = decodeURIComponent(url.username);
    const pass = decodeURIComponent(url.password);
    if (user !== '') credentials = pass !== '' ? { user, pass } : { token: user };
    url.username = '';
    url.password = '';
    servers.push(`${url.protocol}//${url.host}`);
  }
  return servers.length > 0 ? { servers, ...credentials } : null;
}

function parseWebhooks(value: string, problems: string[]): WebhookSettings[] {
  const webhooks: WebhookSettings[] = [];
  for (const [i, entry] of list(value).entries()) {
    const at = `EVENTS_WEBHOOK_URLS entry ${i + 1}`;
    let url: URL;
    try {
      url = new URL(entry);
    } catch {
      problems.push(`${at} is not a valid URL`);
      continue;
    }
    if (!WEBHOOK_SCHEMES.includes(url.protocol)) {
      problems.push(`${at} must start with http:// or https:// (got ${url.protocol}//…)`);
      continue;
    }
    if (url.hostname === '') {
      problems.push(`${at} names no host`);
      continue;
    }
    if (webhooks.some((w) => w.url === entry)) {
      problems.push(`${at} repeats an earlier entry`);
      continue;
    }
    webhooks.push({ url: entry, name: webhookName(entry), origin: url.origin });
  }
  return webhooks;
}

/** The secret's key length in bytes, or -1 when it is not `whsec_` + padded base64 (as the verifiers decode it). */
function secretBytes(value: string): number {
  const base64 = value.startsWith('whsec_') ? value.slice('whsec_'.length) : '';
  if (base64.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(base64)) return -1;
  try {
    new Webhook(value); // the reference implementation must read it as the receivers will
  } catch {
    return -1;
  }
  return Buffer.from(base64, 'base64').length;
}

function checkSecret(value: string, problems: string[]): void {
  const bytes = secretBytes(value);
  if (bytes < SECRET_BYTES.min || bytes > SECRET_BYTES.max) {
    problems.push(
      `EVENTS_WEBHOOK_SECRET must be whsec_ followed by the base64 of ${SECRET_BYTES.min} to ${SECRET_BYTES.max} random bytes ` +
        '(e.g. whsec_$(openssl rand -base64 32))',
    );
  }
}

/** SASL credentials: a mechanism needs both a username and a password, and they mean nothing without one. */
function parseSasl(v: TransportVariables, problems: string[]): KafkaSettings['sasl'] {
  const mechanism = v.EVENTS_KAFKA_SASL_MECHANISM;
  const { EVENTS_KAFKA_USERNAME: username, EVENTS_KAFKA_PASSWORD: password } = v;
  if (mechanism === '') {
    if (username !== '' || password !== '') problems.push('EVENTS_KAFKA_USERNAME and EVENTS_KAFKA_PASSWORD need EVENTS_KAFKA_SASL_MECHANISM');
    return null;
  }
  if (username === '' || password === '') {
    problems.push(`EVENTS_KAFKA_SASL_MECHANISM ${mechanism} needs EVENTS_KAFKA_USERNAME and EVENTS_KAFKA_PASSWORD`);
    return null;
  }
  if (mechanism !== 'PLAIN' && mechanism !== 'SCRAM-SHA-256' && mechanism !== 'SCRAM-SHA-512') return null; // the schema refuses it
  return { mechanism, username, password };
}

/** The transports configured, or every problem with their settings. */
export function parseTransports(v: TransportVariables): { settings: TransportSettings; problems: string[] } {
  const problems: string[] = [];
  const nats = parseNats(v.EVENTS_NATS_URL, problems);
  const brokers = list(v.EVENTS_KAFKA_BROKERS);
  brokers.forEach((b, i) => {
    const port = BROKER.exec(b)?.[2];
    if (port === undefined || Number(port) < 1 || Number(port) > 65535) {
      problems.push(`EVENTS_KAFKA_BROKERS entry ${i + 1} must be host:port (got ${b})`);
    }
  });
  const sasl = parseSasl(v, problems);
  const webhooks = parseWebhooks(v.EVENTS_WEBHOOK_URLS, problems);
  const secret = v.EVENTS_WEBHOOK_SECRET;
  if (secret !== '') checkSecret(secret, problems);
  else if (list(v.EVENTS_WEBHOOK_URLS).length > 0) problems.push('EVENTS_WEBHOOK_URLS is set: EVENTS_WEBHOOK_SECRET must be too (webhooks are signed)');
  return {
    settings: {
      nats: nats && { ...nats, stream: v.EVENTS_NATS_STREAM },
      kafka: brokers.length > 0 ? { brokers, topic: v.EVENTS_KAFKA_TOPIC, tls: v.EVENTS_KAFKA_TLS === 'true', sasl } : null,
      webhooks,
      webhookSecret: secret === '' ? null : secret,
    },
    problems,
  };
}

/** The names of the configured transports (their relays, cursor rows and metrics labels). */
export const transportNames = (s: TransportSettings): string[] => [
  ...(s.nats ? ['nats'] : []),
  ...(s.kafka ? ['kafka'] : []),
  ...s.webhooks.map((w) => w.name),
];
