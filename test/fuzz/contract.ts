import { errorCatalogue } from '../../src/domain/errors.js';
import { describeCase, type Case } from './case.js';
import type { Answer } from './wire.js';

/**
 * The contract every answer is held to (api.md, "Errors"): no 5xx; a refusal for every request that carries a
 * defect, with a code its defects allow; and every error an RFC 9457 problem whose `code` is in the catalogue,
 * with the catalogue's status and title, the same status in the body as on the status line.
 */
const CATALOGUE: Record<string, { status: number; title: string }> = errorCatalogue;

export interface Violation {
  kind: string;
  detail: string;
}

const clip = (s: string, n = 300) => (s.length > n ? `${s.slice(0, n)}…` : s);

/** Static files must never escape their directory. */
const LEAKS = [/"devDependencies"/, /root:x:0:0/, /DATABASE_URL=/];

const isHead = (c: Case) => (c.wire.raw ? c.wire.raw.bytes.subarray(0, 5).toString('latin1').toUpperCase() === 'HEAD ' : c.wire.method.toUpperCase() === 'HEAD');

export function judge(c: Case, a: Answer): Violation[] {
  const e = c.expect;
  if (a.kind === 'refused') return [{ kind: 'server-gone', detail: a.detail }];
  if (a.kind !== 'response') {
    if (e.silenceOk && a.kind === 'closed') return [];
    if (a.kind === 'closed' && a.detail.includes('HPE_')) return [{ kind: 'answer-unparseable', detail: a.detail }];
    return [{ kind: `no-answer:${a.kind}`, detail: a.kind === 'closed' ? a.detail : 'no answer within the timeout' }];
  }
  const v: Violation[] = [];
  const { status } = a;
  const text = a.body.toString('utf8');
  const shown = `${status} ${a.headers['content-type'] ?? '(no content-type)'} ${clip(JSON.stringify(text))}`;
  if (status >= 500) v.push({ kind: '5xx', detail: shown });
  if (status < 400) {
    if (c.mutating) v.push({ kind: 'mutating-request-accepted', detail: shown });
    else if (!e.open) v.push({ kind: 'defective-request-accepted', detail: shown });
    if (status < 300 && LEAKS.some((re) => re.test(text))) v.push({ kind: 'file-leak', detail: shown });
    return v;
  }

  if (!/^application\/problem\+json(;|$)/i.test(a.headers['content-type'] ?? '')) {
    v.push({ kind: 'not-problem-json', detail: shown });
    return v;
  }
  if (isHead(c)) return v;
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text) as Record<string, unknown>;
    if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new Error('not an object');
  } catch {
    v.push({ kind: 'problem-not-json', detail: shown });
    return v;
  }
  const { type, title, code } = body;
  if (typeof type !== 'string' || typeof title !== 'string' || typeof code !== 'string' || !Number.isInteger(body.status)) {
    v.push({ kind: 'problem-members', detail: shown });
    return v;
  }
  if (body.status !== status) v.push({ kind: 'problem-status-differs-from-status-line', detail: shown });
  const entry = Object.hasOwn(CATALOGUE, code) ? CATALOGUE[code] : undefined;
  if (!entry) v.push({ kind: 'code-not-in-catalogue', detail: shown });
  else if (entry.status !== status || entry.title !== title) v.push({ kind: 'code-status-or-title-not-the-catalogue-s', detail: shown });

  if (!e.open && !e.anyRefusal && status < 500) {
    const framingAnswer = e.statuses.has(status) && entry?.status === status;
    if (!e.codes.has(code) && !framingAnswer) {
      v.push({ kind: 'unexpected-code', detail: `${code}, allowed ${[...e.codes].join('|') || '-'} or status ${[...e.statuses].join('|') || '-'}: ${shown}` });
    }
  }
  if (code === 'validation_failed') {
    const errors = body.errors;
    const wellFormed =
      Array.isArray(errors) &&
      errors.length > 0 &&
      errors.every((x: unknown) => typeof (x as { field?: unknown }).field === 'string' && typeof (x as { message?: unknown }).message === 'string');
    if (!wellFormed) v.push({ kind: 'validation-errors-malformed', detail: shown });
    else if (!e.open && !e.anyRefusal && e.fields && e.fields.size > 0 && e.codes.has('validation_failed')) {
      const names = (errors as { field: string }[]).map((x) => x.field);
      const named = names.some((n) => [...e.fields!].some((f) => n === f || n.startsWith(`${f}.`) || n.startsWith(`${f}[`)));
      if (!named) v.push({ kind: 'field-not-named', detail: `expected one of ${[...e.fields].join(', ')}; named ${names.join(', ')}` });
    }
  }
  return v;
}

