import { envSchema } from 'env-schema';
import { Type, type Static } from 'typebox';
import { parseApiKeys } from './credentials.js';
import { DEFAULT_EVENT_SOURCE } from './events/envelope.js';
import { parseTransports, TRANSPORT_VARIABLES, type TransportVariables } from './events/settings.js';
import { maskCredentials } from './log.js';

/** Every setting the service reads, with its default: the README's configuration table mirrors this. */
export const ConfigSchema = Type.Object({
  HOST: Type.String({ default: '0.0.0.0' }),
  PORT: Type.Integer({ default: 8080, minimum: 0, maximum: 65535 }),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
    { default: 'info' },
  ),
  /** `postgres://` or `postgresql://`, with a host and a database name (checked by `checkUrl`). */
  DATABASE_URL: Type.String({ default: 'postgres://postgres@127.0.0.1:5432/inventory' }),
  DATABASE_POOL_SIZE: Type.Integer({ default: 10, minimum: 2 }),
  /**
   * A streaming replica of DATABASE_URL's server (the same URL rules), for the reads that may lag (src/store/read-replica.ts
   * says which); empty: every read goes to DATABASE_URL.
   */
  DATABASE_REPLICA_URL: Type.String({ default: '' }),
  /** The most a read served by the replica may lag behind the primary; further behind, the primary answers it. */
  DATABASE_REPLICA_MAX_LAG_MS: Type.Integer({ default: 1000, minimum: 100 }),
  /** `redis://` or `rediss://` (TLS), with a host (checked by `checkUrl`). */
  REDIS_URL: Type.String({ default: 'redis://127.0.0.1:6379' }),
  /**
   * Redis Cluster (or Valkey cluster) seed nodes, `host:port` or `redis[s]://[user:password@]host:port` comma-separated
   * (checked by `parseClusterNodes`); set, the service runs on the cluster and REDIS_URL is not used. Empty: a single
   * Redis at REDIS_URL.
   */
  REDIS_CLUSTER_NODES: Type.String({ default: '' }),
  /**
   * Where availability reads go: `master` (exact), or `replica` (a replica of the item's slot, which lags its
   * master by the replication delay: README "Scaling"). Decisions always go to masters.
   */
  REDIS_READ_FROM: Type.Union([Type.Literal('master'), Type.Literal('replica')], { default: 'master' }),
  /** Prefix of every Redis key, so several deployments (or test runs) can share one Redis. */
  REDIS_KEY_PREFIX: Type.String({ default: 'irs:', pattern: '^[A-Za-z0-9:_.-]*$' }),
  /** Redis commands that take longer fail (the request answers 503) instead of hanging. */
  REDIS_COMMAND_TIMEOUT_MS: Type.Integer({ default: 2000, minimum: 10 }),
  /** PostgreSQL statements that take longer fail (503) instead of hanging. */
  DATABASE_QUERY_TIMEOUT_MS: Type.Integer({ default: 5000, minimum: 10 }),
  /** Group commit: most operations one PostgreSQL transaction records. */
  WRITER_MAX_BATCH: Type.Integer({ default: 500, minimum: 1 }),
  /**
   * Group commit: transactions in flight at once; further operations wait and join the next batch. One is
   * fastest on a hot SKU (bigger batches, no two batches queueing on its stock row): see bench/README.md.
   */
  WRITER_CONCURRENCY: Type.Integer({ default: 1, minimum: 1 }),
  /**
   * Most write requests a node holds at once, from before their Redis decision until their answer: beyond it new
   * reservations are refused at once with 503 and Retry-After, changing nothing; confirm, release and stock changes
   * beyond twice it. Bounds what is decided and not yet recorded when PostgreSQL falls behind; the default was
   * measured (bench/README.md, "Beyond saturation"). 0: no bound.
   */
  WRITER_MAX_QUEUE: Type.Integer({ default: 1000, minimum: 0 }),
  /** How long a request whose batch lost its connection waits to learn whether it committed (then 503, unknown). */
  WRITER_FATE_WAIT_MS: Type.Integer({ default: 10_000, minimum: 0 }),
  SWEEPER_INTERVAL_MS: Type.Integer({ default: 1000, minimum: 10 }),
  /** How long after its expiry an unrecorded confirm (its process died before the commit) is undone. */
  UNRECORDED_GRACE_MS: Type.Integer({ default: 30000, minimum: 0 }),
  /** How often one node compares Redis with PostgreSQL and drops orphaned holds; 0 disables. */
  RECONCILE_INTERVAL_MS: Type.Integer({ default: 60000, minimum: 0 }),
  /** The share of a periodic reconciliation pass's time spent reading, in percent: it sleeps the rest (100: flat out). */
  RECONCILE_DUTY_PERCENT: Type.Integer({ default: 25, minimum: 1, maximum: 100 }),
  /** A hold PostgreSQL never recorded is dropped by reconciliation once its reservation is this old. */
  ORPHAN_HOLD_AFTER_MS: Type.Integer({ default: 15000, minimum: 0 }),
  /** How long Redis keeps a finished hold's final state, to answer racing retries the same way. */
  TOMBSTONE_RETENTION_SECONDS: Type.Integer({ default: 120, minimum: 1 }),
  IDEMPOTENCY_RETENTION_HOURS: Type.Integer({ default: 24, minimum: 1 }),
  /**
   * Client credentials, `name:secret:role[:tenant]` comma-separated (role `client`: reservations and
   * availability, its own tenant's reservations only; `operator`: everything). Empty: no authentication.
   * Idempotency keys are scoped per credential name. The format is src/credentials.ts's (checked by loadConfig).
   */
  API_KEYS: Type.String({ default: '' }),
  /** Requests per credential (or per client IP without authentication) per window; 0: no rate limit. */
  RATE_LIMIT_MAX: Type.Integer({ default: 0, minimum: 0 }),
  RATE_LIMIT_WINDOW_MS: Type.Integer({ default: 1000, minimum: 1 }),
  SHUTDOWN_GRACE_MS: Type.Integer({ default: 10000, minimum: 0 }),
  /** The CloudEvents `source` of every event (a URI reference naming this deployment). */
  EVENTS_SOURCE: Type.String({ default: DEFAULT_EVENT_SOURCE, minLength: 1 }),
  /** How often committed events are given their feed position (src/jobs/event-sealer.ts): about their delay. */
  EVENTS_SEAL_INTERVAL_MS: Type.Integer({ default: 50, minimum: 1 }),
  // The event transports, each off until set (formats: src/events/settings.ts, checked by loadConfig).
  /** NATS server URL(s), comma-separated (`nats://[user:pass@ | token@]host:port`). */
  EVENTS_NATS_URL: Type.String({ default: '' }),
  /** The JetStream stream, created over `inventory.>` if missing. */
  EVENTS_NATS_STREAM: Type.String({ default: 'INVENTORY', pattern: '^[A-Za-z0-9_-]{1,255}$' }),
  /** Kafka bootstrap brokers, `host:port` comma-separated. */
  EVENTS_KAFKA_BROKERS: Type.String({ default: '' }),
  EVENTS_KAFKA_TOPIC: Type.String({ default: 'inventory-events', pattern: '^[A-Za-z0-9._-]{1,249}$' }),
  /** `true`: connect to the brokers over TLS, verifying their certificates (system CAs, or NODE_EXTRA_CA_CERTS). */
  EVENTS_KAFKA_TLS: Type.String({ default: 'false', pattern: '^(true|false)$' }),
  /** SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: none), with the username and password below. */
  EVENTS_KAFKA_SASL_MECHANISM: Type.String({ default: '', pattern: '^(|PLAIN|SCRAM-SHA-256|SCRAM-SHA-512)$' }),
  EVENTS_KAFKA_USERNAME: Type.String({ default: '' }),
  EVENTS_KAFKA_PASSWORD: Type.String({ default: '' }),
  /** Webhook endpoints (http:// or https://), comma-separated: each its own relay. */
  EVENTS_WEBHOOK_URLS: Type.String({ default: '' }),
  /** The Standard Webhooks signing secret, `whsec_` + base64 (required with EVENTS_WEBHOOK_URLS). */
  EVENTS_WEBHOOK_SECRET: Type.String({ default: '' }),
  /** Events older than this, once every configured transport delivered them, are pruned. */
  EVENTS_RETENTION_HOURS: Type.Integer({ default: 168, minimum: 1 }),
});

