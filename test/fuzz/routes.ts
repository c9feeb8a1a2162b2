import { ALNUM, FINE_TEXT, ID_ALPHABET, VISIBLE_ASCII, pct, type Draw } from './draw.js';
import { Obj, obj, type JVal } from './json.js';
import type { Builder, World } from './case.js';

/**
 * Every route of the service, with a generator of VALID requests (`base`) and the semantic defects that make a
 * valid request fail by the contract's rules (unknown item, not enough stock, …). The harness checks this table
 * against the served OpenAPI document, so a route added later without a generator fails the fuzz test.
 */

export type Access = 'public' | 'client' | 'operator';
/** The JSON body a route takes: its schema is in bodies.ts. `none`: a route that takes no body. */
export type BodyKind = 'reserve' | 'stockSet' | 'adjust' | 'admin' | 'releaseByReference' | 'extend' | 'none';

export interface Route {
  name: string;
  method: string;
  /** The path as Fastify registers it. */
  template: string;
  access: Access;
  mutating: boolean;
  weight: number;
  param: 'itemId' | 'id' | null;
  body: BodyKind | null;
  /** Fills the builder's draft with a valid request. */
  base(d: Draw, w: World, b: Builder): void;
  /** Defects that keep the request well-formed but make the service refuse it. */
  semantic: ((d: Draw, w: World, b: Builder) => void)[];
}

/** Methods each path answers (GET routes answer HEAD too); anything else there is a 405. */
export const METHODS_BY_TEMPLATE: Record<string, string[]> = {
  '/items/:itemId/availability': ['GET', 'HEAD'],
  '/items/:itemId/stock': ['PUT'],
  '/items/:itemId/stock/adjustments': ['POST'],
  '/reservations': ['GET', 'HEAD', 'POST'],
  // GET and HEAD there read the reservation with id "release" (GET /reservations/:id): none, 404.
  '/reservations/release': ['GET', 'HEAD', 'POST'],
  '/reservations/:id': ['GET', 'HEAD'],
  '/reservations/:id/confirm': ['POST'],
  '/reservations/:id/release': ['POST'],
  '/reservations/:id/extend': ['POST'],
  '/health/live': ['GET', 'HEAD'],
  '/health/ready': ['GET', 'HEAD'],
  '/metrics': ['GET', 'HEAD'],
  '/openapi.json': ['GET', 'HEAD'],
  '/asyncapi.json': ['GET', 'HEAD'],
  '/docs': ['GET', 'HEAD'],
  '/events': ['GET', 'HEAD'],
  '/admin/reconciliation': ['GET', 'HEAD', 'POST'],
};

export const bearer = (secret: string) => `Bearer ${secret}`;

/** Valid credentials for the route: mostly the least role that may call it. */
function authorise(d: Draw, w: World, b: Builder, access: Access): void {
  if (access === 'public') {
    if (d.bool(0.1)) b.draft.authorization = bearer(d.pick([w.credentials.client, w.credentials.operator]));
    return;
  }
  const secret = access === 'operator' || d.bool(0.2) ? w.credentials.operator : w.credentials.client;
  b.draft.authorization = bearer(secret);
}

/** Ordinary text, 1–`max` characters, with the odd bidi mark, zero-width or astral character. */
export function fineText(d: Draw, max = 40): string {
  let s = d.chars(ALNUM + ' -_/.', d.int(1, Math.min(max, 30)));
  for (let i = d.int(0, 3); i > 0; i--) s = d.insert(s, d.pick(FINE_TEXT));
  return s;
}

const stockedPairs = (w: World) =>
  w.items.flatMap((item) => item.locations.map((l) => ({ itemId: item.id, location: l.name, onHand: l.onHand, available: l.available })));

function line(d: Draw, pair: { itemId: string; location: string }, quantity: number): Obj {
  const l = obj({ itemId: pair.itemId });
  if (pair.location !== 'default' || d.bool(0.3)) l.set('location', pair.location);
  l.set('quantity', quantity);
  return d.bool(0.5) ? new Obj([...l.entries].reverse()) : l;
}

