import { ALNUM, type Draw } from './draw.js';
import type { Builder } from './case.js';
import type { WireRequest } from './wire.js';

/**
 * Broken HTTP/1.1 framing, written as raw bytes (Node's client cannot produce any of it). `guaranteed` ones leave
 * nothing a server may act on (RFC 9112: a second, different Content-Length; an unparseable chunk; a request cut
 * off before its end; …); the others a lenient server may repair (obs-fold, a control byte, an unknown version),
 * so they only ever ride on a request that is refused anyway. The statuses are what the HTTP layer answers itself.
 */

interface Parts {
  requestLine: string;
  headers: string[];
  body: Buffer;
}

function partsOf(w: WireRequest): Parts {
  return {
    requestLine: `${w.method} ${w.target} HTTP/1.1`,
    headers: ['Host: 127.0.0.1', ...w.headers.map(([k, v]) => `${k}: ${v}`)],
    body: w.body ?? Buffer.alloc(0),
  };
}

function bytes(p: Parts, opts: { eol?: string; contentLength?: boolean } = {}): Buffer {
  const eol = opts.eol ?? '\r\n';
  const headers = [...p.headers];
  if (opts.contentLength !== false && p.body.length > 0) headers.push(`Content-Length: ${p.body.length}`);
  const head = [p.requestLine, ...headers, 'Connection: close', '', ''].join(eol);
  return Buffer.concat([Buffer.from(head, 'utf8'), p.body]);
}

const chunked = (body: Buffer, d: Draw): Buffer => {
  const parts: Buffer[] = [];
  for (let at = 0; at < body.length; ) {
    const size = Math.min(body.length - at, d.int(1, 4096));
    parts.push(Buffer.from(`${size.toString(16)}\r\n`), body.subarray(at, at + size), Buffer.from('\r\n'));
    at += size;
  }
  parts.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(parts);
};

export type FramingKind = 'guaranteed' | 'extra' | 'valid';

