import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, expect } from 'vitest';
import { errorCatalogue, type ErrorCode, type FieldError, type ShortLine } from '../../src/domain/errors.js';
import type { AvailabilityDocument, ReservationDocument } from '../../src/domain/schemas.js';
import { scanTargets } from '../../src/redis/client.js';
import { newKey, startTestApp, type TestApp } from './app.js';
import { startRedis, type RedisServer } from './redis-server.js';
import { waitFor } from './wait.js';

/**
 * The one HTTP client of the tests: the service's contract (api.md) as typed calls, each answering an `Answer`,
 * and the assertions on those answers. Requests go through `app.inject` (no socket), or over real sockets for the
 * tests whose point is many connections at once (`Api.listen`) or a real process (`Api.at`). Raw bytes on a
 * socket, for what neither can show (Node's parser, URLs as sent), are test/helpers/raw-http.ts.
 */

/** One HTTP answer, however it was sent. Header names are lower case; a repeated header is joined with ", ". */
export interface Answer {
  status: number;
  headers: Record<string, string>;
  /** The parsed JSON body, or undefined when the body was empty or not JSON. */
  body: unknown;
  /** The body as sent. */
  text: string;
}

/**
 * A request as `app.inject` takes it: a `payload` that is an object (or any other truthy non-string) is sent as
 * JSON with `content-type: application/json` unless `headers` say otherwise; a string or Buffer is sent as is.
 */
export interface Request {
  method: string;
  url: string;
  headers?: Record<string, string>;
  payload?: unknown;
}

type Transport = (req: Request) => Promise<Answer>;

