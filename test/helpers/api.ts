import type { FastifyInstance } from 'fastify';
import type { AvailabilityDocument, ReservationDocument, ReservationRequest } from '../../src/domain/schemas.js';

/** One HTTP answer, whichever way it was sent (a real socket or `app.inject`). Header names are lower case. */
export interface Answer {
  status: number;
  headers: Record<string, string>;
  /** The parsed JSON body, or undefined when the body was empty or not JSON. */
  body: unknown;
  text: string;
}

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  code: string;
  detail?: string;
  lines?: { itemId: string; location: string; requested: number; available: number }[];
  errors?: { field: string; message: string }[];
  checks?: Record<string, string>;
}

export interface Transport {
  send(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Answer>;
}

function parse(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** `body` given as a string is sent verbatim (to test key order and whitespace); anything else as JSON. */
const encode = (body: unknown): string | undefined =>
  body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);

/** Real HTTP through Node's global fetch (undici: its default agent opens as many connections as requests need). */
export function httpTransport(baseUrl: string): Transport {
  return {
    async send(method, path, body, headers = {}) {
      const payload = encode(body);
      const res = await fetch(`${baseUrl}${path}`, {
        method,
        headers: { ...(payload !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
        body: payload,
      });
      const text = await res.text();
      const out: Record<string, string> = {};
      res.headers.forEach((value, name) => {
        out[name.toLowerCase()] = value;
      });
      return { status: res.status, headers: out, body: parse(text), text };
    },
  };
}

export function injectTransport(app: FastifyInstance): Transport {
  return {
    async send(method, path, body, headers = {}) {
      const payload = encode(body);
      const res = await app.inject({
        method: method as 'GET',
        url: path,
        headers: { ...(payload !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
        ...(payload !== undefined ? { payload } : {}),
      });
      const out: Record<string, string> = {};
      for (const [name, value] of Object.entries(res.headers)) {
        if (value !== undefined) out[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : String(value);
      }
      return { status: res.statusCode, headers: out, body: parse(res.body), text: res.body };
    },
  };
}

/** The service's HTTP contract (api.md) as typed calls. */
export class Api {
  constructor(readonly transport: Transport) {}

  static http(baseUrl: string): Api {
    return new Api(httpTransport(baseUrl));
  }

  static inject(app: FastifyInstance): Api {
    return new Api(injectTransport(app));
  }

  setStock(itemId: string, quantity: number, location?: string): Promise<Answer> {
    return this.transport.send('PUT', `/items/${itemId}/stock`, { quantity, ...(location ? { location } : {}) });
  }

  adjust(itemId: string, delta: number, location?: string, reason?: string): Promise<Answer> {
    return this.transport.send('POST', `/items/${itemId}/stock/adjustments`, {
      delta,
      ...(location ? { location } : {}),
      ...(reason ? { reason } : {}),
    });
  }

  availability(itemId: string): Promise<Answer> {
    return this.transport.send('GET', `/items/${itemId}/availability`);
  }

  /** `body` may be a raw JSON string (sent verbatim). */
  reserve(key: string, body: ReservationRequest | string): Promise<Answer> {
    return this.transport.send('POST', '/reservations', body, { 'idempotency-key': key });
  }

  get(id: string): Promise<Answer> {
    return this.transport.send('GET', `/reservations/${id}`);
  }

  confirm(id: string): Promise<Answer> {
    return this.transport.send('POST', `/reservations/${id}/confirm`);
  }

  release(id: string): Promise<Answer> {
    return this.transport.send('POST', `/reservations/${id}/release`);
  }

  ready(): Promise<Answer> {
    return this.transport.send('GET', '/health/ready');
  }
}

export const reservationOf = (a: Answer): ReservationDocument => a.body as ReservationDocument;
export const availabilityOf = (a: Answer): AvailabilityDocument => a.body as AvailabilityDocument;
export const problemOf = (a: Answer): ProblemBody => a.body as ProblemBody;

/** "201", "409 insufficient_stock": what a test tallies and what a failure message shows. */
export function outcome(a: Answer): string {
  if (a.status < 400) return String(a.status);
  const code = (a.body as Partial<ProblemBody> | undefined)?.code;
  return `${a.status} ${code ?? '?'}`;
}

export function tally(answers: readonly Answer[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const a of answers) counts[outcome(a)] = (counts[outcome(a)] ?? 0) + 1;
  return counts;
}

/** Listens on an ephemeral 127.0.0.1 port (real sockets, real concurrency); returns the base URL. */
export async function listen(app: FastifyInstance): Promise<string> {
  return app.listen({ host: '127.0.0.1', port: 0 });
}

/** Polls `probe` until it returns a value other than undefined; fails with `what` after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  { timeoutMs = 10_000, intervalMs = 25 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const reason = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${reason}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Waits until GET /health/ready answers 200 (Redis and PostgreSQL reachable, Redis state built). */
export async function waitReady(app: FastifyInstance, timeoutMs = 15_000): Promise<void> {
  const api = Api.inject(app);
  await waitFor('the app to be ready', async () => ((await api.ready()).status === 200 ? true : undefined), { timeoutMs });
}

/** Resolves once the wall clock reaches `epochMs` (an event in time, not a guessed delay). */
export async function untilTime(epochMs: number): Promise<void> {
  for (;;) {
    const left = epochMs - Date.now();
    if (left <= 0) return;
    await new Promise((resolve) => setTimeout(resolve, left));
  }
}

/**
 * Deletes every Redis key of the app's prefix, generation marker included: Redis "lost its state". One DEL for
 * all of them, so a rebuild (which starts once the marker is gone) never interleaves with the wipe.
 */
export async function wipeRedisState(app: FastifyInstance): Promise<number> {
  const { redis, keys } = app.runtime;
  const all: string[] = [];
  const stream = redis.scanStream({ match: `${keys.prefix}*`, count: 1000 });
  for await (const batch of stream as AsyncIterable<string[]>) all.push(...batch);
  return all.length > 0 ? redis.del(...all) : 0;
}

export const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
