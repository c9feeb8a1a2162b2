import { ALNUM, ID_ALPHABET, NOT_ID, UNICODE, VISIBLE_ASCII, pct, type Draw } from './draw.js';
import { BODIES, LINE_FIELDS, ODD_UNKNOWN_KEYS, UNKNOWN_KEYS, badValue, type Spec } from './bodies.js';
import { Obj, Raw, clone, deep, encode, obj, type JVal } from './json.js';
import type { Builder, World } from './case.js';
import { METHODS_BY_TEMPLATE, bearer, fineText, unknownUuid, type Route } from './routes.js';

/**
 * Defects: each one alone guarantees, by the contract, that the request is refused (and with which codes).
 * Decorations (at the end): hostile touches that are valid, or that the contract leaves open.
 */

const MAX_BODY_BYTES = 64 * 1024;

const jsonBody = (b: Builder): Obj | null => {
  const body = b.draft.body && 'json' in b.draft.body ? b.draft.body.json : null;
  return body instanceof Obj ? body : null;
};

/** The route's JSON body object, made (empty) if the request has none yet. */
function ensureObject(b: Builder): Obj {
  const existing = jsonBody(b);
  if (existing) return existing;
  const body = new Obj();
  b.draft.body = { json: body };
  b.draft.contentType = 'application/json';
  return body;
}

// --- auth ------------------------------------------------------------------------------------------------------

export function authDefect(d: Draw, w: World, b: Builder, route: Route): void {
  const secret = route.access === 'operator' ? w.credentials.operator : w.credentials.client;
  const kinds: [number, () => void][] = [
    [3, () => {
      b.setAuthorization(null);
      b.defect('auth.missing', ['unauthorized']);
    }],
    [3, () => {
      b.setAuthorization(bearer(`fz-${d.chars(VISIBLE_ASCII, d.int(13, 64))}`));
      b.defect('auth.wrong-key', ['unauthorized']);
    }],
    [3, () => {
      b.setAuthorization(d.pick([
        `Basic ${Buffer.from(`fuzz:${secret}`).toString('base64')}`,
        `Token ${secret}`,
        'Bearer',
        secret,
        `Bearer ${secret} extra`,
        `Bearer ${secret.slice(0, -1)}`,
        `Bearer ${secret}x`,
        `Bearer ${secret},Bearer ${secret}`,
        `Bearer ${Buffer.from(secret).toString('base64')}`,
      ]));
      b.defect('auth.malformed', ['unauthorized']);
    }],
    [2, () => {
      b.setAuthorization(`Bearer ${secret}${d.pick(['é', 'ÿ', '\u00a0x'])}`);
      b.defect('auth.latin1', ['unauthorized']);
    }],
    [1, () => {
      b.setAuthorization(`Bearer ${d.insert(secret, d.pick(['😀', '中', '\u202e']))}`);
      b.draft.forceRaw = true;
      b.defect('auth.utf8', ['unauthorized']);
    }],
    [1, () => {
      b.setAuthorization(`Bearer ${d.insert(secret, d.pick(['\u0000', '\u0001', '\u001f', '\u007f']))}`);
      b.draft.forceRaw = true;
      b.defect('auth.control', ['unauthorized']);
      b.allowStatuses([400]);
    }],
    [1, () => {
      b.setAuthorization(bearer('x'.repeat(d.int(4_000, 12_000))));
      b.defect('auth.huge', ['unauthorized']);
      b.allowStatuses([431]);
    }],
  ];
  if (route.access === 'operator') {
    kinds.push([4, () => {
      b.setAuthorization(bearer(w.credentials.client));
      b.defect('auth.client-on-operator-route', ['forbidden']);
    }]);
  }
  d.weighted(kinds)();
}

// --- method ----------------------------------------------------------------------------------------------------

const KNOWN_METHODS = ['GET', 'HEAD', 'PUT', 'POST', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'PROPFIND', 'MKCOL', 'SEARCH', 'LOCK', 'PURGE', 'COPY', 'MOVE', 'REPORT'];