/** Applies one framing defect of the given kind to the builder's request (after every other change). */
export function frame(d: Draw, b: Builder, kind: FramingKind): void {
  const w = b.wire();
  const p = partsOf(w);
  const raw = (buf: Buffer, end = false) => ({ bytes: buf, end });
  const guaranteed: [number, () => void][] = [
    [3, () => {
      const all = bytes(p);
      const headEnd = all.indexOf('\r\n\r\n');
      b.framing('frame.truncated-head', true, [400, 408], raw(all.subarray(0, d.int(1, headEnd + 2)), true), true);
    }],
    [3, () => {
      const body = p.body.length > 0 ? p.body : Buffer.from('{"x":1}');
      const head = bytes({ ...p, body: Buffer.alloc(0) }).subarray(0, -2);
      const cut = Buffer.concat([head, Buffer.from(`Content-Length: ${body.length}\r\n\r\n`), body.subarray(0, d.int(0, body.length - 1))]);
      // A read may be answered before its body arrives: only a mutation is sure never to happen.
      b.framing('frame.truncated-body', b.mutating, [400, 408], raw(cut, true), true);
      b.refusalEnough();
    }],
    [2, () => {
      const n = p.body.length;
      const lengths = [`Content-Length: ${n}`, `Content-Length: ${n + d.int(1, 5)}`];
      if (d.bool()) lengths.reverse();
      b.framing('frame.content-length-twice', true, [400], raw(bytes({ ...p, headers: [...p.headers, ...lengths] }, { contentLength: false })));
    }],
    [2, () => {
      const value = d.pick(['abc', '-1', '1e3', '5 5', '+5', '0x10', '99999999999999999999999', '']);
      b.framing('frame.content-length-invalid', true, [400], raw(bytes({ ...p, headers: [...p.headers, `Content-Length: ${value}`] }, { contentLength: false })));
    }],
    [2, () => {
      const body = Buffer.concat([Buffer.from(`${d.pick(['zz', '-1', '0x5', 'g', 'ffffffffffffffffffff'])}\r\n`), p.body, Buffer.from('\r\n0\r\n\r\n')]);
      b.framing('frame.chunk-invalid', true, [400, 413], raw(bytes({ ...p, headers: [...p.headers, 'Transfer-Encoding: chunked'], body }, { contentLength: false })));
    }],
    [1, () => {
      const coding = d.pick(['gzip', 'chunked, gzip', 'identity', 'x-fuzz']);
      b.framing('frame.transfer-encoding-unknown', true, [400], raw(bytes({ ...p, headers: [...p.headers, `Transfer-Encoding: ${coding}`] }, { contentLength: false })));
    }],
    [2, () => {
      const header = d.pick(['X-Fuzz : 1', 'X Fuzz: 1', '(x): 1', ': no-name', 'X-Fuzz\u0001: 1', 'Hé: 1', '"q": 1']);
      b.framing('frame.header-name-invalid', true, [400], raw(bytes({ ...p, headers: [...p.headers, header] })));
    }],
    [1, () => {
      const [method, target] = [w.method, w.target];
      const line = d.pick([`${target} HTTP/1.1`, `${method} ${target} x HTTP/1.1`, `${method} ${target} HTTP/1.1 x`]);
      b.framing('frame.request-line-invalid', true, [400], raw(bytes({ ...p, requestLine: line })));
    }],
  ];
  const extra: [number, () => void][] = [
    [2, () => {
      const body = chunked(p.body.length > 0 ? p.body : Buffer.from('{}'), d);
      b.framing('frame.content-length-and-chunked', false, [400], raw(bytes({ ...p, headers: [...p.headers, 'Transfer-Encoding: chunked', `Content-Length: ${p.body.length}`], body }, { contentLength: false })));
    }],
    [2, () => {
      const ctl = d.pick(['\u0000', '\u0001', '\u0008', '\u000b', '\u007f', '\r']);
      b.framing('frame.control-byte-in-header', false, [400], raw(bytes({ ...p, headers: [...p.headers, `X-Fuzz: a${ctl}b`] })));
    }],
    [1, () => {
      b.framing('frame.obs-fold', false, [400], raw(bytes({ ...p, headers: [...p.headers, 'X-Fuzz: a', ' folded'] })));
    }],
    [2, () => {
      b.framing('frame.header-too-large', false, [431], raw(bytes({ ...p, headers: [...p.headers, `X-Fuzz-Big: ${'z'.repeat(d.int(17_000, 80_000))}`] })));
    }],
    [1, () => {
      const many = Array.from({ length: d.int(2_100, 4_000) }, (_, i) => `X-H-${i}: ${d.chars(ALNUM, 4)}`);
      b.framing('frame.too-many-headers', false, [431], raw(bytes({ ...p, headers: [...p.headers, ...many] })));
    }],
    [2, () => {
      const version = d.pick(['HTTP/1.2', 'HTTP/2.0', 'HTTP/3.0', 'HTTP/0.9', 'HTTP/1', 'http/1.1', 'HTTP/1.1x', 'HTTP/11.1']);
      b.framing('frame.version', false, [400], raw(bytes({ ...p, requestLine: `${w.method} ${w.target} ${version}` })));
    }],
    [2, () => {
      b.framing('frame.expect-unknown', false, [417], raw(bytes({ ...p, headers: [...p.headers, `Expect: ${d.pick(['foo', '100-continue, foo', '200-ok', ''])}`] })));
    }],
    [1, () => {
      b.framing('frame.bare-lf', false, [400], raw(bytes(p, { eol: '\n' })));
    }],
    [1, () => {
      // No version (or one glued to the target): llhttp takes it for HTTP/0.9 and serves it, headers and all.
      const line = d.pick([`${w.method} ${w.target}`, `${w.method} ${w.target}HTTP/1.1`]);
      b.framing('frame.no-version', false, [400], raw(bytes({ ...p, requestLine: line })), false, ['not_found', 'method_not_allowed', 'validation_failed']);
    }],
    [1, () => {
      const target = `http://127.0.0.1${w.target}`;
      const codes = ['not_found', 'method_not_allowed', 'validation_failed'];
      b.framing('frame.absolute-form', false, [400], raw(bytes({ ...p, requestLine: `${w.method} ${target} HTTP/1.1` })), false, codes);
    }],
  ];
  const valid: [number, () => void][] = [
    [2, () => {
      const [, ...rest] = p.headers;
      b.framing('frame.http-1.0', false, [], raw(bytes({ ...p, requestLine: `${w.method} ${w.target} HTTP/1.0`, headers: d.bool() ? rest : p.headers })));
    }],
    [2, () => {
      b.framing('frame.expect-100-continue', false, [], raw(bytes({ ...p, headers: [...p.headers, 'Expect: 100-continue'] })));
    }],
    [2, () => {
      if (p.body.length === 0) return b.framing('frame.raw', false, [], raw(bytes(p)));
      const body = chunked(p.body, d);
      b.framing('frame.chunked', false, [], raw(bytes({ ...p, headers: [...p.headers, 'Transfer-Encoding: chunked'], body }, { contentLength: false })));
    }],
    [1, () => {
      const upper = d.bool();
      const headers = p.headers.map((h) => h.replace(/^[^:]+/, (n) => (upper ? n.toUpperCase() : n.toLowerCase())));
      b.framing('frame.header-case', false, [], raw(bytes({ ...p, headers })));
    }],
  ];
  d.weighted(kind === 'guaranteed' ? guaranteed : kind === 'extra' ? extra : valid)();
}
