import { describe, expect, it } from 'vitest';
import { Builder, type Case, type Expectation } from './case.js';
import { Findings, judge } from './contract.js';
import { diff, type State } from './state.js';
import type { Answer } from './wire.js';

// The fuzz test's own checks, each shown to fire on an answer that breaks it (and to stay quiet on one that does not).

const expectation = (over: Partial<Expectation> = {}): Expectation => ({
  open: false,
  codes: new Set(['item_not_found']),
  statuses: new Set(),
  silenceOk: false,
  anyRefusal: false,
  fields: new Set(),
  ...over,
});

const aCase = (over: Partial<Case> = {}, expect: Partial<Expectation> = {}): Case => ({
  route: 'POST /items/:itemId/stock/adjustments',
  mutating: true,
  defects: ['sem.unknown-item'],
  decorations: [],
  expect: expectation(expect),
  wire: { method: 'POST', target: '/items/x/stock/adjustments', headers: [] },
  ...over,
});

type Response = Extract<Answer, { kind: 'response' }>;

const problem = (status: number, body: object, contentType = 'application/problem+json; charset=utf-8'): Response => ({
  kind: 'response',
  via: 'http',
  status,
  headers: { 'content-type': contentType },
  body: Buffer.from(JSON.stringify(body)),
});

const notFound = { type: 'about:blank', title: 'Item not found', status: 404, code: 'item_not_found' };
const kinds = (c: Case, a: Answer) => judge(c, a).map((v) => v.kind);

describe('judge', () => {
  it('passes an answer the contract allows', () => {
    expect(kinds(aCase(), problem(404, notFound))).toEqual([]);
  });

  it('fails a 2xx to a mutating request, and to a read that carries a defect', () => {
    expect(kinds(aCase(), problem(200, {}, 'application/json'))).toEqual(['mutating-request-accepted']);
    expect(kinds(aCase({ mutating: false }), problem(200, {}, 'application/json'))).toEqual(['defective-request-accepted']);
    expect(kinds(aCase({ mutating: false }, { open: true }), problem(200, {}, 'application/json'))).toEqual([]);
  });

  it('fails any 5xx, even one that is a well-formed problem', () => {
    const unavailable = { type: 'about:blank', title: 'Service unavailable', status: 503, code: 'unavailable' };
    expect(kinds(aCase({ mutating: false }, { open: true }), problem(503, unavailable))).toEqual(['5xx']);
  });

  it('fails an error that is not problem+json, or not a problem document', () => {
    expect(kinds(aCase(), problem(404, notFound, 'application/json'))).toEqual(['not-problem-json']);
    expect(kinds(aCase(), { ...problem(404, notFound), body: Buffer.from('not json') })).toEqual(['problem-not-json']);
    expect(kinds(aCase(), problem(404, { ...notFound, title: undefined }))).toEqual(['problem-members']);
  });

  it('fails a code outside the catalogue, or with another status or title than the catalogue says', () => {
    expect(kinds(aCase({}, { open: true }), problem(404, { ...notFound, code: 'no_such_code' }))).toEqual(['code-not-in-catalogue']);
    expect(kinds(aCase({}, { codes: new Set(['item_not_found']) }), problem(409, { ...notFound, status: 409 }))).toEqual([
      'code-status-or-title-not-the-catalogue-s',
    ]);
    expect(kinds(aCase(), problem(404, { ...notFound, title: 'Gone' }))).toEqual(['code-status-or-title-not-the-catalogue-s']);
    expect(kinds(aCase(), problem(404, { ...notFound, status: 400 }))).toEqual(['problem-status-differs-from-status-line']);
  });

  it('fails a code the defects do not allow; a framing status allows the catalogue code of that status', () => {
    const invalid = { type: 'about:blank', title: 'Validation failed', status: 400, code: 'validation_failed', errors: [{ field: 'x', message: 'm' }] };
    expect(kinds(aCase(), problem(400, invalid))).toEqual(['unexpected-code']);
    expect(kinds(aCase({}, { statuses: new Set([400]) }), problem(400, invalid))).toEqual([]);
    expect(kinds(aCase({}, { anyRefusal: true }), problem(400, invalid))).toEqual([]);
  });

  it('fails a validation_failed without errors, or naming none of the broken fields', () => {
    const base = { type: 'about:blank', title: 'Validation failed', status: 400, code: 'validation_failed' };
    const c = aCase({}, { codes: new Set(['validation_failed']), fields: new Set(['lines[0].quantity']) });
    expect(kinds(c, problem(400, base))).toEqual(['validation-errors-malformed']);
    expect(kinds(c, problem(400, { ...base, errors: [{ field: 'ttlSeconds', message: 'm' }] }))).toEqual(['field-not-named']);
    expect(kinds(c, problem(400, { ...base, errors: [{ field: 'lines[0].quantity', message: 'm' }] }))).toEqual([]);
    const prefix = aCase({}, { codes: new Set(['validation_failed']), fields: new Set(['metadata']) });
    expect(kinds(prefix, problem(400, { ...base, errors: [{ field: 'metadata.k', message: 'm' }] }))).toEqual([]);
    expect(kinds(prefix, problem(400, { ...base, errors: [{ field: 'metadataX', message: 'm' }] }))).toEqual(['field-not-named']);
  });

  it('fails silence, unless the request was cut off; a refused connection means the server is gone', () => {
    expect(kinds(aCase(), { kind: 'closed', detail: 'reset' })).toEqual(['no-answer:closed']);
    expect(kinds(aCase(), { kind: 'timeout' })).toEqual(['no-answer:timeout']);
    expect(kinds(aCase({}, { silenceOk: true }), { kind: 'closed', detail: 'reset' })).toEqual([]);
    expect(kinds(aCase({}, { silenceOk: true }), { kind: 'refused', detail: 'ECONNREFUSED' })).toEqual(['server-gone']);
  });

  it('fails a static file served from outside its directory', () => {
    const leak: Answer = { kind: 'response', via: 'http', status: 200, headers: {}, body: Buffer.from('root:x:0:0:root:/root:/bin/bash') };
    expect(kinds(aCase({ mutating: false }, { open: true }), leak)).toEqual(['file-leak']);
  });

  it('groups violations by class across routes, and keeps the smallest example', () => {
    const findings = new Findings();
    const big = aCase({ route: 'A', wire: { method: 'POST', target: '/a', headers: [], body: Buffer.alloc(100) } });
    const small = aCase({ route: 'B', wire: { method: 'POST', target: '/b', headers: [] } });
    findings.add(big, { kind: '5xx', detail: 'big' }, '1');
    findings.add(small, { kind: '5xx', detail: 'small' }, '2');
    expect(findings.size).toBe(1);
    const report = findings.report((p) => `path ${p}`);
    expect(report).toContain('×2 on A, B');
    expect(report).toContain('answer: small');
    expect(report).toContain('path 2');
  });
});