/** The parsed JSON of a body, or undefined when it is empty or not JSON. */
export function parseJson(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function injectTransport(appOf: () => FastifyInstance): Transport {
  return async ({ method, url, headers, payload }) => {
    const res = await appOf().inject({
      method: method as 'GET',
      url,
      ...(headers ? { headers } : {}),
      ...(payload !== undefined ? { payload: payload as string } : {}),
    });
    const out: Record<string, string> = {};
    for (const [name, value] of Object.entries(res.headers)) {
      if (value !== undefined) out[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : String(value);
    }
    return { status: res.statusCode, headers: out, body: parseJson(res.body), text: res.body };
  };
}

/** Real sockets through Node's fetch (undici: its default agent opens as many connections as requests need). */
function socketTransport(baseUrl: string): Transport {
  return async ({ method, url, headers = {}, payload }) => {
    // Encoded as app.inject encodes it, so a test means the same request whichever way it is sent.
    const raw = typeof payload === 'string' || Buffer.isBuffer(payload);
    const body = !payload ? undefined : typeof payload === 'string' ? payload : Buffer.isBuffer(payload) ? new Uint8Array(payload) : JSON.stringify(payload);
    const type = body !== undefined && !raw && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type');
    const res = await fetch(`${baseUrl}${url}`, {
      method,
      headers: { ...(type ? { 'content-type': 'application/json' } : {}), ...headers },
      body,
    });
    const text = await res.text();
    const out: Record<string, string> = {};
    res.headers.forEach((value, name) => {
      out[name.toLowerCase()] = value;
    });
    return { status: res.status, headers: out, body: parseJson(text), text };
  };
}

/** A body of POST /reservations as the tests write it (`reserve` takes anything, to test rejections). */
export interface ReserveBody {
  lines: { itemId: string; quantity: number; location?: string }[];
  ttlSeconds?: number;
  reference?: string;
  metadata?: Record<string, string>;
  priority?: 'normal' | 'high';
  allocation?: { strategy: string; locations?: string[]; split?: boolean };
}

/** Figures of one location, `{ onHand, reserved, available }`, as an availability document reports them. */
export type Figures = Pick<AvailabilityDocument, 'onHand' | 'reserved' | 'available'>;

/** The contract's calls; each returns the answer as it came (assertions stay in the tests), but for the shortcuts below. */
export class Api {
  private constructor(private readonly transport: Transport) {}

  /** Through `app.inject`. `app` may be a getter, read at each call: `useHttpApp` starts the app after its file took the client. */
  static inject(app: FastifyInstance | (() => FastifyInstance)): Api {
    return new Api(injectTransport(typeof app === 'function' ? app : () => app));
  }

  /** Starts `app` on a free 127.0.0.1 port and talks to it over real sockets: real connections, real concurrency. */
  static async listen(app: FastifyInstance): Promise<Api> {
    return Api.at(await app.listen({ host: '127.0.0.1', port: 0 }));
  }

  /** Over real sockets to a server listening at `baseUrl` (a process a test spawned). A refused connection rejects. */
  static at(baseUrl: string): Api {
    return new Api(socketTransport(baseUrl));
  }

  /** Any request (a method, a header or a body the calls below would not send). */
  request(req: Request): Promise<Answer> {
    return this.transport(req);
  }

  putStock(itemId: string, body: unknown): Promise<Answer> {
    return this.transport({ method: 'PUT', url: `/items/${itemId}/stock`, payload: body });
  }

  adjust(itemId: string, body: unknown): Promise<Answer> {
    return this.transport({ method: 'POST', url: `/items/${itemId}/stock/adjustments`, payload: body });
  }

  availability(itemId: string): Promise<Answer> {
    return this.transport({ method: 'GET', url: `/items/${itemId}/availability` });
  }

  /** POST /reservations with a fresh key unless one is given (null: none); `body` may be anything, to test rejections. */
  reserve(body: unknown, key: string | null = newKey()): Promise<Answer> {
    return this.transport({
      method: 'POST',
      url: '/reservations',
      headers: key === null ? {} : { 'idempotency-key': key },
      payload: body,
    });
  }

  /** POST /reservations with a raw JSON text, to control its bytes (key order, whitespace). */
  reserveRaw(json: string, key: string = newKey(), contentType = 'application/json'): Promise<Answer> {
    return this.transport({
      method: 'POST',
      url: '/reservations',
      headers: { 'idempotency-key': key, 'content-type': contentType },
      payload: json,
    });
  }

  get(id: string): Promise<Answer> {
    return this.transport({ method: 'GET', url: `/reservations/${id}` });
  }

  /**
   * `ifMatch`: the If-Match header's value, sent as given (to test malformed ones too). `body`: a partial confirm's
   * (anything, to test rejections); none when undefined.
   */
  confirm(id: string, ifMatch?: string, body?: unknown): Promise<Answer> {
    return this.transport({
      method: 'POST',
      url: `/reservations/${id}/confirm`,
      headers: ifMatchHeader(ifMatch),
      ...(body === undefined ? {} : { payload: body }),
    });
  }

  release(id: string, ifMatch?: string): Promise<Answer> {
    return this.transport({ method: 'POST', url: `/reservations/${id}/release`, headers: ifMatchHeader(ifMatch) });
  }

  /** POST /reservations/{id}/extend; `body` may be anything, to test rejections. */
  extend(id: string, body: unknown, ifMatch?: string): Promise<Answer> {
    return this.transport({ method: 'POST', url: `/reservations/${id}/extend`, headers: ifMatchHeader(ifMatch), payload: body });
  }

  /** GET /reservations?… with the query as given (a string, to test malformed ones; or its parameters, encoded). */
  listByReference(query: string | Record<string, string | number>): Promise<Answer> {
    const qs = typeof query === 'string' ? query : new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)])).toString();
    return this.transport({ method: 'GET', url: `/reservations${qs === '' ? '' : `?${qs}`}` });
  }

  /** POST /reservations/release; `body` may be anything, to test rejections. */
  releaseByReference(body: unknown): Promise<Answer> {
    return this.transport({ method: 'POST', url: '/reservations/release', payload: body });
  }

  ready(): Promise<Answer> {
    return this.transport({ method: 'GET', url: '/health/ready' });
  }

  /** PUT stock that must succeed. */
  async stock(itemId: string, quantity: number, location?: string): Promise<AvailabilityDocument> {
    return expectAvailability(await this.putStock(itemId, location === undefined ? { quantity } : { quantity, location }));
  }

  /** PUT stock with a safety stock, that must succeed. */
  async safety(itemId: string, quantity: number, safetyStock: number, location?: string): Promise<AvailabilityDocument> {
    return expectAvailability(await this.putStock(itemId, location === undefined ? { quantity, safetyStock } : { quantity, safetyStock, location }));
  }

  /** Availability that must be 200. */
  async figures(itemId: string): Promise<AvailabilityDocument> {
    return expectAvailability(await this.availability(itemId));
  }

  /** Figures of one location (asserting it is listed). */
  async at(itemId: string, location = 'default'): Promise<Figures> {
    const doc = await this.figures(itemId);
    const l = doc.locations.find((x) => x.location === location);
    expect(l, `${itemId} lists ${location}`).toBeDefined();
    return { onHand: l!.onHand, reserved: l!.reserved, available: l!.available };
  }

  /** A reservation that must be created. */
  async hold(body: ReserveBody, key?: string): Promise<ReservationDocument> {
    return expectReservation(await this.reserve(body, key), 201);
  }
}

