import fc from 'fast-check';
import { encode, type JVal } from './json.js';
import type { WireRequest } from './wire.js';

/** What the fuzzer knows of the service's state: seeded before the run, unchanged by it. */
export interface World {
  items: { id: string; locations: { name: string; onHand: number; available: number }[] }[];
  /** Pending reservations (long TTL), each made with the client credential and its Idempotency-Key. */
  reservations: { id: string; key: string; reference: string | null }[];
  credentials: { client: string; operator: string };
}

/**
 * What the contract allows as the answer to one request. A mutating route's request always carries at least one
 * defect that guarantees its rejection, so `open` is false for it and any 2xx is a failure.
 */
export interface Expectation {
  /** A read without a guaranteed defect: any answer but a 5xx (an error must still be a well-formed problem). */
  open: boolean;
  /** Problem codes the defects allow (their union: the contract's precedence is not what this run checks). */
  codes: Set<string>;
  /** Statuses the HTTP layer may answer itself (framing), each with the catalogue's code for that status. */
  statuses: Set<number>;
  /** A truncated request: the server may just close the connection. */
  silenceOk: boolean;
  /**
   * A request cut off in its body: the server may refuse it on its headers alone (media type, credentials, route),
   * so any refusal passes (still a well-formed catalogue problem).
   */
  anyRefusal: boolean;
  /** A `validation_failed` answer names one of these (a JSON path, or a prefix of one); null: not checked. */
  fields: Set<string> | null;
}

export interface Case {
  route: string;
  mutating: boolean;
  /** Labels of the defects applied (each guarantees a rejection), e.g. `text.nul@reference`. */
  defects: string[];
  /** Labels of the other hostile touches (valid, or not decided by the contract). */
  decorations: string[];
  expect: Expectation;
  wire: WireRequest;
}

/** The request before it becomes bytes. */
export interface Draft {
  method: string;
  /** Path segments, each already percent-encoded (or deliberately not). */
  path: string[];
  query: string | null;
  headers: [string, string][];
  authorization: string | null;
  contentType: string | null;
  body: { json: JVal } | { bytes: Buffer } | null;
  /** Pad a JSON body with trailing whitespace to this many bytes. */
  padTo: number | null;
  forceRaw: boolean;
}

/** Node's default `maxHeaderSize`. */
const HEADER_LIMIT_BYTES = 16 * 1024;

export class Builder {
  readonly draft: Draft;
  readonly defects: string[] = [];
  readonly decorations: string[] = [];
  /** Body fields a defect has broken (another defect leaves them be). */
  readonly touched = new Set<string>();
  private readonly codes = new Set<string>();
  private readonly statuses = new Set<number>();
  private fields: Set<string> | null = new Set();
  private silenceOk = false;
  private anyRefusal = false;
  private raw: WireRequest['raw'] | undefined;

  constructor(
    readonly route: string,
    readonly mutating: boolean,
    method: string,
    path: string[],
  ) {
    this.draft = {
      method,
      path,
      query: null,
      headers: [],
      authorization: null,
      contentType: null,
      body: null,
      padTo: null,
      forceRaw: false,
    };
  }

  /**
   * A defect: the contract guarantees a rejection with one of `codes`. For `validation_failed`, `fields` are what
   * the answer may name (undefined: unknown, so not checked for this case).
   */
  defect(label: string, codes: readonly string[], fields?: readonly string[]): void {
    this.defects.push(label);
    this.allow(codes, fields);
  }

  /** A hostile touch the contract does not decide: the answer may also be one of `codes`. */
  decorate(label: string, codes: readonly string[] = [], fields?: readonly string[]): void {
    this.decorations.push(label);
    this.allow(codes, fields);
  }

  /** A framing defect: the HTTP layer may answer one of `statuses` itself (or say nothing, if `silenceOk`). */
  framing(
    label: string,
    guaranteed: boolean,
    statuses: readonly number[],
    raw: WireRequest['raw'] | undefined,
    silenceOk = false,
    codes: readonly string[] = [],
  ): void {
    (guaranteed ? this.defects : this.decorations).push(label);
    for (const s of statuses) this.statuses.add(s);
    this.allow(codes);
    if (raw) this.raw = raw;
    this.silenceOk ||= silenceOk;
  }