export type Config = Static<typeof ConfigSchema>;

/**
 * What a connection URL must be: its schemes, whether it must name a database (PostgreSQL's path), and whether it
 * may be left empty (off).
 */
const URL_RULES = {
  DATABASE_URL: { schemes: ['postgres:', 'postgresql:'], database: true, optional: false },
  DATABASE_REPLICA_URL: { schemes: ['postgres:', 'postgresql:'], database: true, optional: true },
  REDIS_URL: { schemes: ['redis:', 'rediss:'], database: false, optional: false },
} as const;

const DEFAULT_PORTS: Record<string, number> = { 'postgres:': 5432, 'postgresql:': 5432, 'redis:': 6379, 'rediss:': 6379 };

/** The problem with a connection URL, or null. The URL is shown with its password masked. */
export function checkUrl(variable: keyof typeof URL_RULES, value: string): string | null {
  const rule = URL_RULES[variable];
  if (value === '' && rule.optional) return null;
  const shown = `(got ${maskCredentials(value)})`;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return `${variable} is not a valid URL ${shown}`;
  }
  if (!(rule.schemes as readonly string[]).includes(url.protocol)) {
    return `${variable} must start with ${rule.schemes.map((s) => `${s}//`).join(' or ')} ${shown}`;
  }
  // libpq-style URLs may name a Unix socket directory as ?host=… instead.
  if (url.hostname === '' && !(rule.database && url.searchParams.get('host'))) return `${variable} names no host ${shown}`;
  if (rule.database && (url.pathname === '' || url.pathname === '/')) return `${variable} names no database (…/name) ${shown}`;
  return null;
}