const ifMatchHeader = (value: string | undefined): Record<string, string> => (value === undefined ? {} : { 'if-match': value });

/** Waits until GET /health/ready answers 200 (Redis and PostgreSQL reachable, Redis state built). */
export async function waitReady(app: FastifyInstance, timeoutMs = 15_000): Promise<void> {
  const api = Api.inject(app);
  let last: Answer | undefined;
  await waitFor(
    'the app to be ready',
    async () => ((last = await api.ready()).status === 200 ? true : undefined),
    { timeoutMs },
  ).catch((err: Error) => {
    throw new Error(`${err.message}; last answer: ${last ? `${last.status} ${last.text}` : 'none'}`);
  });
}

/**
 * `startTestApp()`, serving: a fresh key prefix has no generation marker, so the node rebuilds Redis from
 * PostgreSQL first and answers 503 until that is done (api.md, "Operations").
 */
export async function startHttpApp(overrides: Record<string, string | number> = {}): Promise<TestApp> {
  const test = await startTestApp(overrides);
  try {
    await waitReady(test.app);
  } catch (err) {
    await test.close();
    throw err;
  }
  return test;
}

/** This file's app, serving, and its client; `t` is filled in by `beforeAll`, since the app exists only once that has run. */
export function useHttpApp(overrides: Record<string, string | number> = {}): { t: TestApp; api: Api } {
  const t = {} as TestApp;
  beforeAll(async () => {
    Object.assign(t, await startHttpApp(overrides));
  });
  afterAll(() => t.close());
  return { t, api: Api.inject(() => t.app) };
}

/**
 * This file's app, serving, on a private redis-server of its own (to kill, restart or snapshot), and its client; both
 * are filled in by `beforeAll`. `connectAs` may prepare the server (an ACL user) and name the URL the app uses. The
 * app is closed before its Redis is killed.
 */
export function useHttpAppOnPrivateRedis(
  overrides: Record<string, string | number> = {},
  connectAs: (redis: RedisServer) => Promise<string> = async (redis) => redis.url,
): { redis: RedisServer; t: TestApp; api: Api } {
  const redis = {} as RedisServer;
  const t = {} as TestApp;
  beforeAll(async () => {
    Object.assign(redis, await startRedis());
    Object.assign(t, await startHttpApp({ ...overrides, REDIS_URL: await connectAs(redis) }));
  }, 60_000);
  afterAll(async () => {
    await t.close?.();
    await redis.kill9?.();
  });
  return { redis, t, api: Api.inject(() => t.app) };
}

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  code: ErrorCode;
  detail?: string;
  errors?: FieldError[];
  lines?: ShortLine[];
  checks?: Record<string, string>;
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

const PROBLEM_MEMBERS = ['type', 'title', 'status', 'code', 'detail', 'errors', 'lines', 'checks'];

