import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect } from 'vitest';
import { errorCatalogue, type ErrorCode, type FieldError, type ShortLine } from '../../src/domain/errors.js';
import type { AvailabilityDocument, ReservationDocument } from '../../src/domain/schemas.js';
import { newKey, startTestApp, type TestApp } from './app.js';

/** An injected request's answer. */
export type Response = LightMyRequestResponse;

/**
 * `startTestApp()`, and makes sure the node serves: a fresh key prefix has no generation marker, so the node
 * rebuilds Redis from PostgreSQL first and answers 503 until that is done (api.md, "Operations").
 */
export async function startHttpApp(overrides: Record<string, string | number> = {}): Promise<TestApp> {
  const test = await startTestApp(overrides);
  await test.app.runtime.recovery.ensure();
  const ready = await test.app.inject({ method: 'GET', url: '/health/ready' });
  if (ready.statusCode !== 200) throw new Error(`test app not ready: ${ready.statusCode} ${ready.body}`);
  return test;
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

const PROBLEM_MEMBERS = ['type', 'title', 'status', 'code', 'detail', 'errors', 'lines', 'checks'];

/** Asserts an RFC 9457 problem with the catalogue's status and title for `code`, and returns its body. */
export function expectProblem(res: Response, code: ErrorCode): ProblemBody {
  const { status, title } = errorCatalogue[code];
  expect({ status: res.statusCode, body: res.body }).toMatchObject({ status });
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json(;|$)/);
  const body = res.json<ProblemBody>();
  expect(body).toMatchObject({ type: 'about:blank', title, status, code });
  for (const member of Object.keys(body)) expect(PROBLEM_MEMBERS).toContain(member);
  if ('detail' in body) expect(typeof body.detail).toBe('string');
  for (const e of body.errors ?? []) expect(Object.keys(e).sort()).toEqual(['field', 'message']);
  return body;
}

/** Asserts a `400 validation_failed` and returns the fields its `errors` names. */
export function expectInvalid(res: Response): string[] {
  const body = expectProblem(res, 'validation_failed');
  expect(Array.isArray(body.errors) && body.errors.length > 0).toBe(true);
  for (const e of body.errors!) {
    expect(typeof e.field).toBe('string');
    expect(e.message.length).toBeGreaterThan(0);
  }
  return body.errors!.map((e) => e.field);
}

/** Asserts a 400 whose `errors` name exactly `fields` (each once at least, in any order). */
export function expectInvalidFields(res: Response, ...fields: string[]): void {
  expect([...new Set(expectInvalid(res))].sort()).toEqual([...new Set(fields)].sort());
}

export const ISO_MS_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

const RESERVATION_MEMBERS = ['createdAt', 'expiresAt', 'id', 'lines', 'metadata', 'reference', 'status', 'updatedAt'];

/** Asserts the exact shape of a reservation document and returns it. */
export function expectReservation(res: Response, statusCode: number): ReservationDocument {
  expect({ status: res.statusCode, body: res.body }).toMatchObject({ status: statusCode });
  expect(res.headers['content-type']).toMatch(/^application\/json(;|$)/);
  const doc = res.json<ReservationDocument>();
  expect(Object.keys(doc).sort()).toEqual(RESERVATION_MEMBERS);
  expect(typeof doc.id).toBe('string');
  expect(doc.id.length).toBeGreaterThan(0);
  expect(['pending', 'confirmed', 'released', 'expired']).toContain(doc.status);
  for (const t of [doc.createdAt, doc.updatedAt, doc.expiresAt]) expect(t).toMatch(ISO_MS_UTC);
  for (const line of doc.lines) expect(Object.keys(line).sort()).toEqual(['itemId', 'location', 'quantity']);
  expect(doc.reference === null || typeof doc.reference === 'string').toBe(true);
  expect(doc.metadata !== null && typeof doc.metadata === 'object' && !Array.isArray(doc.metadata)).toBe(true);
  return doc;
}

/** Asserts the exact shape of an availability document, and that its sums and `available` figures add up. */
export function expectAvailability(res: Response): AvailabilityDocument {
  expect({ status: res.statusCode, body: res.body }).toMatchObject({ status: 200 });
  expect(res.headers['content-type']).toMatch(/^application\/json(;|$)/);
  const doc = res.json<AvailabilityDocument>();
  expect(Object.keys(doc).sort()).toEqual(['available', 'itemId', 'locations', 'onHand', 'reserved']);
  for (const l of doc.locations) {
    expect(Object.keys(l).sort()).toEqual(['available', 'location', 'onHand', 'reserved']);
    expect(l.available).toBe(Math.max(0, l.onHand - l.reserved));
  }
  const names = doc.locations.map((l) => l.location);
  expect(names).toEqual([...names].sort());
  const sum = (k: 'onHand' | 'reserved' | 'available') => doc.locations.reduce((t, l) => t + l[k], 0);
  expect({ onHand: doc.onHand, reserved: doc.reserved, available: doc.available }).toEqual({
    onHand: sum('onHand'),
    reserved: sum('reserved'),
    available: sum('available'),
  });
  return doc;
}

