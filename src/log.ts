import type { FastifyBaseLogger } from 'fastify';
import { stdSerializers, type Bindings, type ChildLoggerOptions, type LogFn, type LoggerOptions } from 'pino';

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

/**
 * Fastify's logger of one request (`childLoggerFactory`), made when the request first logs. pino makes a child by
 * running its bindings (the request id) through every redaction path, which cost a request about 5 µs and its
 * allocations (issue 15: `@pinojs/redact` 1.6 % of a Redis-only flash sale's profile); a request on the hot path
 * logs nothing.
 */
export const childOnFirstLog = (logger: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions): FastifyBaseLogger =>
  new ChildOnFirstLog(logger, bindings, options);

class ChildOnFirstLog implements FastifyBaseLogger {
  private made: FastifyBaseLogger | undefined;

  constructor(
    private readonly parent: FastifyBaseLogger,
    private readonly bindings: Bindings,
    private readonly options: ChildLoggerOptions,
  ) {}

  private get logger(): FastifyBaseLogger {
    return (this.made ??= this.parent.child(this.bindings, this.options));
  }

  get level(): string {
    return this.made?.level ?? this.options.level ?? this.parent.level;
  }

  set level(level: string) {
    this.logger.level = level;
  }

  fatal(...args: Parameters<LogFn>): void {
    this.logger.fatal(...args);
  }

  error(...args: Parameters<LogFn>): void {
    this.logger.error(...args);
  }

  warn(...args: Parameters<LogFn>): void {
    this.logger.warn(...args);
  }

  info(...args: Parameters<LogFn>): void {
    this.logger.info(...args);
  }

  debug(...args: Parameters<LogFn>): void {
    this.logger.debug(...args);
  }

  trace(...args: Parameters<LogFn>): void {
    this.logger.trace(...args);
  }

  silent(...args: Parameters<LogFn>): void {
    this.logger.silent(...args);
  }

  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.logger.child(bindings, options);
  }
}