export function methodDefect(d: Draw, b: Builder, route: Route): void {
  const allowed = METHODS_BY_TEMPLATE[route.template] ?? [];
  d.weighted<() => void>([
    [5, () => {
      b.draft.method = d.pick(KNOWN_METHODS.filter((m) => !allowed.includes(m)));
      b.defect(`method.other:${b.draft.method}`, ['method_not_allowed', 'not_found']);
    }],
    [2, () => {
      // Not methods at all: llhttp refuses them before the app sees anything.
      b.draft.method = d.pick(['FOO', 'GETS', 'BREW', 'XPOST', 'Z'.repeat(40), 'G']);
      b.defect('method.made-up', ['method_not_allowed', 'not_found']);
      b.allowStatuses([400]);
    }],
    [2, () => {
      b.draft.method = d.pick([route.method.toLowerCase(), route.method[0] + route.method.slice(1).toLowerCase()]);
      b.draft.forceRaw = true;
      b.defect('method.lowercase', ['method_not_allowed', 'not_found']);
      b.allowStatuses([400]);
    }],
  ])();
}

// --- path ------------------------------------------------------------------------------------------------------

export function pathDefect(d: Draw, w: World, b: Builder, route: Route): void {
  if (route.param === 'itemId') {
    const valid = d.chars(ID_ALPHABET, d.int(1, 30));
    const [label, segment, maybe404] = d.weighted<() => [string, string, boolean]>([
      [4, () => ['path.id-alphabet', pct(d.insert(valid, d.pick(NOT_ID))), false]],
      [1, () => ['path.id-nul', `${valid}%00`, false]],
      [1, () => ['path.id-encoded-slash', `${valid}%2F${valid}`, false]],
      [2, () => {
        const length = d.pick([129, 130, d.int(131, 8000), d.int(8193, 12_000)]);
        return ['path.id-over-limit', d.chars(ID_ALPHABET, length), length > 8192];
      }],
      [2, () => ['path.percent-garbage', d.pick(['%zz', '%', '%E9', '%C3%28', '%F0%9F', '%u0041', `${valid}%`, '%ED%A0%80']), true]],
      [2, () => ['path.id-dots', d.pick(['.', '..', '%2e', '%2E%2E', '.%2e', '%2e.']), true]],
      [1, () => ['path.id-empty', '', true]],
    ])();
    b.draft.path[1] = segment;
    b.defect(label, maybe404 ? ['validation_failed', 'not_found'] : ['validation_failed'], ['itemId', 'url']);
    return;
  }
  if (route.param === 'id') {
    const real = d.pick(w.reservations).id;
    const [label, segment] = d.weighted<() => [string, string]>([
      [3, () => ['path.id-unknown', unknownUuid(d)]],
      [2, () => ['path.id-suffixed', pct(`${real}${d.pick(['x', '0', ' ', '\u0000', '\u202e', '😀', '/'])}`)]],
      [1, () => ['path.id-nul', `${real}%00`]],
      [1, () => ['path.id-truncated', real.slice(0, d.int(0, real.length - 1))]],
      [2, () => ['path.percent-garbage', d.pick(['%zz', '%', '%E9', `${real}%`, '%ED%A0%80'])]],
      [2, () => ['path.id-over-limit', d.chars(ALNUM, d.pick([37, d.int(38, 8000), d.int(8193, 12_000)]))]],
      [1, () => ['path.id-dots', d.pick(['.', '..', '%2e%2e'])]],
      [1, () => ['path.id-empty', '']],
    ])();
    b.draft.path[1] = segment;
    // A path that does not percent-decode is refused before routing: 400 naming the URL, whatever the route's body.
    if (label === 'path.percent-garbage') b.defect(label, ['reservation_not_found', 'not_found', 'validation_failed'], ['url']);
    else b.defect(label, ['reservation_not_found', 'not_found']);
  }
}

// --- headers ---------------------------------------------------------------------------------------------------