  /** Any refusal will do (see Expectation.anyRefusal). */
  refusalEnough(): void {
    this.anyRefusal = true;
  }

  /** The HTTP layer may refuse this request itself (a byte it does not take, a header too large). */
  allowStatuses(statuses: readonly number[]): void {
    for (const s of statuses) this.statuses.add(s);
  }

  private allow(codes: readonly string[], fields?: readonly string[]): void {
    for (const c of codes) this.codes.add(c);
    if (!codes.includes('validation_failed')) return;
    if (fields === undefined) this.fields = null;
    else if (this.fields) for (const f of fields) this.fields.add(f);
  }

  /** The request's one Authorization (or none): drops any that decorations added as plain headers. */
  setAuthorization(value: string | null): void {
    this.draft.headers = this.draft.headers.filter(([k]) => k.toLowerCase() !== 'authorization');
    this.draft.authorization = value;
  }

  header(name: string, value: string): void {
    this.draft.headers.push([name, value]);
  }

  /** The request as it goes on the wire (before any framing defect rewrites its bytes). */
  wire(): WireRequest {
    const d = this.draft;
    const headers: [string, string][] = [...d.headers];
    if (d.authorization !== null) headers.push(['Authorization', d.authorization]);
    if (d.contentType !== null) headers.push(['Content-Type', d.contentType]);
    let body: Buffer | undefined;
    if (d.body) body = 'json' in d.body ? encode(d.body.json) : d.body.bytes;
    if (body && d.padTo !== null && body.length < d.padTo) body = Buffer.concat([body, Buffer.alloc(d.padTo - body.length, 0x20)]);
    const target = `/${d.path.join('/')}${d.query === null ? '' : `?${d.query}`}`;
    return { method: d.method, target, headers, ...(body ? { body } : {}), ...(d.forceRaw ? { forceRaw: true } : {}) };
  }

  finish(): Case {
    const wire = { ...this.wire(), ...(this.raw ? { raw: this.raw } : {}) };
    // Node refuses a request line plus headers over 16 KiB (431), however they got that long.
    const head = wire.target.length + wire.headers.reduce((n, [k, v]) => n + k.length + Buffer.byteLength(v) + 4, 0);
    if (head > HEADER_LIMIT_BYTES - 300) this.statuses.add(431);
    const expect: Expectation = {
      open: !this.mutating && this.defects.length === 0,
      codes: this.codes,
      statuses: this.statuses,
      silenceOk: this.silenceOk,
      anyRefusal: this.anyRefusal,
      fields: this.fields,
    };
    const c: Case = { route: this.route, mutating: this.mutating, defects: this.defects, decorations: this.decorations, expect, wire };
    // fast-check prints counterexamples with this: the repro, not a 64 KiB dump.
    Object.defineProperty(c, fc.toStringMethod, { value: () => describeCase(c), enumerable: false });
    return c;
  }
}

const clip = (s: string, n: number) => (s.length > n ? `${s.slice(0, n)}… (${s.length} chars)` : s);

/** The request in a form a person can replay: method, target, headers, body (clipped), or the raw bytes. */
export function describeCase(c: Case): string {
  const w = c.wire;
  const lines = [`${c.route}  defects=[${c.defects.join(', ')}]  decorations=[${c.decorations.join(', ')}]`];
  if (w.raw) {
    lines.push(`  raw bytes${w.raw.end ? ' (then half-close)' : ''}: ${clip(JSON.stringify(w.raw.bytes.toString('latin1')), 600)}`);
    return lines.join('\n');
  }
  lines.push(`  ${w.method} ${clip(w.target, 300)}`);
  for (const [k, v] of w.headers) lines.push(`  ${k}: ${clip(JSON.stringify(v), 200)}`);
  if (w.body) lines.push(`  body (${w.body.length} bytes): ${clip(JSON.stringify(w.body.toString('utf8')), 600)}`);
  return lines.join('\n');
}
