import { describe, expect, it } from 'vitest';
import { newItem } from '../helpers/app.js';
import { expectProblem, useHttpApp } from '../helpers/api.js';

// api.md, "Operations".
const { t, api } = useHttpApp();

interface OpenApiDocument {
  openapi: string;
  info: { title: string; version: string };
  paths: Record<string, Record<string, OpenApiOperation>>;
}

interface OpenApiOperation {
  parameters?: { name: string; in: string; required?: boolean }[];
  responses?: Record<string, unknown>;
}

describe('health', () => {
  it('GET /health/live → 200', async () => {
    const res = await api.request({ method: 'GET', url: '/health/live' });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
  });

  it('GET /health/ready → 200 with a check per dependency', async () => {
    const res = await api.request({ method: 'GET', url: '/health/ready' });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ status: 'ready', checks: { redis: 'ok', postgres: 'ok', state: 'ready' } });
  });

  it('while Redis state is missing: ready, availability and every mutation answer 503 unavailable and change nothing', async () => {
    const item = newItem();
    await api.stock(item, 5);
    const { redis, keys, recovery, sweeper, reconciler } = t.app.runtime;
    // With the background jobs stopped nothing else notices the missing marker, so Redis stays without state until
    // this test asks for the rebuild: every answer below is deterministic.
    await Promise.all([sweeper.stop(), reconciler.stop()]);
    try {
      await redis.del(keys.marker);
      const problem = expectProblem(await api.request({ method: 'GET', url: '/health/ready' }), 'unavailable');
      expect(problem.checks).toMatchObject({ redis: 'ok', postgres: 'ok' });
      await recovery.ensure();

      await redis.del(keys.marker);
      expectProblem(await api.putStock(item, { quantity: 9 }), 'unavailable');
      await recovery.ensure();
      expect(await api.at(item)).toEqual({ onHand: 5, reserved: 0, available: 5 });

      await redis.del(keys.marker);
      expectProblem(await api.availability(item), 'unavailable');
      await recovery.ensure();

      await redis.del(keys.marker);
      expectProblem(await api.reserve({ lines: [{ itemId: item, quantity: 1 }] }), 'unavailable');
      await recovery.ensure();
      expect(await api.at(item)).toEqual({ onHand: 5, reserved: 0, available: 5 });
      expect((await api.request({ method: 'GET', url: '/health/ready' })).status).toBe(200);
    } finally {
      await recovery.ensure();
      sweeper.start();
      reconciler.start();
    }
  });
});

describe('GET /metrics', () => {
  it('is Prometheus text with the request-duration histogram and the reservation outcomes counter', async () => {
    const item = newItem();
    await api.stock(item, 1);
    await api.hold({ lines: [{ itemId: item, quantity: 1 }] });
    const res = await api.request({ method: 'GET', url: '/metrics' });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    expect(res.text).toMatch(/^# HELP http_request_duration_seconds /m);
    expect(res.text).toMatch(/^# TYPE http_request_duration_seconds histogram$/m);
    expect(res.text).toMatch(/^http_request_duration_seconds_bucket\{.*\} \d+$/m);
    expect(res.text).toMatch(/^# TYPE irs_reservation_outcomes_total counter$/m);
    expect(res.text).toMatch(/^irs_reservation_outcomes_total\{outcome="created"\} [1-9]\d*$/m);
  });
});

describe('GET /openapi.json', () => {
  it('is an OpenAPI 3 document listing every contract path and method', async () => {
    const res = await api.request({ method: 'GET', url: '/openapi.json' });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    const doc = res.body as OpenApiDocument;
    expect(doc.openapi).toMatch(/^3\.\d+\.\d+$/);
    expect(doc.info.title).toEqual(expect.any(String));
    const contract: [string, string][] = [
      ['/items/{itemId}/stock', 'put'],
      ['/items/{itemId}/stock/adjustments', 'post'],
      ['/items/{itemId}/availability', 'get'],
      ['/reservations', 'post'],
      ['/reservations/{id}', 'get'],
      ['/reservations/{id}/confirm', 'post'],
      ['/reservations/{id}/release', 'post'],
      ['/health/live', 'get'],
      ['/health/ready', 'get'],
      ['/metrics', 'get'],
    ];
    for (const [path, method] of contract) expect(doc.paths[path]?.[method], `${method.toUpperCase()} ${path}`).toBeDefined();
  });

  it('documents the required Idempotency-Key header and the answers of POST /reservations', async () => {
    const doc = (await api.request({ method: 'GET', url: '/openapi.json' })).body as OpenApiDocument;
    const post = doc.paths['/reservations']!.post!;
    const header = post.parameters?.find((p) => p.in === 'header' && p.name.toLowerCase() === 'idempotency-key');
    expect(header?.required).toBe(true);
    for (const status of ['201', '400', '404', '409', '422']) expect(Object.keys(post.responses ?? {})).toContain(status);
  });
});

describe('GET /docs', () => {
  it('serves the interactive docs as HTML (following redirects by hand)', async () => {
    let url = '/docs';
    let res = await api.request({ method: 'GET', url });
    for (let hops = 0; res.status >= 300 && res.status < 400 && hops < 5; hops++) {
      url = new URL(String(res.headers.location), `http://localhost${url}`).pathname;
      res = await api.request({ method: 'GET', url });
    }
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(res.text).toMatch(/<html/i);
  });
});