export function idempotencyDefect(d: Draw, b: Builder): void {
  const others = b.draft.headers.filter(([k]) => k.toLowerCase() !== 'idempotency-key');
  const key = `fz-k-${d.chars(ALNUM, d.int(1, 20))}`;
  const set = (...values: string[]) => {
    b.draft.headers = [...others, ...values.map((v): [string, string] => ['Idempotency-Key', v])];
  };
  const field = ['Idempotency-Key'];
  d.weighted<() => void>([
    [3, () => {
      set();
      b.defect('idem.missing', ['validation_failed'], field);
    }],
    [1, () => {
      set('');
      b.defect('idem.empty', ['validation_failed'], field);
    }],
    [2, () => {
      set(`fz-k-${d.chars(VISIBLE_ASCII, d.pick([251, d.int(252, 3000)]))}`);
      b.defect('idem.over-limit', ['validation_failed'], field);
    }],
    [2, () => {
      // Inside the key: leading and trailing whitespace is the header's, and HTTP trims it.
      set(`${key.slice(0, 3)}${d.pick([' ', '\t', '  '])}${key.slice(3)}`);
      b.defect('idem.whitespace', ['validation_failed'], field);
    }],
    [2, () => {
      set(d.insert(key, d.pick(['é', 'ÿ', '\u00a0', '\u0080'])));
      b.defect('idem.latin1', ['validation_failed'], field);
    }],
    [1, () => {
      set(d.insert(key, d.pick(['😀', '中', '\u202e', '\u200b'])));
      b.draft.forceRaw = true;
      b.defect('idem.utf8', ['validation_failed'], field);
    }],
    [1, () => {
      set(d.insert(key, d.pick(['\u0000', '\u0001', '\u001b', '\u007f'])));
      b.draft.forceRaw = true;
      b.defect('idem.control', ['validation_failed'], field);
      b.allowStatuses([400]);
    }],
    [1, () => {
      set(key, `${key}-2`);
      b.defect('idem.twice', ['validation_failed'], field);
    }],
  ])();
}

// --- body ------------------------------------------------------------------------------------------------------

/** A value of the right type for the field (for the first of two duplicate keys). */
function plausible(spec: Spec): JVal {
  switch (spec.kind) {
    case 'int':
      return spec.min === 0 ? 0 : 1;
    case 'id':
    case 'text':
      return 'ok';
    case 'bool':
      return true;
    case 'metadata':
      return new Obj();
    case 'lines':
      return [obj({ itemId: 'ok', quantity: 1 })];
    case 'enum':
      return 'normal';
    case 'allocation':
      return obj({ strategy: 'most_available' });
  }
}

/** Sets `key` to `bad`; with `duplicate`, a plausible value first, so only JSON.parse's last-wins makes it bad. */
function put(target: Obj, key: string, bad: JVal, duplicate: JVal | undefined): void {
  target.delete(key);
  if (duplicate !== undefined) target.entries.push([key, duplicate]);
  target.entries.push([key, bad]);
}