/** Asserts an RFC 9457 problem with the catalogue's status and title for `code`, and returns its body. */
export function expectProblem(res: Answer, code: ErrorCode): ProblemBody {
  const { status, title } = errorCatalogue[code];
  expect({ status: res.status, body: res.text }).toMatchObject({ status });
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json(;|$)/);
  const body = JSON.parse(res.text) as ProblemBody;
  expect(body).toMatchObject({ type: 'about:blank', title, status, code });
  for (const member of Object.keys(body)) expect(PROBLEM_MEMBERS).toContain(member);
  if ('detail' in body) expect(typeof body.detail).toBe('string');
  for (const e of body.errors ?? []) expect(Object.keys(e).sort()).toEqual(['field', 'message']);
  return body;
}

/** Asserts a `400 validation_failed` and returns the fields its `errors` names. */
export function expectInvalid(res: Answer): string[] {
  const body = expectProblem(res, 'validation_failed');
  expect(Array.isArray(body.errors) && body.errors.length > 0).toBe(true);
  for (const e of body.errors!) {
    expect(typeof e.field).toBe('string');
    expect(e.message.length).toBeGreaterThan(0);
  }
  return body.errors!.map((e) => e.field);
}

/** Asserts a 400 whose `errors` name exactly `fields` (each once at least, in any order). */
export function expectInvalidFields(res: Answer, ...fields: string[]): void {
  expect([...new Set(expectInvalid(res))].sort()).toEqual([...new Set(fields)].sort());
}

export const ISO_MS_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

const RESERVATION_MEMBERS = ['allocation', 'createdAt', 'expiresAt', 'id', 'lines', 'metadata', 'priority', 'reference', 'status', 'updatedAt', 'version'];

/** Asserts the exact shape of an answer whose body is one reservation document, its ETag too, and returns it. */
export function expectReservation(res: Answer, statusCode: number): ReservationDocument {
  expect({ status: res.status, body: res.text }).toMatchObject({ status: statusCode });
  expect(res.headers['content-type']).toMatch(/^application\/json(;|$)/);
  const doc = expectDocument(JSON.parse(res.text));
  // The ETag names the version (api.md, "Versions").
  expect(res.headers['etag']).toBe(`"${doc.version}"`);
  return doc;
}

/** Asserts the exact shape of one reservation document (alone or in a list) and returns it. */
export function expectDocument(value: unknown): ReservationDocument {
  const doc = value as ReservationDocument;
  expect(Object.keys(doc).sort()).toEqual(RESERVATION_MEMBERS);
  expect(typeof doc.id).toBe('string');
  expect(doc.id.length).toBeGreaterThan(0);
  expect(['pending', 'confirmed', 'released', 'expired']).toContain(doc.status);
  for (const t of [doc.createdAt, doc.updatedAt, doc.expiresAt]) expect(t).toMatch(ISO_MS_UTC);
  // `confirmedQuantity` on every line of a partly confirmed reservation (api.md, "Partial confirm"), else on none.
  const partly = doc.lines.some((line) => 'confirmedQuantity' in line);
  for (const line of doc.lines) {
    expect(Object.keys(line).sort()).toEqual(partly ? ['confirmedQuantity', 'itemId', 'location', 'quantity'] : ['itemId', 'location', 'quantity']);
    if (partly) expect(Number.isInteger(line.confirmedQuantity) && line.confirmedQuantity! >= 0 && line.confirmedQuantity! <= line.quantity).toBe(true);
  }
  if (partly) expect(doc.status).toBe('confirmed');
  expect(doc.reference === null || typeof doc.reference === 'string').toBe(true);
  expect(doc.metadata !== null && typeof doc.metadata === 'object' && !Array.isArray(doc.metadata)).toBe(true);
  expect(['normal', 'high']).toContain(doc.priority);
  // The version is the document's last member.
  expect(Object.keys(doc).at(-1)).toBe('version');
  expect(Number.isInteger(doc.version) && doc.version >= 1, `version ${doc.version}`).toBe(true);
  return doc;
}