function reserveBody(d: Draw, w: World, b: Builder): Obj {
  const pairs = stockedPairs(w).filter((p) => p.available >= 1);
  const chosen = [...new Set(Array.from({ length: d.int(1, 3) }, () => d.pick(pairs)))];
  const body = obj({ lines: chosen.map((p) => line(d, p, d.int(1, Math.min(3, p.available)))) });
  if (d.bool(0.35)) allocate(d, w, body, chosen);
  if (d.bool(0.4)) body.set('ttlSeconds', d.pick([1, 60, 900, 86_400, d.int(1, 86_400)]));
  if (d.bool(0.5)) {
    const atLimit = d.bool(0.15);
    body.set('reference', atLimit ? d.chars(ALNUM, 255) : fineText(d));
    if (atLimit) b.decorate('size.at-limit@reference');
  }
  if (d.bool(0.4)) {
    const atLimit = d.bool(0.1);
    const metadata = new Obj();
    const count = atLimit ? 20 : d.int(0, 3);
    for (let i = 0; i < count; i++) {
      const key = atLimit ? `${i}`.padStart(2, '0') + d.chars(ALNUM, 62) : `k${i}${d.chars(ALNUM, d.int(0, 8))}`;
      metadata.set(key, atLimit ? d.chars(ALNUM, 500) : d.bool(0.2) ? '' : fineText(d));
    }
    if (atLimit) b.decorate('size.at-limit@metadata');
    body.set('metadata', metadata);
  }
  if (d.bool(0.3)) body.set('priority', d.pick(['normal', 'high']));
  return body;
}

/**
 * Gives the body a valid `allocation` under which every line it allocates can be held (so the semantic defects'
 * codes stay the only ones): a line is allocated only if its item is in no other line, and its own location is
 * among the candidates (or, for single_location, the one location every allocated line shares).
 */
function allocate(d: Draw, w: World, body: Obj, chosen: { itemId: string; location: string }[]): void {
  const lines = body.get('lines') as Obj[];
  const names = [...new Set(w.items.flatMap((i) => i.locations.map((l) => l.name)))];
  const strategy = d.pick(['ordered', 'most_available', 'single_location'] as const);
  const shared = chosen[0]!.location;
  const alone = (p: { itemId: string }) => chosen.filter((c) => c.itemId === p.itemId).length === 1;
  const allocated = chosen.map((p) => alone(p) && (strategy !== 'single_location' || p.location === shared) && d.bool(0.8));
  lines.forEach((l, i) => (allocated[i] ? l.delete('location') : l.set('location', chosen[i]!.location)));
  const own = strategy === 'single_location' ? [shared] : chosen.filter((_, i) => allocated[i]).map((p) => p.location);
  const extra = shuffled(d, [...names, unknownLocation(d)]).slice(0, d.int(0, 3));
  const locations = shuffled(d, [...new Set([...own, ...extra])]);
  const allocation = obj({ strategy });
  if (strategy !== 'most_available' || d.bool(0.5)) allocation.set('locations', locations.length > 0 ? locations : [shared]);
  if (d.bool(0.6)) allocation.set('split', strategy === 'single_location' ? false : d.bool());
  body.set('allocation', allocation);
}