export function bodyDefect(d: Draw, b: Builder, route: Route): void {
  if (route.body === 'none' || route.body === null) return malformedBody(d, b);
  const spec = BODIES[route.body];
  const duplicate = d.bool(0.2);
  // A body an earlier defect already made unparseable stays so: a field defect would rebuild it, and cure it.
  const parseable = !b.draft.body || jsonBody(b) !== null;
  // A field breaks once: a second defect on it would replace the first.
  const fresh = Object.keys(spec.fields).filter((f) => !b.touched.has(f));
  const options: [number, () => void][] = [
    [parseable && fresh.length > 0 ? 8 : 0, () => {
      const body = ensureObject(b);
      const name = d.pick(fresh);
      b.touched.add(name);
      const fieldSpec = spec.fields[name]!;
      const bad = badValue(d, fieldSpec, body.get(name));
      put(body, name, bad.value, duplicate ? clone(body.get(name) ?? plausible(fieldSpec)) : undefined);
      const fields = bad.suffix === null ? ['body'] : [`${name}${bad.suffix}`, ...(bad.label === 'type.deep' ? ['body'] : [])];
      b.defect(`${bad.label}@${name}${duplicate ? '+duplicate-key' : ''}`, ['validation_failed'], fields);
    }],
    [parseable ? 2 : 0, () => {
      const body = ensureObject(b);
      const [name, shown] = d.bool(0.7) ? [d.pick(UNKNOWN_KEYS), true] : [d.pick(ODD_UNKNOWN_KEYS), false];
      const value = name === 'constructor' && d.bool(0.5) ? obj({ prototype: obj({ polluted: 'yes' }) }) : d.pick<JVal>([1, 'x', null, new Obj(), [], deep('array', 1000)]);
      body.entries.push([name, value]);
      b.defect(`object.unknown-field:${shown ? name : 'odd'}`, ['validation_failed'], shown ? [name, 'body'] : undefined);
    }],
    [1, () => {
      b.draft.body = { json: d.pick<JVal>([[], [new Obj()], 'lines', 1, 0, null, true, false, deep('array', d.pick([1000, 20_000])), [deep('object', 5000)]]) };
      b.draft.contentType = 'application/json';
      b.defect('body.not-an-object', ['validation_failed'], ['body']);
    }],
    [3, () => malformedBody(d, b)],
  ];
  const required = spec.required.filter((f) => !b.touched.has(f));
  if (required.length > 0 && parseable) {
    options.push([2, () => {
      const name = d.pick(required);
      b.touched.add(name);
      ensureObject(b).delete(name);
      b.defect(`object.missing:${name}`, ['validation_failed'], [name]);
    }]);
    options.push([1, () => {
      b.draft.body = { bytes: Buffer.alloc(0) };
      b.draft.contentType = 'application/json';
      b.defect('body.empty', ['validation_failed'], ['body']);
    }]);
  }
  if (route.body === 'reserve' && parseable) options.push([6, () => lineDefect(d, b, duplicate)]);
  d.weighted(options)();
}

function lineDefect(d: Draw, b: Builder, duplicate: boolean): void {
  const body = ensureObject(b);
  const ls = body.get('lines');
  const lines = Array.isArray(ls) ? ls.filter((l): l is Obj => l instanceof Obj) : [];
  if (lines.length === 0) {
    body.set('lines', []);
    b.defect('lines.empty', ['validation_failed'], ['lines']);
    return;
  }
  const i = (ls as JVal[]).indexOf(d.pick(lines));
  const l = (ls as JVal[])[i] as Obj;
  const fresh = Object.keys(LINE_FIELDS).filter((f) => !b.touched.has(`lines[${i}].${f}`));
  const pristine = ['itemId', 'quantity'].filter((f) => fresh.includes(f));
  d.weighted<() => void>([
    [fresh.length > 0 ? 6 : 0, () => {
      const name = d.pick(fresh);
      b.touched.add(`lines[${i}].${name}`);
      const bad = badValue(d, LINE_FIELDS[name]!, l.get(name));
      put(l, name, bad.value, duplicate ? clone(l.get(name) ?? plausible(LINE_FIELDS[name]!)) : undefined);
      const fields = bad.suffix === null ? ['body'] : [`lines[${i}].${name}${bad.suffix}`, ...(bad.label === 'type.deep' ? ['body'] : [])];
      b.defect(`${bad.label}@lines[].${name}${duplicate ? '+duplicate-key' : ''}`, ['validation_failed'], fields);
    }],
    [pristine.length > 0 ? 2 : 0, () => {
      const name = d.pick(pristine);
      b.touched.add(`lines[${i}].${name}`);
      l.delete(name);
      b.defect(`object.missing:lines[].${name}`, ['validation_failed'], [`lines[${i}].${name}`]);
    }],
    [2, () => {
      const name = d.pick(['sku', 'qty', 'constructor', 'prototype', 'Quantity', 'priority']);
      l.entries.push([name, d.pick<JVal>([1, 'x', null])]);
      b.defect(`object.unknown-field:lines[].${name}`, ['validation_failed'], [`lines[${i}].${name}`]);
    }],
    [2, () => {
      // The same (itemId, location) twice; `default` spelled out on one side and omitted on the other counts too.
      const copy = clone(l) as Obj;
      const location = copy.get('location');
      if (location === 'default' && d.bool()) copy.delete('location');
      else if (location === undefined && d.bool()) copy.set('location', 'default');
      (ls as JVal[]).push(copy);
      b.defect('lines.duplicate-pair', ['validation_failed'], ['lines']);
    }],
    [(ls as JVal[]).length < 100 ? 2 : 0, () => {
      // An allocated item in a second line (api.md: one line only): the later line's itemId is named.
      const copy = clone(l) as Obj;
      copy.delete('location');
      (ls as JVal[]).push(copy);
      if (body.get('allocation') === undefined) body.set('allocation', obj({ strategy: 'most_available' }));
      b.defect('lines.allocated-twice', ['validation_failed'], [`lines[${(ls as JVal[]).length - 1}].itemId`]);
    }],
  ])();
}

