import { stdSerializers, type LoggerOptions } from 'pino';

/**
 * The one logger configuration (server.ts's pino and Fastify's logger in buildApp): no secret reaches a log line.
 * Secrets sit in known places (the Authorization header, passwords, the configuration's URLs and API keys, the
 * `input` a failed `new URL` keeps), which `redact` blanks; and inside free text (an error's message or stack
 * quoting a connection URL), which the masking below rewrites.
 */

/**
 * `scheme://user:password@`: everything up to the last `@` of the token is user information (a host has no `@`),
 * so a malformed URL (`postgres://u:pa/ss@[bad`) is masked as well as a valid one.
 */
const URL_CREDENTIALS = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s@:/]*):\S*@/gi;
/** `?password=…` / `&password=…`, which libpq-style URLs accept. */
const QUERY_PASSWORD = /([?&;](?:password|passwd|pwd|pass)=)[^\s&]*/gi;

export const MASK = '***';

/** The text with every URL password replaced by `***` (the user name stays: it helps and is not secret). */
export function maskCredentials(text: string): string {
  return text.replace(URL_CREDENTIALS, `$1$2:${MASK}@`).replace(QUERY_PASSWORD, `$1${MASK}`);
}

function maskDeep(value: unknown, seen: WeakSet<object>): unknown {
  if (typeof value === 'string') return maskCredentials(value);
  if (value === null || typeof value !== 'object' || seen.has(value)) return value;
  seen.add(value);
  if (Array.isArray(value)) return value.map((v) => maskDeep(v, seen));
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, maskDeep(v, seen)]));
}

/** pino's error serializer, then every string in it (message, stack, input, causes) masked. */
export function serializeError(err: unknown): unknown {
  if (!(err instanceof Error)) return maskDeep(err, new WeakSet());
  return maskDeep(stdSerializers.err(err), new WeakSet());
}

/** Where a secret can sit in a logged object: blanked whatever its shape. */
export const REDACT_PATHS = [
  'authorization',
  '*.authorization',
  '*.headers.authorization',
  'password',
  '*.password',
  '*.*.password',
  'input',
  'err.input',
  'err.cause.input',
  'error.input',
  'DATABASE_URL',
  'DATABASE_REPLICA_URL',
  'REDIS_URL',
  'API_KEYS',
  '*.DATABASE_URL',
  '*.DATABASE_REPLICA_URL',
  '*.REDIS_URL',
  '*.API_KEYS',
  'connectionString',
  '*.connectionString',
  // The event transports' (src/events/settings.ts): a NATS URL's credentials, webhook URLs (often a capability), the secret.
  'EVENTS_NATS_URL',
  'EVENTS_WEBHOOK_URLS',
  'EVENTS_WEBHOOK_SECRET',
  'EVENTS_KAFKA_PASSWORD',
  '*.EVENTS_NATS_URL',
  '*.EVENTS_WEBHOOK_URLS',
  '*.EVENTS_WEBHOOK_SECRET',
  '*.EVENTS_KAFKA_PASSWORD',
];

export function logOptions(level: string): LoggerOptions {
  return {
    level,
    redact: { paths: REDACT_PATHS, censor: '[Redacted]' },
    serializers: { err: serializeError, error: serializeError },
    hooks: {
      // Free text a caller logs (a message quoting a URL) is masked like an error's. An error logged alone
      // lends pino its message as `msg`, past the serializer: that message is masked here too.
      logMethod(args, method) {
        const [first, ...rest] = args as unknown[];
        const masked =
          first instanceof Error && typeof rest[0] !== 'string'
            ? [{ err: first }, maskCredentials(first.message), ...rest]
            : args.map((a: unknown) => (typeof a === 'string' ? maskCredentials(a) : a));
        method.apply(this, masked as Parameters<typeof method>);
      },
    },
  };
}
