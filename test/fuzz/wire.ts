import http from 'node:http';
import net from 'node:net';

/**
 * Two ways onto a real socket: Node's HTTP client over a keep-alive agent (well-formed framing, most requests),
 * and raw bytes on a fresh TCP connection, for what Node's client refuses to send (control bytes in header values,
 * lowercase methods, non-ASCII header values, broken framing, truncated requests).
 */

export interface WireRequest {
  method: string;
  /** The request-target exactly as sent (already percent-encoded, or deliberately not). */
  target: string;
  /** As sent, duplicates allowed; Host, Content-Length and Connection are added by the transport. */
  headers: [string, string][];
  body?: Buffer;
  /** Exact bytes instead of the fields above (framing cases); `end` half-closes right after writing. */
  raw?: { bytes: Buffer; end: boolean };
  /** Force a raw socket even though Node's client could send it (HTTP/1.0, Expect, lowercase header names …). */
  forceRaw?: boolean;
}

export type Answer =
  | { kind: 'response'; via: 'http' | 'raw'; status: number; headers: Record<string, string>; body: Buffer }
  /** The server closed (or reset) the connection without a response. */
  | { kind: 'closed'; detail: string; reusedSocket?: boolean }
  | { kind: 'timeout' }
  | { kind: 'refused'; detail: string };

const ANSWER_TIMEOUT_MS = 10_000;

