import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCatalogue, type ErrorCode } from '../../src/domain/errors.js';
import { newKey } from '../helpers/app.js';
import { expectReservation, useHttpApp } from '../helpers/api.js';

// The served OpenAPI document, as tools and people meet it: Redocly's recommended rules pass with no error and no
// warning, every operation says who may call it and every answer it can give, and its examples are real.
const { api } = useHttpApp();

interface Example {
  summary?: string;
  value: unknown;
}
interface Media {
  schema: unknown;
  examples?: Record<string, Example>;
}
interface Response {
  description: string;
  headers?: Record<string, { description?: string }>;
  content?: Record<string, Media>;
}
interface Operation {
  operationId?: string;
  summary?: string;
  description?: string;
  tags?: string[];
  security?: Record<string, string[]>[];
  parameters?: { name: string; in: string; required?: boolean; description?: string; example?: unknown }[];
  requestBody?: { required?: boolean; content: Record<string, Media> };
  responses: Record<string, Response>;
}
interface Document {
  info: { description: string; license?: { name: string } };
  servers?: { url: string }[];
  security?: Record<string, string[]>[];
  tags: { name: string; description?: string }[];
  components: { securitySchemes: Record<string, { type: string; scheme?: string }> };
  paths: Record<string, Record<string, Operation>>;
}

let doc: Document;
let operations: { method: string; path: string; op: Operation }[];
beforeAll(async () => {
  const res = await api.request({ method: 'GET', url: '/openapi.json' });
  expect(res.status).toBe(200);
  doc = res.body as Document;
  operations = Object.entries(doc.paths).flatMap(([p, methods]) =>
    Object.entries(methods).map(([method, op]) => ({ method: method.toUpperCase(), path: p, op })),
  );
});

const REDOCLY = fileURLToPath(new URL('../../node_modules/.bin/redocly', import.meta.url));

describe('redocly lint (recommended rules)', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'openapi-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('finds no error and no warning in the served /openapi.json', async () => {
    const file = path.join(dir, 'openapi.json');
    writeFileSync(file, (await api.request({ method: 'GET', url: '/openapi.json' })).text);
    const run = spawnSync(REDOCLY, ['lint', file, '--format', 'json', '--extends', 'recommended'], {
      encoding: 'utf8',
      timeout: 60_000,
      // Offline and quiet: no telemetry, no update check.
      env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true', NO_COLOR: '1' },
    });
    expect(run.error, 'run @redocly/cli (a dev dependency)').toBeUndefined();
    const report = JSON.parse(run.stdout) as {
      totals: { errors: number; warnings: number };
      problems: { ruleId: string; message: string; location: { pointer: string }[] }[];
    };
    const problems = report.problems.map((p) => `${p.ruleId} at ${p.location[0]?.pointer}: ${p.message}`);
    expect(problems).toEqual([]);
    expect(report.totals).toMatchObject({ errors: 0, warnings: 0 });
    expect(run.status).toBe(0);
  });
});