/** Bytes that are not one JSON document, or too many of them. */
function malformedBody(d: Draw, b: Builder): void {
  const valid = jsonBody(b) ? encode(jsonBody(b)!) : Buffer.from('{}');
  const kinds: [number, () => [string, Buffer]][] = [
    [3, () => ['json.truncated', valid.subarray(0, d.int(1, valid.length - 1))]],
    [2, () => ['json.trailing', Buffer.concat([valid, Buffer.from(d.pick([' x', '}', ',', '{}', ' null', '\u0000', ']']))])]],
    [1, () => ['json.single-quotes', Buffer.from(valid.length > 2 ? valid.toString('utf8').replaceAll('"', "'") : "{'repair':true}")]],
    [1, () => ['json.trailing-comma', Buffer.from(valid.toString('utf8').replace(/}$/, ',}'))]],
    [1, () => ['json.comment', Buffer.concat([Buffer.from('/* c */'), valid])]],
    [1, () => ['json.raw-control-in-string', Buffer.from(`{"x":"a${d.pick(['\u0000', '\u0001', '\n', '\u001f'])}b"}`)]],
    [1, () => ['json.unclosed-string', Buffer.from('{"lines": "abc')]],
    [1, () => ['json.deep-unclosed', Buffer.from('['.repeat(d.int(1000, 60_000)))]],
    [1, () => ['json.garbage', Buffer.from(d.chars(ALNUM + '{}[]":,', d.int(1, 200)))]],
    [1, () => ['json.utf16', Buffer.from(`\ufeff${valid.toString('utf8')}`, 'utf16le')]],
    [2, () => ['json.over-limit', Buffer.concat([valid, Buffer.alloc(d.pick([MAX_BODY_BYTES + 1 - valid.length, d.int(MAX_BODY_BYTES, 256 * 1024)]), 0x20)])]],
  ];
  const [label, bytes] = d.weighted(kinds)();
  b.draft.body = { bytes };
  b.draft.contentType = 'application/json';
  b.draft.padTo = null;
  b.defect(label, ['validation_failed'], ['body']);
}

/** A body of another media type, or none declared. */
export function mediaDefect(d: Draw, b: Builder): void {
  if (!b.draft.body || ('bytes' in b.draft.body && b.draft.body.bytes.length === 0)) {
    b.draft.body = { bytes: Buffer.from('{}') };
  }
  if (d.bool(0.75)) {
    b.draft.contentType = d.pick([
      'text/plain',
      'application/xml',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
      'application/octet-stream',
      'image/png',
      'application/jsonp',
      'application/json-seq',
      'text/html; charset=utf-8',
    ]);
    b.defect('media.other-type', ['unsupported_media_type']);
  } else {
    b.draft.contentType = null;
    b.defect('media.missing', ['unsupported_media_type', 'validation_failed'], ['body']);
  }
}