/**
 * Touches Node's HTTP parser refuses (or may refuse) before the app sees the request, in the order it meets them:
 * the request line, then the headers, then the body (a request cut off in its head first: nothing else arrived).
 */
const TRANSPORT = [
  // Cut off: whatever else it carries, the parser's last word is the missing rest.
  /^frame\.truncated-head/,
  /^(method\.made-up|method\.lowercase|frame\.request-line-invalid|frame\.version|frame\.no-version|frame\.absolute-form|frame\.bare-lf)/,
  /^(frame\.header-name-invalid|frame\.control-byte-in-header|frame\.obs-fold|auth\.control|idem\.control)/,
  /^(frame\.header-too-large|frame\.too-many-headers|auth\.huge|header\.big)/,
  /^(frame\.content-length|frame\.transfer-encoding|frame\.expect-unknown)/,
  /^(frame\.chunk-invalid|frame\.truncated-body)/,
];

interface Example {
  case: Case;
  violation: Violation;
  path: string;
  size: number;
}

/**
 * Violations grouped by class (what went wrong, on which route, from which defects), each with a count and its
 * smallest example, and the fast-check path that replays the batch it came from.
 */
export class Findings {
  private readonly classes = new Map<string, { count: number; routes: Set<string>; example: Example }>();

  get size(): number {
    return this.classes.size;
  }

  /**
   * The class: the violation and the defects behind it (with any framing touch, which decides what answers), across
   * routes: the same defect failing on five routes is one thing to fix.
   */
  add(c: Case, violation: Violation, path: string): void {
    const tidy = (l: string) => l.replace(/:[A-Z]+$/, '').replace('+duplicate-key', '');
    let labels = c.defects.map(tidy);
    // What the HTTP layer refused before the app saw the request: the first thing its parser trips on decides.
    const transport = [...c.defects, ...c.decorations].map(tidy).filter((l) => TRANSPORT.some((re) => re.test(l)));
    if (transport.length > 0 && /^(not-problem-json|no-answer|answer-unparseable)/.test(violation.kind)) {
      const rank = (l: string) => TRANSPORT.findIndex((re) => re.test(l));
      labels = [transport.sort((x, y) => rank(x) - rank(y))[0]!];
    }
    const key = `${violation.kind} | ${[...new Set(labels)].sort().join(' + ') || '(no defect)'}`;
    const size = c.wire.raw?.bytes.length ?? c.wire.target.length + (c.wire.body?.length ?? 0);
    const known = this.classes.get(key);
    if (!known) this.classes.set(key, { count: 1, routes: new Set([c.route]), example: { case: c, violation, path, size } });
    else {
      known.count++;
      known.routes.add(c.route);
      if (size < known.example.size) known.example = { case: c, violation, path, size };
    }
  }

  /** Every class, most frequent first. */
  report(replay: (path: string) => string): string {
    const rows = [...this.classes.entries()].sort((a, b) => b[1].count - a[1].count);
    const kinds = new Map<string, number>();
    for (const [key, { count }] of rows) kinds.set(key.split(' | ')[0]!, (kinds.get(key.split(' | ')[0]!) ?? 0) + count);
    const out = [`${rows.length} classes of contract violation (${[...kinds].map(([k, n]) => `${k}: ${n}`).join(', ')})`];
    for (const [key, { count, routes, example }] of rows) {
      out.push(
        '',
        `● ${key}  ×${count} on ${[...routes].sort().join(', ')}`,
        `  answer: ${example.violation.detail}`,
        describeCase(example.case),
        `  replay: ${replay(example.path)}`,
      );
    }
    return out.join('\n');
  }
}