const FIGURES = ['onHand', 'reserved', 'safetyStock', 'available', 'availableHighPriority'] as const;

/** A page of `GET /reservations?reference=…`, asserting its shape and each document's. */
export function expectPage(res: Answer): { items: ReservationDocument[]; nextCursor: string | null } {
  expect({ status: res.status, body: res.text }).toMatchObject({ status: 200 });
  const page = JSON.parse(res.text) as { items: unknown[]; nextCursor: string | null };
  expect(Object.keys(page).sort()).toEqual(['items', 'nextCursor']);
  expect(page.nextCursor === null || typeof page.nextCursor === 'string').toBe(true);
  const items = page.items.map(expectDocument);
  return { items, nextCursor: page.nextCursor };
}

/** The answer of `POST /reservations/release`, asserting its shape and each document's. */
export function expectReleased(res: Answer): { reference: string; items: ReservationDocument[] } {
  expect({ status: res.status, body: res.text }).toMatchObject({ status: 200 });
  const body = JSON.parse(res.text) as { reference: string; items: unknown[] };
  expect(Object.keys(body).sort()).toEqual(['items', 'reference']);
  const items = body.items.map(expectDocument);
  return { reference: body.reference, items };
}

/**
 * Asserts the exact shape of an availability document (its members in the contract's order), and that its sums and
 * `available` figures add up.
 */
export function expectAvailability(res: Answer): AvailabilityDocument {
  expect({ status: res.status, body: res.text }).toMatchObject({ status: 200 });
  expect(res.headers['content-type']).toMatch(/^application\/json(;|$)/);
  const doc = JSON.parse(res.text) as AvailabilityDocument;
  expect(Object.keys(doc)).toEqual(['itemId', ...FIGURES, 'locations']);
  for (const l of doc.locations) {
    expect(Object.keys(l)).toEqual(['location', ...FIGURES]);
    expect(l.safetyStock).toBeGreaterThanOrEqual(0);
    expect(l.available).toBe(Math.max(0, l.onHand - l.reserved - l.safetyStock));
    expect(l.availableHighPriority).toBe(Math.max(0, l.onHand - l.reserved));
  }
  const names = doc.locations.map((l) => l.location);
  expect(names).toEqual([...names].sort());
  for (const k of FIGURES) expect(doc[k], `${k} is the sum of the locations'`).toBe(doc.locations.reduce((t, l) => t + l[k], 0));
  return doc;
}

/**
 * Deletes every Redis key of the app's prefix, generation marker included: Redis "lost its state". One DEL for
 * all of them, so a rebuild (which starts once the marker is gone) never interleaves with the wipe.
 */
export async function wipeRedisState(app: FastifyInstance): Promise<number> {
  const { redis, keys } = app.runtime;
  const all: string[] = [];
  for (const server of scanTargets(redis)) {
    const stream = server.scanStream({ match: `${keys.prefix}*`, count: 1000 });
    for await (const batch of stream as AsyncIterable<string[]>) all.push(...batch);
  }
  if (all.length === 0) return 0;
  if (!keys.cluster) return redis.del(...all);
  // A cluster deletes key by key (one slot a command): the rebuild lock, taken first, keeps a rebuild from starting
  // while the wipe is under way; it is dropped last.
  await redis.set(keys.rebuildLock, 'wipe', 'PX', 30_000);
  const deleted = await Promise.all(all.filter((key) => key !== keys.rebuildLock).map((key) => redis.del(key)));
  await redis.del(keys.rebuildLock);
  return deleted.reduce((a, b) => a + b, 0);
}

export const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** An identifier of exactly `length` characters of the contract's alphabet, unique per call. */
export function idOfLength(length: number, prefix: string): string {
  const unique = `${prefix}-${Math.random().toString(36).slice(2, 10)}`;
  return (unique + 'x'.repeat(length)).slice(0, length);
}