/** REDIS_CLUSTER_NODES, read: its seed nodes (none: a single Redis), and how every node is to be connected to. */
export interface ClusterNodes {
  nodes: { host: string; port: number }[];
  /**
   * ioredis' options for every node, from the entries written as URLs (they must agree): the credentials of
   * `redis://user:password@host:port`, and TLS (`tls: {}`: the system's certificate authorities and
   * NODE_EXTRA_CA_CERTS') for `rediss://`. Empty: plain TCP, no credentials.
   */
  nodeOptions: { username?: string; password?: string; tls?: Record<string, never> };
  problems: string[];
}

/**
 * The seed nodes of REDIS_CLUSTER_NODES, and what is wrong with the value. An entry is `host:port`, or a
 * `redis://` or `rediss://` URL naming the credentials (ACL user and password, or a password alone) and whether to
 * use TLS: that applies to every node of the cluster, the nodes the client finds by itself included.
 */
export function parseClusterNodes(value: string): ClusterNodes {
  const result: ClusterNodes = { nodes: [], nodeOptions: {}, problems: [] };
  if (value.trim() === '') return result;
  const named = new Set<string>();
  for (const entry of value.split(',').map((e) => e.trim())) {
    let address = entry;
    const url = /^rediss?:\/\//.test(entry) && URL.canParse(entry) ? new URL(entry) : null;
    if (url && (url.pathname === '' || url.pathname === '/') && !url.search) {
      address = url.host;
      const options = {
        ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
        ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
        ...(url.protocol === 'rediss:' ? { tls: {} } : {}),
      };
      named.add(JSON.stringify(options));
      result.nodeOptions = options;
    }
    const match = /^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})$/.exec(address);
    const port = Number(match?.[2]);
    if (!match || port < 1 || port > 65535) {
      result.problems.push(
        `REDIS_CLUSTER_NODES must be host:port or redis[s]://[user:password@]host:port entries separated by commas (got ${JSON.stringify(maskCredentials(entry))})`,
      );
      continue;
    }
    result.nodes.push({ host: match[1]!.replace(/^\[|\]$/g, ''), port });
  }
  if (named.size > 1) result.problems.push('REDIS_CLUSTER_NODES: its URL entries differ in credentials or TLS (one setting serves every node)');
  return result;
}

/** Where log lines say Redis is: the cluster's seed nodes, or REDIS_URL's `host:port`. */
export const redisAddress = (config: Pick<Config, 'REDIS_URL' | 'REDIS_CLUSTER_NODES'>): string =>
  config.REDIS_CLUSTER_NODES ? `cluster ${parseClusterNodes(config.REDIS_CLUSTER_NODES).nodes.map((n) => `${n.host}:${n.port}`).join(',')}` : addressOf(config.REDIS_URL);

/** `host:port` of a connection URL (never its credentials), for log lines; PostgreSQL's with `/database`. */
export function addressOf(value: string): string {
  const url = new URL(value);
  const host = url.hostname || url.searchParams.get('host') || 'localhost';
  const address = `${host}:${url.port || DEFAULT_PORTS[url.protocol] || ''}`;
  return URL_RULES.DATABASE_URL.schemes.some((s) => s === url.protocol) ? `${address}${url.pathname}` : address;
}

/**
 * Reads and validates `env` (the process environment by default, and then nothing else: a test's or a tool's own
 * `env` is not mixed with the caller's shell); throws one error naming every bad variable, never quoting a secret.
 */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  let config: Config | undefined;
  const problems: string[] = [];
  try {
    config = envSchema<Config>({ schema: ConfigSchema, data: env, env: false });
  } catch (err) {
    problems.push((err as Error).message);
  }
  const value = (name: keyof typeof URL_RULES | 'API_KEYS' | keyof TransportVariables) =>
    config?.[name] ?? env[name] ?? String((ConfigSchema.properties[name] as { default?: unknown }).default);
  for (const name of Object.keys(URL_RULES) as (keyof typeof URL_RULES)[]) {
    const problem = checkUrl(name, value(name));
    if (problem) problems.push(problem);
  }
  problems.push(...parseClusterNodes(config?.REDIS_CLUSTER_NODES ?? env.REDIS_CLUSTER_NODES ?? '').problems);
  if ((config?.REDIS_READ_FROM ?? env.REDIS_READ_FROM) === 'replica' && !(config?.REDIS_CLUSTER_NODES ?? env.REDIS_CLUSTER_NODES)) {
    problems.push('REDIS_READ_FROM=replica needs REDIS_CLUSTER_NODES (the replicas are found through the cluster)');
  }
  problems.push(...parseApiKeys(value('API_KEYS')).problems);
  const transports = Object.fromEntries(TRANSPORT_VARIABLES.map((name) => [name, value(name)])) as TransportVariables;
  problems.push(...parseTransports(transports).problems);
  if (problems.length > 0 || !config) throw new Error(problems.join('; '));
  return config;
}