describe('builder', () => {
  it('a touch that allows validation_failed without naming a field stops the field check for the case', () => {
    const b = new Builder('R', true, 'POST', ['x']);
    b.defect('json.truncated', ['validation_failed'], ['body']);
    b.framing('frame.absolute-form', false, [400], undefined, false, ['validation_failed']);
    expect(b.finish().expect.fields).toBeNull();
  });
});

describe('state diff', () => {
  const state = (redis: [string, string][], rows: string[]): State => ({ redis: new Map(redis), postgres: new Map([['stock', rows]]) });

  it('is empty for equal states and names every changed key and row', () => {
    const before = state([['p:a', 'hash [["h:default","1"]]'], ['p:b', 'string "x"']], ['{"on_hand": 1}']);
    expect(diff(before, state([...before.redis], ['{"on_hand": 1}']))).toEqual([]);
    const after = state([['p:a', 'hash [["h:default","2"]]'], ['p:c', 'set []']], ['{"on_hand": 2}']);
    const changes = diff(before, after);
    expect(changes).toHaveLength(5);
    expect(changes.join('\n')).toMatch(/redis ~ p:a/);
    expect(changes.join('\n')).toMatch(/redis - p:b/);
    expect(changes.join('\n')).toMatch(/redis \+ p:c/);
    expect(changes.join('\n')).toMatch(/postgres \+ stock \{"on_hand": 2\}/);
    expect(changes.join('\n')).toMatch(/postgres - stock \{"on_hand": 1\}/);
  });
});