// Node's client checks (lib/_http_common.js, lib/_http_outgoing.js, lib/_http_client.js).
const TOKEN = /^[\^_`a-zA-Z\-0-9!#$%&'*+.|~]+$/;
const HEADER_VALUE_OK = /^[\t\x20-\x7e\x80-\xff]*$/;
const PATH_OK = /^[\u0021-\u00ff]*$/;

/** Whether Node's HTTP client would send this request byte for byte as meant. */
export function httpClientCanSend(req: WireRequest): boolean {
  if (req.raw || req.forceRaw) return false;
  // The client upper-cases methods, so a lowercase one goes raw; CONNECT would open a tunnel.
  if (!/^[A-Z]+$/.test(req.method) || req.method === 'CONNECT') return false;
  if (!PATH_OK.test(req.target) || !req.target.startsWith('/')) return false;
  for (const [name, value] of req.headers) {
    // Outside these the client throws (control bytes) or writes latin-1 (above 0xFF); raw sends the UTF-8.
    if (!TOKEN.test(name) || !HEADER_VALUE_OK.test(value)) return false;
    // Surrounding whitespace: keep the bytes exact (the server's parser trims it either way).
    if (value !== value.trim()) return false;
  }
  return true;
}

export class Wire {
  readonly agent: http.Agent;

  constructor(
    readonly port: number,
    connections: number,
  ) {
    this.agent = new http.Agent({ keepAlive: true, maxSockets: connections, maxFreeSockets: connections });
  }

  /** Requests resent because a kept-alive socket was closed under them before they were written. */
  resent = 0;

  async send(req: WireRequest): Promise<Answer> {
    if (!httpClientCanSend(req)) return this.viaRaw(req);
    for (let attempt = 0; ; attempt++) {
      const answer = await this.viaHttp(req);
      // Node's documented keep-alive race: a reused socket the server closed meanwhile. Not the request's fault.
      if (answer.kind !== 'closed' || !answer.reusedSocket || attempt === 2) return answer;
      this.resent++;
    }
  }

  close(): void {
    this.agent.destroy();
  }

  private viaHttp(req: WireRequest): Promise<Answer> {
    return new Promise((resolve) => {
      // Given as an array (to keep duplicates), headers get no automatic Host: Node's server requires one.
      const headers: string[] = ['Host', `127.0.0.1:${this.port}`];
      for (const [name, value] of req.headers) headers.push(name, value);
      // Without a length, Node's client sends an empty chunked body on POST/PUT (a body, to the server).
      if (req.body || !['GET', 'HEAD'].includes(req.method)) headers.push('Content-Length', String(req.body?.length ?? 0));
      let settled = false;
      let responded = false;
      const done = (a: Answer) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(a);
      };
      const request = http.request(
        { agent: this.agent, host: '127.0.0.1', port: this.port, method: req.method, path: req.target, headers, setHost: false },
        (res) => {
          responded = true;
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            done({ kind: 'response', via: 'http', status: res.statusCode ?? 0, headers: flatHeaders(res.headers), body: Buffer.concat(chunks) }),
          );
          res.on('error', (err) => done({ kind: 'closed', detail: `response aborted: ${err.message}` }));
        },
      );
      const timer = setTimeout(() => {
        done({ kind: 'timeout' });
        request.destroy();
      }, ANSWER_TIMEOUT_MS);
      request.on('error', (err: NodeJS.ErrnoException) =>
        done(
          err.code === 'ECONNREFUSED'
            ? { kind: 'refused', detail: err.message }
            : { kind: 'closed', detail: `${err.code ?? ''} ${err.message}`, reusedSocket: request.reusedSocket && !responded },
        ),
      );
      request.end(req.body);
    });
  }

  private viaRaw(req: WireRequest): Promise<Answer> {
    const bytes = req.raw?.bytes ?? serialise(req);
    const head = req.raw ? bytes.subarray(0, bytes.indexOf(' ')).toString('latin1') : req.method;
    return new Promise((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port: this.port });
      const parser = new ResponseParser(head.toUpperCase() === 'HEAD');
      let settled = false;
      const done = (a: Answer) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.destroy();
        resolve(a);
      };
      const timer = setTimeout(() => done({ kind: 'timeout' }), ANSWER_TIMEOUT_MS);
      socket.on('connect', () => {
        socket.write(bytes);
        if (req.raw?.end) socket.end();
      });
      socket.on('data', (chunk: Buffer) => {
        const r = parser.push(chunk);
        if (r) done(r);
      });
      socket.on('end', () => done(parser.finish() ?? { kind: 'closed', detail: 'closed without a response' }));
      socket.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ECONNREFUSED') return done({ kind: 'refused', detail: err.message });
        done(parser.finish() ?? { kind: 'closed', detail: `${err.code ?? ''} ${err.message}` });
      });
      socket.on('close', () => done(parser.finish() ?? { kind: 'closed', detail: 'closed without a response' }));
    });
  }
}

/** The request as HTTP/1.1 bytes, header values as UTF-8, with Host, Content-Length and Connection: close. */
export function serialise(req: WireRequest): Buffer {
  const lines = [`${req.method} ${req.target} HTTP/1.1`, 'Host: 127.0.0.1'];
  for (const [name, value] of req.headers) lines.push(`${name}: ${value}`);
  if (req.body) lines.push(`Content-Length: ${req.body.length}`);
  lines.push('Connection: close', '', '');
  return Buffer.concat([Buffer.from(lines.join('\r\n'), 'utf8'), req.body ?? Buffer.alloc(0)]);
}

function flatHeaders(headers: http.IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (v !== undefined) out[k] = Array.isArray(v) ? v.join(', ') : v;
  return out;
}

/** Just enough of an HTTP/1.x response parser: interim 1xx skipped, Content-Length, chunked, or until close. */
class ResponseParser {
  private buffer = Buffer.alloc(0);
  private head: { status: number; headers: Record<string, string>; bodyStart: number } | null = null;

  constructor(private readonly isHead: boolean) {}

  push(chunk: Buffer): Answer | null {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    return this.parse(false);
  }

  /** The connection ended: a response read to its close, or null if none came. */
  finish(): Answer | null {
    return this.parse(true);
  }

  private parse(ended: boolean): Answer | null {
    for (;;) {
      if (!this.head) {
        const end = this.buffer.indexOf('\r\n\r\n');
        if (end < 0) return ended && this.buffer.length > 0 ? this.malformed() : null;
        const lines = this.buffer.subarray(0, end).toString('latin1').split('\r\n');
        const status = /^HTTP\/\d\.\d (\d{3})/.exec(lines[0] ?? '');
        if (!status) return this.malformed();
        const headers: Record<string, string> = {};
        for (const line of lines.slice(1)) {
          const i = line.indexOf(':');
          if (i > 0) {
            const name = line.slice(0, i).trim().toLowerCase();
            const value = line.slice(i + 1).trim();
            headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
          }
        }
        const code = Number(status[1]);
        if (code >= 100 && code < 200) {
          this.buffer = this.buffer.subarray(end + 4);
          continue;
        }
        this.head = { status: code, headers, bodyStart: end + 4 };
      }
      const { status, headers, bodyStart } = this.head;
      const rest = this.buffer.subarray(bodyStart);
      const answer = (body: Buffer): Answer => ({ kind: 'response', via: 'raw', status, headers, body });
      if (this.isHead || status === 204 || status === 304) return answer(Buffer.alloc(0));
      if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
        const body = dechunk(rest);
        if (body) return answer(body);
        return ended ? answer(rest) : null;
      }
      if (headers['content-length'] !== undefined) {
        const length = Number(headers['content-length']);
        if (rest.length >= length) return answer(rest.subarray(0, length));
        return ended ? answer(rest) : null;
      }
      return ended ? answer(rest) : null;
    }
  }

  private malformed(): Answer {
    return { kind: 'closed', detail: `unparseable response: ${JSON.stringify(this.buffer.subarray(0, 200).toString('latin1'))}` };
  }
}

/** The decoded body once the last chunk arrived, else null. */
function dechunk(data: Buffer): Buffer | null {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = data.indexOf('\r\n', at);
    if (eol < 0) return null;
    const size = parseInt(data.subarray(at, eol).toString('latin1'), 16);
    if (Number.isNaN(size)) return null;
    if (size === 0) return Buffer.concat(parts);
    if (data.length < eol + 2 + size + 2) return null;
    parts.push(data.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
}