/** Figures of one location, `{ onHand, reserved, available }`, as an availability document reports them. */
export type Figures = Pick<AvailabilityDocument, 'onHand' | 'reserved' | 'available'>;

export interface ReserveBody {
  lines: { itemId: string; quantity: number; location?: string }[];
  ttlSeconds?: number;
  reference?: string;
  metadata?: Record<string, string>;
}

/** This file's app and client; `t` is filled in by `beforeAll`, since the app exists only once that has run. */
export function useHttpApp(overrides: Record<string, string | number> = {}): { t: TestApp; api: Client } {
  const t = {} as TestApp;
  beforeAll(async () => {
    Object.assign(t, await startHttpApp(overrides));
  });
  afterAll(() => t.close());
  return { t, api: client(() => t.app) };
}

/**
 * Typed shortcuts for the contract's calls; each returns the raw response (assertions stay in the tests).
 * The app is read at each call: `useHttpApp` starts it after the file's tests have taken their client.
 */
export function client(appOf: () => FastifyInstance) {
  const inject = (opts: InjectOptions) => appOf().inject(opts);
  return {
    inject,
    putStock: (itemId: string, body: unknown) =>
      inject({ method: 'PUT', url: `/items/${itemId}/stock`, payload: body as object }),
    adjust: (itemId: string, body: unknown) =>
      inject({ method: 'POST', url: `/items/${itemId}/stock/adjustments`, payload: body as object }),
    availability: (itemId: string) => inject({ method: 'GET', url: `/items/${itemId}/availability` }),
    /** POST /reservations with a fresh key unless one is given; `body` may be anything, to test rejections. */
    reserve: (body: unknown, key: string | null = newKey()) =>
      inject({
        method: 'POST',
        url: '/reservations',
        headers: key === null ? {} : { 'idempotency-key': key },
        payload: body as object,
      }),
    /** POST /reservations with a raw JSON text, to control its bytes. */
    reserveRaw: (json: string, key: string = newKey(), contentType = 'application/json') =>
      inject({
        method: 'POST',
        url: '/reservations',
        headers: { 'idempotency-key': key, 'content-type': contentType },
        payload: json,
      }),
    get: (id: string) => inject({ method: 'GET', url: `/reservations/${id}` }),
    confirm: (id: string) => inject({ method: 'POST', url: `/reservations/${id}/confirm` }),
    release: (id: string) => inject({ method: 'POST', url: `/reservations/${id}/release` }),

    /** PUT stock that must succeed. */
    async stock(itemId: string, quantity: number, location?: string): Promise<AvailabilityDocument> {
      return expectAvailability(await this.putStock(itemId, location === undefined ? { quantity } : { quantity, location }));
    },
    /** Availability that must be 200. */
    async figures(itemId: string): Promise<AvailabilityDocument> {
      return expectAvailability(await this.availability(itemId));
    },
    /** Figures of one location (asserting it is listed). */
    async at(itemId: string, location = 'default'): Promise<Figures> {
      const doc = await this.figures(itemId);
      const l = doc.locations.find((x) => x.location === location);
      expect(l, `${itemId} lists ${location}`).toBeDefined();
      return { onHand: l!.onHand, reserved: l!.reserved, available: l!.available };
    },
    /** A reservation that must be created. */
    async hold(body: ReserveBody, key?: string): Promise<ReservationDocument> {
      return expectReservation(await this.reserve(body, key), 201);
    },
  };
}

export type Client = ReturnType<typeof client>;

/** Waits out a real TTL: resolves once the wall clock (the same one Redis reads) has reached `iso`. */
export async function passes(iso: string): Promise<void> {
  const at = Date.parse(iso);
  while (Date.now() < at) await sleep(at - Date.now());
}

/** An identifier of exactly `length` characters of the contract's alphabet, unique per call. */
export function idOfLength(length: number, prefix: string): string {
  const unique = `${prefix}-${Math.random().toString(36).slice(2, 10)}`;
  return (unique + 'x'.repeat(length)).slice(0, length);
}
