import fc from 'fast-check';
import { Builder, type Case, type World } from './case.js';
import { authDefect, bodyDefect, decorate, idempotencyDefect, mediaDefect, methodDefect, pathDefect } from './defects.js';
import { Draw } from './draw.js';
import { frame } from './framing.js';
import { ROUTES, pathOf, type Route } from './routes.js';

/**
 * One hostile request: a route, a valid request for it, a few decorations, and, on every mutating route (and on
 * most reads), one or two defects that each guarantee a refusal. Framing comes last, since it rewrites bytes.
 */
function buildCase(d: Draw, w: World): Case {
  const route = d.weighted(ROUTES.map((r) => [r.weight, r] as const));
  const b = new Builder(route.name, route.mutating, route.method, pathOf(route));
  route.base(d, w, b);
  if (!route.mutating && b.draft.method === 'GET' && d.bool(0.15)) b.draft.method = 'HEAD';
  for (let i = d.weighted([[4, 0], [4, 1], [2, 2]] as const); i > 0; i--) decorate(d, b, route, 'early');

  let framed = false;
  if (route.mutating || d.bool(0.7)) {
    // Semantic defects need the body as the base made it, so they go first; framing needs the final request.
    const drawn = Array.from({ length: d.weighted([[7, 1], [3, 2]] as const) }, () => pickDefect(d, route));
    // A second path, method, credential, header or media defect would only replace the first: one of each.
    const chosen = drawn.filter((c, i) => c.order <= 1 || drawn.findIndex((x) => x.order === c.order) === i);
    chosen.sort((x, y) => x.order - y.order);
    for (const c of chosen) {
      if (c.kind === 'framing') framed = true;
      else c.apply(d, w, b);
    }
  }
  if (d.bool(0.15)) decorate(d, b, route, 'late');
  if (framed) frame(d, b, 'guaranteed');
  else {
    const extra = d.weighted([[14, 'none'], [3, 'extra'], [2, 'valid']] as const);
    // A framing defect a lenient server might repair only rides on a request that is refused anyway.
    if (extra === 'valid' || (extra === 'extra' && b.defects.length > 0)) frame(d, b, extra);
  }
  return b.finish();
}

interface Chosen {
  kind: 'apply' | 'framing';
  /** Its family, in the order families apply: 0 semantic and 1 body add up; every later one replaces its kind. */
  order: number;
  apply: (d: Draw, w: World, b: Builder) => void;
}

function pickDefect(d: Draw, route: Route): Chosen {
  const families: [number, Chosen][] = [];
  const add = (weight: number, order: number, apply: Chosen['apply'], kind: Chosen['kind'] = 'apply') =>
    families.push([weight, { kind, order, apply }]);
  for (const s of route.semantic) add(route.name === 'POST /reservations' ? 3 : 5, 0, s);
  if (route.body !== null) {
    add(route.body === 'none' ? 4 : 14, 1, (dd, _w, b) => bodyDefect(dd, b, route));
    add(3, 2, (dd, _w, b) => mediaDefect(dd, b));
  }
  if (route.name === 'POST /reservations') add(6, 3, (dd, _w, b) => idempotencyDefect(dd, b));
  if (route.param) add(5, 4, (dd, w, b) => pathDefect(dd, w, b, route));
  if (route.access !== 'public') add(5, 5, (dd, w, b) => authDefect(dd, w, b, route));
  add(3, 6, (dd, _w, b) => methodDefect(dd, b, route));
  add(3, 7, () => undefined, 'framing');
  return d.weighted(families);
}

/** `size` requests to send at once. */
export const batchArbitrary = (world: World, size: number): fc.Arbitrary<Case[]> =>
  fc.gen().map((g) => {
    const d = new Draw(g);
    return Array.from({ length: size }, () => buildCase(d, world));
  });