describe('what each operation documents', () => {
  it('has an id, a summary, a description, a described tag, and no "Default Response"', () => {
    const tags = new Map(doc.tags.map((tag) => [tag.name, tag.description]));
    const ids = operations.map(({ op }) => op.operationId);
    expect(new Set(ids).size).toBe(ids.length);
    for (const { method, path: p, op } of operations) {
      const name = `${method} ${p}`;
      expect(op.operationId, name).toMatch(/^[a-z][A-Za-z]+$/);
      expect(op.summary, name).toBeTruthy();
      expect(op.description, name).toMatch(/\*\*Access:\*\*/);
      for (const tag of op.tags ?? []) expect(tags.get(tag), `${name}: tag ${tag}`).toBeTruthy();
      for (const [status, response] of Object.entries(op.responses)) {
        expect(response.description, `${name} ${status}`).not.toMatch(/^Default Response$/);
        expect(response.description.length, `${name} ${status}`).toBeGreaterThan(10);
      }
    }
  });

  it('says who may call it: the bearer scheme, open only for health, metrics and this document', () => {
    expect(doc.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(doc.security).toEqual([{ bearer: [] }]);
    const open = operations.filter(({ op }) => op.security?.length === 0).map(({ method, path: p }) => `${method} ${p}`);
    expect(open.sort()).toEqual(['GET /health/live', 'GET /health/ready', 'GET /metrics', 'GET /openapi.json']);
    for (const { method, path: p, op } of operations) {
      const codes = Object.keys(op.responses);
      const needsKey = op.security === undefined;
      expect(codes.includes('401'), `${method} ${p} 401`).toBe(needsKey);
      expect(codes.includes('429'), `${method} ${p} 429`).toBe(needsKey);
      const operatorOnly = p.startsWith('/admin/') || (p.includes('/stock') && method !== 'GET');
      expect(codes.includes('403'), `${method} ${p} 403`).toBe(operatorOnly);
      expect(codes, `${method} ${p}`).toContain('4XX');
    }
  });

  it('lists each code it can answer, with an example of each, as the error catalogue has it', () => {
    for (const { method, path: p, op } of operations) {
      for (const [status, response] of Object.entries(op.responses)) {
        const problem = response.content?.['application/problem+json'];
        if (!/^[45]/.test(status)) continue;
        const name = `${method} ${p} ${status}`;
        expect(problem?.schema, name).toEqual({ $ref: '#/components/schemas/Problem' });
        const examples = Object.entries(problem?.examples ?? {});
        expect(examples.length, name).toBeGreaterThan(0);
        for (const [key, { value }] of examples) {
          const body = value as { code: ErrorCode; status: number; title: string; type: string };
          const entry = errorCatalogue[body.code];
          expect(entry, `${name}: ${body.code}`).toBeDefined();
          expect(body, `${name}: ${key}`).toMatchObject({ type: 'about:blank', status: entry.status, title: entry.title });
          if (status !== '4XX') {
            expect(String(entry.status), `${name}: ${body.code}`).toBe(status);
            expect(response.description, `${name} names ${body.code}`).toContain(`\`${body.code}\``);
          }
        }
      }
    }
  });

  it('answers the codes the contract gives each operation', () => {
    const codesOf = (method: string, p: string) =>
      Object.values(doc.paths[p]![method]!.responses).flatMap((r) =>
        Object.values(r.content?.['application/problem+json']?.examples ?? {}).map((e) => (e.value as { code: string }).code),
      );
    expect(codesOf('post', '/reservations')).toEqual(
      expect.arrayContaining(['validation_failed', 'item_not_found', 'insufficient_stock', 'idempotency_key_in_use', 'idempotency_key_reused', 'unavailable']),
    );
    expect(codesOf('post', '/reservations/{id}/confirm')).toEqual(
      expect.arrayContaining(['reservation_not_found', 'reservation_expired', 'reservation_released', 'insufficient_stock']),
    );
    expect(codesOf('post', '/reservations/{id}/release')).toEqual(expect.arrayContaining(['reservation_not_found', 'reservation_confirmed']));
    expect(codesOf('post', '/items/{itemId}/stock/adjustments')).toEqual(
      expect.arrayContaining(['validation_failed', 'item_not_found', 'insufficient_stock']),
    );
    expect(codesOf('get', '/items/{itemId}/availability')).toEqual(expect.arrayContaining(['validation_failed', 'item_not_found']));
  });

  it('documents readiness both ways, with its checks', () => {
    const ready = doc.paths['/health/ready']!.get!;
    expect(Object.keys(ready.responses).sort()).toEqual(['200', '4XX', '503']);
    expect(JSON.stringify(ready.responses['200']!.content!['application/json']!.schema)).toContain('"checks"');
    const notReady = Object.values(ready.responses['503']!.content!['application/problem+json']!.examples!)[0]!.value;
    expect(notReady).toMatchObject({ code: 'unavailable', checks: { redis: 'ok', postgres: 'ok' } });
  });

  it('says which bodies may be left out: only confirm\'s', () => {
    const optional = operations.filter(({ op }) => op.requestBody && op.requestBody.required !== true).map(({ op }) => op.operationId);
    expect(optional).toEqual(['confirmReservation']);
    const lines = JSON.stringify(doc.paths['/reservations/{id}/confirm']!.post!.requestBody!.content['application/json']!.schema);
    expect(lines).toContain('"lines"');
  });

  it('describes the Idempotency-Key header', () => {
    const header = doc.paths['/reservations']!.post!.parameters!.find((p) => p.name === 'idempotency-key')!;
    expect(header.required).toBe(true);
    expect(header.description).toMatch(/same key with the same body/);
    expect(header.example).toEqual(expect.any(String));
  });

  it('describes versions: ETag on every reservation document, If-Match on confirm and release, and their 412', () => {
    const reservationAnswers = [
      ['post', '/reservations', '201'],
      ['get', '/reservations/{id}', '200'],
      ['post', '/reservations/{id}/confirm', '200'],
      ['post', '/reservations/{id}/release', '200'],
    ] as const;
    for (const [method, p, status] of reservationAnswers) {
      expect(doc.paths[p]![method]!.responses[status]!.headers?.ETag?.description, `${method} ${p}`).toMatch(/version/);
    }
    for (const action of ['confirm', 'release']) {
      const op = doc.paths[`/reservations/{id}/${action}`]!.post!;
      const header = op.parameters!.find((x) => x.name === 'if-match')!;
      expect(header).toMatchObject({ in: 'header' });
      expect(header.required ?? false).toBe(false);
      expect(header.description).toMatch(/412 precondition_failed/);
      const examples = Object.values(op.responses['412']!.content!['application/problem+json']!.examples!).map((e) => e.value);
      expect(examples).toEqual([expect.objectContaining({ status: 412, code: 'precondition_failed' })]);
    }
  });

  it('explains once, in the API description, every code and what any request can be refused with', () => {
    for (const code of Object.keys(errorCatalogue)) expect(doc.info.description).toContain(`| \`${code}\` |`);
    for (const code of ['malformed_request', 'request_timeout', 'expectation_failed', 'request_header_too_large']) {
      expect(doc.paths['/health/live']!.get!.responses['4XX']!.description).toContain(code);
    }
    expect(doc.info.license?.name).toBe('MIT');
    expect(doc.servers?.length).toBeGreaterThan(0);
  });
});

describe('the examples are real', () => {
  const success = (op: Operation) => Object.entries(op.responses).find(([status]) => /^2/.test(status))!;

  it('every request example is answered with its documented success, and the matching response example is that answer', async () => {
    // The items the examples name, stocked where they say.
    for (const itemId of ['sku-tshirt-m', 'sku-mug-white', 'sneaker-drop-42']) {
      await api.stock(itemId, 1000);
      await api.stock(itemId, 1000, 'wh-2');
      await api.stock(itemId, 1000, 'wh-paris');
    }
    // The allocation examples: Berlin has 3 t-shirts and no mugs.
    await api.stock('sku-tshirt-m', 3, 'wh-berlin');
    await api.stock('sku-mug-white', 0, 'wh-berlin');
    const cartExample = doc.paths['/reservations']!.post!.requestBody!.content['application/json']!.examples!.cart!.value;
    let tried = 0;
    for (const { method, path: p, op } of operations) {
      const examples = op.requestBody?.content['application/json']?.examples ?? {};
      const params = Object.fromEntries((op.parameters ?? []).filter((x) => x.in === 'path').map((x) => [x.name, String(x.example)]));
      const [status, documented] = success(op);
      for (const [name, example] of Object.entries(examples)) {
        // A call on one reservation (confirm: the cart's examples) acts on a new cart, made by the cart example.
        if (p.startsWith('/reservations/{id}')) params.id = expectReservation(await api.reserve(cartExample), 201).id;
        const url = p.replace(/\{(\w+)\}/g, (_, key: string) => params[key]!);
        const headers: Record<string, string> = op.parameters?.some((x) => x.name === 'idempotency-key') ? { 'idempotency-key': newKey() } : {};
        const res = await api.request({ method, url, headers, payload: example.value });
        expect({ status: res.status, body: res.text }, `${method} ${p} example ${name}`).toMatchObject({ status: Number(status) });
        const twin = documented.content?.['application/json']?.examples?.[name]?.value;
        if (twin) {
          // Ids and times differ from run to run; everything else is what the example shows.
          const stable = (body: object) => Object.fromEntries(Object.entries(body).filter(([k]) => !/^(id|\w+At)$/.test(k)));
          expect(stable(res.body as object), `${method} ${p} example ${name}`).toEqual(stable(twin as object));
        }
        tried++;
      }
    }
    expect(tried).toBeGreaterThanOrEqual(7);
  });
});