// --- decorations -----------------------------------------------------------------------------------------------

/** What an odd spelling of a path may turn into: another route, no route, or an invalid parameter. */
const ODD_PATH_CODES = ['not_found', 'method_not_allowed', 'reservation_not_found', 'item_not_found', 'validation_failed'];

/**
 * One decoration. `early` ones (content, headers, query) go before the defects, so a defect always has the last
 * word on what it breaks; `late` ones reshape the path or the body's bytes, after the defects.
 */
export function decorate(d: Draw, b: Builder, route: Route, phase: 'early' | 'late'): void {
  const body = jsonBody(b);
  if (phase === 'late') {
    const late: [number, () => void][] = [
      [2, () => {
        b.draft.path.push('');
        b.decorate('path.trailing-slash', ODD_PATH_CODES);
      }],
      [2, () => {
        b.draft.path.splice(d.int(0, b.draft.path.length - 1), 0, '');
        b.decorate('path.double-slash', ODD_PATH_CODES);
      }],
      [1, () => {
        b.draft.path.splice(d.int(0, b.draft.path.length), 0, ...d.pick([['.'], ['%2e'], ['fz', '..'], ['fz', '%2e%2e']]));
        b.decorate('path.dot-segment', ODD_PATH_CODES);
      }],
      [1, () => {
        b.draft.path[0] = b.draft.path[0]!.toUpperCase();
        b.decorate('path.case', ODD_PATH_CODES);
      }],
    ];
    if (body) {
      late.push([2, () => {
        b.draft.padTo = MAX_BODY_BYTES;
        b.decorate('size.at-limit@body');
      }]);
      late.push([1, () => {
        b.draft.body = { bytes: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), encode(body)]) };
        b.decorate('json.bom', ['validation_failed'], ['body']);
      }]);
    }
    d.weighted(late)();
    return;
  }
  const textField = body && route.body === 'reserve' ? d.pick(['reference', 'metadata']) : body && route.body === 'adjust' ? 'reason' : null;
  const options: [number, () => void][] = [
    [3, () => {
      b.draft.query = d.pick([
        '%zz',
        'a=%00',
        '__proto__[polluted]=1',
        'constructor[prototype][polluted]=1',
        'a=1&a=2&a=3',
        `q=${'x'.repeat(d.int(100, 4000))}`,
        '%',
        '&&&=',
        '?',
        'limit=-1&cursor=%ff',
        '[]=1&a[b][c]=d',
      ]);
      b.decorate('query.garbage', ['validation_failed']);
    }],
    [2, () => {
      b.header('X-Request-Id', d.pick(['x'.repeat(d.int(200, 6000)), 'é', '../../etc/passwd', '<script>alert(1)</script>', '%00', '{}', '"', 'a,b']));
      b.decorate('header.request-id');
    }],
    [2, () => {
      for (let i = d.int(1, 60); i > 0; i--) b.header(`X-Fuzz-${i}`, d.chars('abc é\u00ff\t;=,"', d.int(0, 40)).trim());
      b.decorate('header.junk');
    }],
    [1, () => {
      b.header('X-Fuzz-Big', 'y'.repeat(d.int(4000, 9000)));
      b.decorate('header.big');
      b.allowStatuses([431]);
    }],
    [1, () => {
      b.header('Accept', d.pick(['text/html', 'application/xml', '*/*', 'application/json;q=0', 'image/*']));
      b.decorate('header.accept');
    }],
  ];
  if (route.access !== 'public' && b.draft.authorization) {
    options.push([1, () => {
      b.draft.authorization = b.draft.authorization!.replace(/^Bearer /, 'bearer ');
      b.decorate('auth.lowercase-scheme', ['unauthorized']);
    }]);
    options.push([1, () => {
      const right = b.draft.authorization!;
      b.draft.authorization = null;
      const wrong = bearer(`fz-${d.chars(ALNUM, 20)}`);
      for (const v of d.bool() ? [right, wrong] : [wrong, right]) b.header('Authorization', v);
      b.decorate('auth.twice', ['unauthorized']);
    }]);
  }
  if (route.body === null && !b.draft.body) {
    options.push([1, () => {
      b.draft.body = { bytes: d.pick([Buffer.from('{"lines":[]}'), Buffer.from('{'), Buffer.alloc(d.int(1, 100_000), 0x5b)]) };
      b.draft.contentType = d.pick(['application/json', 'text/plain']);
      b.decorate('body.on-read', ['validation_failed', 'unsupported_media_type'], ['body']);
    }]);
  }
  if (b.draft.body) {
    options.push([2, () => {
      b.draft.contentType = d.pick(['application/json; charset=utf-8', 'application/json;charset=UTF-8', 'Application/JSON', 'application/json; charset=latin1', 'application/json, text/plain', 'application/json; foo=bar']);
      b.decorate('media.variant', ['unsupported_media_type', 'validation_failed'], ['body']);
    }]);
  }
  if (body) {
    options.push([2, () => {
      // Prototype keys where a careless merge would pollute: top level, a line, the metadata.
      const metadata = body.get('metadata');
      const ls = body.get('lines');
      const targets: Obj[] = [body, ...(metadata instanceof Obj ? [metadata] : []), ...(Array.isArray(ls) ? ls.filter((l): l is Obj => l instanceof Obj) : [])];
      d.pick(targets).entries.push(['__proto__', d.pick<JVal>([obj({ polluted: 'yes' }), 'x', null, obj({ toString: 'x' })])]);
      b.decorate('proto.__proto__', ['validation_failed'], ['body']);
    }]);
    if (body.entries.length > 0) options.push([1, () => {
      // A duplicate key whose LAST value is valid: JSON.parse keeps it; a stricter parser may refuse.
      const at = d.int(0, body.entries.length - 1);
      body.entries.splice(at, 0, [body.entries[at]![0], d.pick<JVal>([null, 'x', -1])]);
      b.decorate('json.duplicate-key-valid-last', ['validation_failed']);
    }]);
    const intField = ['quantity', 'delta', 'ttlSeconds'].find((k) => typeof body.get(k) === 'number');
    if (intField) {
      options.push([1, () => {
        const v = body.get(intField) as number;
        body.set(intField, Raw.text(d.pick([`${v}.0`, `${v}e0`, `${v}0e-1`, `${v}.000`, `${v}E+0`])));
        b.decorate('json.number-spelling', ['validation_failed'], [intField, 'body']);
      }]);
    }
  }
  if (body && textField) {
    const setText = (value: JVal) => {
      if (textField === 'metadata') {
        const metadata = body.get('metadata') instanceof Obj ? (body.get('metadata') as Obj) : new Obj();
        // At its 20 keys, a metadata object takes a new value, not a new key.
        const key = metadata.entries.length >= 20 ? d.pick(metadata.entries)[0] : d.pick(['note', 'constructor', 'prototype', 'toString', 'k']);
        metadata.set(key, value);
        body.set('metadata', metadata);
      } else body.set(textField, value);
    };
    options.push([3, () => {
      setText(fineText(d, 40) + d.pick(UNICODE.astral) + d.pick(UNICODE.bidi) + d.pick(UNICODE.zeroWidth));
      b.decorate(`text.unicode@${textField}`);
    }]);
    options.push([2, () => {
      setText(d.insert(fineText(d, 30), d.pick(UNICODE.otherControl)));
      b.decorate(`text.control@${textField}`, ['validation_failed'], [textField]);
    }]);
    options.push([1, () => {
      setText(new Raw(Buffer.concat([Buffer.from('"ab'), Buffer.from(d.pick([[0xff], [0xc3, 0x28], [0xed, 0xa0, 0x80], [0xf0, 0x9f]])), Buffer.from('cd"')])));
      b.decorate(`text.invalid-utf8@${textField}`, ['validation_failed'], [textField, 'body']);
    }]);
  }
  d.weighted(options)();
}