function shuffled<T>(d: Draw, items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = d.int(0, i);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

let keys = 0;
/**
 * A fresh Idempotency-Key: never a seeded one (those start `fz-seed-`), never one used before in this process (a
 * count, since drawn text repeats: fast-check favours edge values), so no rejected request can meet a key that an
 * accepted one bound.
 */
export function freshKey(d: Draw, b: Builder): string {
  const unique = `fz-k-${keys++}-`;
  if (d.bool(0.1)) {
    b.decorate('size.at-limit@Idempotency-Key');
    return unique + d.chars(VISIBLE_ASCII, 255 - unique.length);
  }
  return unique + d.chars(VISIBLE_ASCII, d.int(1, 40));
}

const seeded = (d: Draw, w: World) => d.pick(w.reservations);
const unknownItem = (d: Draw) => `fz-unknown-${d.chars(ID_ALPHABET, d.int(1, 100))}`;
const unknownLocation = (d: Draw) => `fz-nowhere-${d.chars(ID_ALPHABET, d.int(1, 50))}`;
/** Sets the request's one If-Match header (two would be a list: malformed, whatever each says). */
function ifMatch(b: Builder, value: string): void {
  b.draft.headers = b.draft.headers.filter(([k]) => k.toLowerCase() !== 'if-match');
  b.header('If-Match', value);
}

/** A UUID no reservation has (version nibble 4: this service makes v7 ids). */
export const unknownUuid = (d: Draw) =>
  d.pick([
    '00000000-0000-0000-0000-000000000000',
    'ffffffff-ffff-ffff-ffff-ffffffffffff',
    `${d.chars('0123456789abcdef', 8)}-${d.chars('0123456789abcdef', 4)}-4${d.chars('0123456789abcdef', 3)}-8${d.chars('0123456789abcdef', 3)}-${d.chars('0123456789abcdef', 12)}`,
  ]);

function json(b: Builder, body: JVal): void {
  b.draft.body = { json: body };
  b.draft.contentType = 'application/json';
}

function lines(b: Builder): Obj[] {
  const body = b.draft.body && 'json' in b.draft.body ? b.draft.body.json : null;
  const ls = body instanceof Obj ? body.get('lines') : undefined;
  return Array.isArray(ls) ? ls.filter((l): l is Obj => l instanceof Obj) : [];
}

export const ROUTES: Route[] = [
  {
    name: 'GET /items/:itemId/availability',
    method: 'GET',
    template: '/items/:itemId/availability',
    access: 'client',
    mutating: false,
    weight: 8,
    param: 'itemId',
    body: null,
    base(d, w, b) {
      b.draft.path[1] = pct(d.bool(0.7) ? d.pick(w.items).id : unknownItem(d));
      authorise(d, w, b, 'client');
    },
    semantic: [],
  },
  {
    name: 'PUT /items/:itemId/stock',
    method: 'PUT',
    template: '/items/:itemId/stock',
    access: 'operator',
    mutating: true,
    weight: 12,
    param: 'itemId',
    body: 'stockSet',
    base(d, w, b) {
      b.draft.path[1] = pct(d.bool(0.7) ? d.pick(w.items).id : unknownItem(d));
      const body = obj({ quantity: d.pick([0, 1, 1_000_000_000, d.int(0, 1_000_000_000)]) });
      if (d.bool(0.6)) body.set('location', d.bool(0.5) ? d.pick(stockedPairs(w)).location : unknownLocation(d));
      if (d.bool(0.4)) body.set('safetyStock', d.pick([0, 1, 1_000_000_000, d.int(0, 1_000_000_000)]));
      json(b, body);
      authorise(d, w, b, 'operator');
    },
    semantic: [],
  },
  {
    name: 'POST /items/:itemId/stock/adjustments',
    method: 'POST',
    template: '/items/:itemId/stock/adjustments',
    access: 'operator',
    mutating: true,
    weight: 12,
    param: 'itemId',
    body: 'adjust',
    base(d, w, b) {
      const pair = d.pick(stockedPairs(w));
      b.draft.path[1] = pct(pair.itemId);
      // Mostly decreases: should a defective one be accepted, the "more than on hand" defects stay true.
      const body = obj({ delta: d.weighted([[9, -d.int(1, 3)], [1, d.int(1, 3)]]) });
      if (pair.location !== 'default' || d.bool(0.3)) body.set('location', pair.location);
      if (d.bool(0.5)) body.set('reason', fineText(d));
      json(b, body);
      authorise(d, w, b, 'operator');
    },
    semantic: [
      (d, _w, b) => {
        b.draft.path[1] = pct(unknownItem(d));
        b.defect('sem.unknown-item', ['item_not_found']);
      },
      (d, _w, b) => {
        const body = (b.draft.body as { json: Obj }).json;
        body.set('location', unknownLocation(d));
        b.defect('sem.unknown-location', ['item_not_found']);
      },
      (d, w, b) => {
        const body = (b.draft.body as { json: Obj }).json;
        const itemId = decodeURIComponent(b.draft.path[1]!);
        const location = (body.get('location') as string | undefined) ?? 'default';
        // Another semantic defect may have made the item or location unknown already: then any delta is refused.
        const onHand = w.items.find((i) => i.id === itemId)?.locations.find((l) => l.name === location)?.onHand ?? 0;
        body.set('delta', -d.pick([onHand + 1, onHand + d.int(1, 1000), 1_000_000_000]));
        b.defect('sem.below-zero', ['insufficient_stock']);
      },
    ],
  },
  {
    name: 'POST /reservations',
    method: 'POST',
    template: '/reservations',
    access: 'client',
    mutating: true,
    weight: 30,
    param: null,
    body: 'reserve',
    base(d, w, b) {
      json(b, reserveBody(d, w, b));
      b.header('Idempotency-Key', freshKey(d, b));
      authorise(d, w, b, 'client');
    },
    semantic: [
      (d, _w, b) => {
        const ls = (b.draft.body as { json: Obj }).json.get('lines') as JVal[];
        // Inserted, or in place of a line once the request is at the limit of 100.
        const at = d.int(0, ls.length - 1);
        ls.splice(at, ls.length >= 100 ? 1 : 0, obj({ itemId: unknownItem(d), quantity: 1 }));
        b.defect('sem.unknown-item', ['item_not_found']);
      },
      (d, _w, b) => {
        d.pick(lines(b)).set('location', unknownLocation(d));
        b.defect('sem.unknown-location', ['item_not_found']);
      },
      (d, w, b) => {
        const l = d.pick(lines(b));
        const pair = stockedPairs(w).find((p) => p.itemId === l.get('itemId') && p.location === ((l.get('location') as string) ?? 'default'));
        const onHand = pair?.onHand ?? 0;
        // An allocated line may be held anywhere its item is stocked: only more than all of it is short for certain.
        const allocated = l.get('location') === undefined && (b.draft.body as { json: Obj }).json.get('allocation') !== undefined;
        l.set('quantity', allocated ? 1_000_000 : d.pick([onHand + 1, d.int(onHand + 1, 1_000_000), 1_000_000]));
        b.defect('sem.insufficient', ['insufficient_stock']);
      },
      (d, _w, b) => {
        // 100 lines (the limit), every item unknown: a big, well-formed request that holds nothing.
        const body = (b.draft.body as { json: Obj }).json;
        body.set('lines', Array.from({ length: 100 }, (_, i) => obj({ itemId: `fz-unknown-${i}-${d.chars(ID_ALPHABET, 100)}`, quantity: 1_000_000 })));
        b.defect('sem.unknown-item×100', ['item_not_found']);
      },
      (d, w, b) => {
        // A seeded key (client scope) with another body: 422, and the seeded reservation stays as it was.
        const r = seeded(d, w);
        b.draft.headers = b.draft.headers.filter(([k]) => k.toLowerCase() !== 'idempotency-key');
        b.header('Idempotency-Key', r.key);
        b.setAuthorization(bearer(w.credentials.client));
        (b.draft.body as { json: Obj }).json.set('reference', `fz-reuse-${d.int(0, 1e9)}`);
        b.defect('sem.key-reused', ['idempotency_key_reused']);
      },
    ],
  },
  {
    name: 'GET /reservations',
    method: 'GET',
    template: '/reservations',
    access: 'client',
    mutating: false,
    weight: 4,
    param: null,
    body: null,
    base(d, w, b) {
      // A seeded reservation's reference (or one no reservation has), maybe a status, a limit, a cursor.
      const reference = d.bool(0.8) ? (seeded(d, w).reference ?? 'fz-none') : `fz-ref-${d.chars(ALNUM, 8)}`;
      const params = [`reference=${pct(reference)}`];
      if (d.bool(0.3)) params.push(`status=${d.pick(['pending', 'confirmed', 'released', 'expired'])}`);
      if (d.bool(0.4)) params.push(`limit=${d.int(1, 100)}`);
      b.draft.query = params.join('&');
      authorise(d, w, b, 'client');
    },
    semantic: [],
  },
  {
    name: 'POST /reservations/release',
    method: 'POST',
    template: '/reservations/release',
    access: 'client',
    mutating: true,
    weight: 6,
    param: null,
    body: 'releaseByReference',
    base(d, w, b) {
      json(b, obj({ reference: seeded(d, w).reference ?? `fz-ref-${d.chars(ALNUM, 8)}` }));
      authorise(d, w, b, 'client');
    },
    semantic: [],
  },
  {
    name: 'GET /reservations/:id',
    method: 'GET',
    template: '/reservations/:id',
    access: 'client',
    mutating: false,
    weight: 6,
    param: 'id',
    body: null,
    base(d, w, b) {
      const id = seeded(d, w).id;
      b.draft.path[1] = d.weighted([
        [6, id],
        [2, unknownUuid(d)],
        [1, id.toUpperCase()],
        [1, pct(`${id}${d.pick(['x', ' ', '\u0000', '\u202e', '😀'])}`)],
      ]);
      authorise(d, w, b, 'client');
    },
    semantic: [],
  },
  ...(['confirm', 'release'] as const).map(
    (action): Route => ({
      name: `POST /reservations/:id/${action}`,
      method: 'POST',
      template: `/reservations/:id/${action}`,
      access: 'client',
      mutating: true,
      weight: 10,
      param: 'id',
      body: 'none',
      base(d, w, b) {
        b.draft.path[1] = seeded(d, w).id;
        const shape = d.int(0, 2);
        if (shape === 1) json(b, new Obj()); // a body without `lines` acts on everything (api.md)
        if (shape === 2) {
          b.draft.contentType = 'application/json';
          b.draft.body = { bytes: Buffer.alloc(0) };
        }
        authorise(d, w, b, 'client');
      },
      semantic: [
        (d, _w, b) => {
          b.draft.path[1] = unknownUuid(d);
          b.defect('sem.unknown-id', ['reservation_not_found']);
        },
        (d, _w, b) => {
          // Only `"<positive integer>"` or `*` (api.md "Versions"): a weak tag, a list, a bare or odd number is a 400.
          ifMatch(b, d.pick(['W/"1"', '1', '"0"', '"01"', '"-1"', '"x"', '""', '"1", "2"', '"1234567890123456"', '**']));
          b.defect('sem.if-match-malformed', ['validation_failed'], ['If-Match']);
        },
        (d, _w, b) => {
          // The seeded reservations are pending at version 1 for the whole run (or expired, at 2): never this one.
          ifMatch(b, `"${d.int(3, 999_999_999)}"`);
          b.defect('sem.if-match-stale', ['precondition_failed']);
        },
      ],
    }),
  ),
  {
    name: 'POST /reservations/:id/extend',
    method: 'POST',
    template: '/reservations/:id/extend',
    access: 'client',
    mutating: true,
    weight: 8,
    param: 'id',
    body: 'extend',
    base(d, w, b) {
      b.draft.path[1] = seeded(d, w).id;
      json(b, obj({ ttlSeconds: d.int(1, 86_400) }));
      authorise(d, w, b, 'client');
    },
    semantic: [
      (d, _w, b) => {
        b.draft.path[1] = unknownUuid(d);
        b.defect('sem.unknown-id', ['reservation_not_found']);
      },
      (d, _w, b) => {
        ifMatch(b, d.pick(['W/"1"', '1', '"0"', '"01"', '"-1"', '"x"', '""', '"1", "2"', '"1234567890123456"', '**']));
        b.defect('sem.if-match-malformed', ['validation_failed'], ['If-Match']);
      },
      (d, _w, b) => {
        // The seeded reservations are pending at version 1 for the whole run (or expired, at 2): never this one.
        ifMatch(b, `"${d.int(3, 999_999_999)}"`);
        b.defect('sem.if-match-stale', ['precondition_failed']);
      },
    ],
  },
  ...(['/health/live', '/health/ready', '/metrics', '/openapi.json', '/asyncapi.json'] as const).map(
    (path): Route => ({
      name: `GET ${path}`,
      method: 'GET',
      template: path,
      access: 'public',
      mutating: false,
      weight: 2,
      param: null,
      body: null,
      base(d, w, b) {
        authorise(d, w, b, 'public');
      },
      semantic: [],
    }),
  ),
  {
    name: 'GET /docs',
    method: 'GET',
    template: '/docs',
    access: 'public',
    mutating: false,
    weight: 3,
    param: null,
    body: null,
    base(d, w, b) {
      // The interactive docs serve static files: try to walk out of their directory too.
      b.draft.path = d.pick([
        ['docs'],
        ['docs', ''],
        ['docs', 'json'],
        ['docs', 'yaml'],
        ['docs', 'static', 'index.html'],
        ['docs', 'static', 'swagger-initializer.js'],
        ['docs', 'static', '..', '..', 'package.json'],
        ['docs', 'static', '%2e%2e', '%2e%2e', '%2e%2e', 'package.json'],
        ['docs', 'static', '..%2f..%2f..%2fpackage.json'],
        ['docs', 'static', '%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd'],
        ['docs', 'static', '....', '....', 'etc', 'passwd'],
        ['docs', 'static', '%00'],
        ['docs', 'static', d.chars(ALNUM, d.int(1, 300))],
      ]);
      authorise(d, w, b, 'public');
    },
    semantic: [],
  },
  {
    name: 'GET /admin/reconciliation',
    method: 'GET',
    template: '/admin/reconciliation',
    access: 'operator',
    mutating: false,
    weight: 2,
    param: null,
    body: null,
    base(d, w, b) {
      authorise(d, w, b, 'operator');
    },
    semantic: [],
  },
  {
    name: 'GET /events',
    method: 'GET',
    template: '/events',
    access: 'operator',
    mutating: false,
    weight: 2,
    param: null,
    body: null,
    base(d, w, b) {
      // From the start, or after a cursor (one past the end reads an empty page), maybe a limit.
      const params: string[] = [];
      if (d.bool(0.5)) params.push(`after=${d.pick(['0', '1', String(d.int(0, 1e9))])}`);
      if (d.bool(0.5)) params.push(`limit=${d.pick([1, 1000, d.int(1, 1000)])}`);
      b.draft.query = params.join('&');
      authorise(d, w, b, 'operator');
    },
    semantic: [
      (d, _w, b) => {
        b.draft.query = `limit=${d.pick(['0', '1001', '-5', '2.5', 'all'])}`;
        b.defect('sem.events-limit', ['validation_failed'], ['limit']);
      },
      (d, _w, b) => {
        b.draft.query = `after=${d.pick(['-1', '007', 'abc', '1e9', '99999999999999999', `x${pct(d.chars(ALNUM, d.int(1, 40)))}`])}`;
        b.defect('sem.events-cursor', ['validation_failed'], ['after']);
      },
    ],
  },
  {
    name: 'POST /admin/reconciliation',
    method: 'POST',
    template: '/admin/reconciliation',
    access: 'operator',
    mutating: true,
    weight: 4,
    param: null,
    body: 'admin',
    base(d, w, b) {
      const shape = d.int(0, 2);
      if (shape === 1) json(b, new Obj());
      if (shape === 2) json(b, obj({ repair: d.bool() }));
      authorise(d, w, b, 'operator');
    },
    semantic: [],
  },
  {
    // Paths no route has (and the ways out of the tree): a hostile request need not aim at a route.
    name: '(no route)',
    method: 'GET',
    template: '(none)',
    access: 'public',
    mutating: false,
    weight: 5,
    param: null,
    body: null,
    base(d, w, b) {
      b.draft.method = d.pick(['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS']);
      b.draft.path = d.pick([
        [''],
        ['items'],
        ['items', ''],
        ['items', 'fz-x'],
        ['items', 'fz-x', 'availability', 'extra'],
        ['items', 'fz-x', 'stock', 'adjustments', 'x'],
        ['reservations', 'x', 'cancel'],
        ['reservations', 'x', 'confirm', 'now'],
        ['health'],
        ['v1', 'reservations'],
        ['admin'],
        ['%zz'],
        ['%00'],
        ['..'],
        ['..', '..', 'etc', 'passwd'],
        ['%2e%2e', '%2e%2e', 'etc', 'passwd'],
        ['', ''],
        ['fz-junk', d.chars(ID_ALPHABET, d.int(1, 5000))],
        ['fz-junk', pct(d.chars(VISIBLE_ASCII + FINE_TEXT.join(''), d.int(1, 200)))],
      ]);
      authorise(d, w, b, d.pick<Access>(['public', 'client', 'operator']));
      b.defect('path.unrouted', ['not_found', 'method_not_allowed', 'validation_failed', 'reservation_not_found']);
    },
    semantic: [],
  },
];

/** The path of a route with its parameter still to fill (`path[1]` for both parameterised resources). */
export const pathOf = (route: Route): string[] => route.template.slice(1).split('/').map((s) => (s.startsWith(':') ? 'x' : s));
