import type { FastifyInstance } from 'fastify';
import { maxHeaderSize, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { errorCatalogue, type ErrorCode } from '../domain/errors.js';
import { PROBLEM_CONTENT_TYPE, problemBody, sendProblem } from './problem.js';

// Answers to what never reaches a route: bytes Node's HTTP parser refuses, a head that does not arrive in time, an
// `Expect` other than 100-continue, a CONNECT, a missing Host. Each is the same problem+json as every other error.
// After a framing error nothing tells where a next request would begin, so those close the connection.

/** Why the parser refused a request, per llhttp error code: in words, never the bytes. */
const parserErrors: Record<string, string> = {
  HPE_INVALID_METHOD: 'the method is not an HTTP method this server knows (methods are upper case: GET, not get)',
  HPE_INVALID_URL: 'the request target holds a character a URL may not (spaces and control characters must be percent-encoded)',
  HPE_INVALID_CONSTANT: 'the request line is not "METHOD target HTTP/1.1"',
  HPE_INVALID_VERSION: 'the protocol is not HTTP/1.0 or HTTP/1.1, or the request line does not end with CRLF',
  HPE_INVALID_HEADER_TOKEN: 'a header name or value holds a character HTTP does not allow (a control character, a space before the colon, a folded line)',
  HPE_CR_EXPECTED: 'a line does not end with CRLF',
  HPE_LF_EXPECTED: 'a line does not end with CRLF',
  HPE_INVALID_CONTENT_LENGTH: 'Content-Length is not a decimal number of bytes',
  HPE_UNEXPECTED_CONTENT_LENGTH: 'Content-Length is sent twice, or together with Transfer-Encoding',
  HPE_INVALID_TRANSFER_ENCODING: 'Transfer-Encoding does not end with chunked, or comes together with Content-Length',
  HPE_INVALID_CHUNK_SIZE: 'a chunk size is not a hexadecimal number',
  HPE_CHUNK_EXTENSIONS_OVERFLOW: 'chunk extensions are too long',
  HPE_INVALID_EOF_STATE: 'the connection ended in the middle of a request',
  HPE_PAUSED_H2_UPGRADE: 'HTTP/2 is not served here; use HTTP/1.1',
};

function clientErrorProblem(code: string | undefined): [ErrorCode, string] {
  if (code === 'HPE_HEADER_OVERFLOW') {
    return ['request_header_too_large', `the request line and headers are larger than ${maxHeaderSize / 1024} KiB`];
  }
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return ['request_timeout', 'the request did not arrive in time'];
  return ['malformed_request', (code && parserErrors[code]) ?? 'the bytes received are not a valid HTTP/1.1 request'];
}

/** How long an answered connection may stay half-closed: time for the client to read the answer, and no more. */
const LINGER_MS = 2_000;

/** Writes `code` as a raw HTTP/1.1 response and ends the connection. */
function endWithProblem(
  socket: Duplex,
  code: ErrorCode,
  detail: string,
  options: { headers?: Record<string, string>; head?: boolean } = {},
): void {
  const { status } = errorCatalogue[code];
  const body = problemBody(code, detail);
  const head = [
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}`,
    `Content-Type: ${PROBLEM_CONTENT_TYPE}`,
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    `Date: ${new Date().toUTCString()}`,
    ...Object.entries(options.headers ?? {}).map(([name, value]) => `${name}: ${value}`),
  ];
  // The answer to a HEAD has no body (RFC 9110 §9.3.2): a client would read one as garbage after the answer.
  socket.end(`${head.join('\r\n')}\r\n\r\n${options.head ? '' : body}`);
  // Ending, not destroying: a client still sending (the rest of an oversized head) would otherwise be reset and could
  // lose the answer. A client that never closes its side is cut off after a moment.
  const timer = setTimeout(() => socket.destroy(), LINGER_MS).unref();
  socket.once('close', () => clearTimeout(timer));
}

/** Whether the refused request was a HEAD, from the bytes Node's parser keeps on its errors (`rawPacket`). */
const isHead = (error: Error): boolean =>
  (error as { rawPacket?: Buffer }).rawPacket?.subarray(0, 5).toString('latin1') === 'HEAD ';

/** Connections whose bytes the parser refused: it reports every later chunk again, and one answer is enough. */
const refused = new WeakSet<Duplex>();

/** Fastify's `clientErrorHandler`: what Node's parser refused, or a head that timed out. */
export function answerClientError(this: FastifyInstance, error: Error & { code?: string }, socket: Duplex): void {
  if (error.code === 'ECONNRESET' || socket.destroyed || refused.has(socket)) return;
  refused.add(socket);
  this.log.debug({ code: error.code }, 'client error');
  const [code, detail] = clientErrorProblem(error.code);
  answerAfterInFlight(socket, code, detail, isHead(error));
}

/**
 * A request still in flight on the connection that arrived whole was sent before the refused bytes: its answer goes
 * first (answering 400 in its place would tell its client a change failed that happened). One that did not arrive
 * whole holds the refused bytes and never runs: answer at once, unless its answer is already being written (then
 * nothing more can be said on this connection; Node's own rule).
 */
function answerAfterInFlight(socket: Duplex, code: ErrorCode, detail: string, head: boolean): void {
  const inFlight = (socket as { _httpMessage?: ServerResponse | null })._httpMessage;
  if (inFlight && !inFlight.writableFinished) {
    if (inFlight.req.complete) {
      inFlight.once('finish', () => answerAfterInFlight(socket, code, detail, head));
      return;
    }
    if (inFlight.headersSent) {
      socket.destroy();
      return;
    }
  }
  if (socket.destroyed) return;
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  endWithProblem(socket, code, detail, { head });
}

/** The raw-server and first-hook answers; `app.server` exists from construction, also when tests only inject. */
export function registerFraming(app: FastifyInstance): void {
  // Node answers any other expectation with a bare 417 unless someone listens.
  app.server.on('checkExpectation', (_request: IncomingMessage, response: ServerResponse) => {
    const body = problemBody('expectation_failed', 'the only expectation served is "Expect: 100-continue"');
    response.writeHead(errorCatalogue.expectation_failed.status, {
      'content-type': PROBLEM_CONTENT_TYPE,
      'content-length': Buffer.byteLength(body),
      connection: 'close',
    });
    response.end(body);
  });
  // Node closes a CONNECT without a word unless someone listens. No method is allowed on an authority (empty Allow).
  app.server.on('connect', (_request: IncomingMessage, socket: Duplex) => {
    endWithProblem(socket, 'method_not_allowed', 'CONNECT is not served here; this is not a proxy', { headers: { Allow: '' } });
  });
  // RFC 9112 §3.2: an HTTP/1.1 request without a Host, or any request with more than one, is a 400. Node's own check
  // answers with an empty body, so it is off (plugins/http.ts) and this hook, first of all, says it as a problem. A request
  // line without a version (HTTP/0.9, which has no headers and no body) is refused too: Node's parser reads headers
  // and a body after it anyway, a framing no client should rely on.
  //
  // Async on purpose, unlike the other per-request hooks: the promise defers the request past the parser's current
  // read, so a framing error in the bytes that came with the head (a bad chunk, an unknown transfer-coding) reaches
  // answerClientError before any route answers (test/http/framing.test.ts, "… on a route that reads no body").
  app.addHook('onRequest', async (request, reply) => {
    const problem = framingProblem(request.raw);
    if (problem === null) return;
    reply.header('connection', 'close');
    return sendProblem(reply, 'malformed_request', problem);
  });
}

/** What is wrong with a request's framing that Node's parser let through (see the hook above), or null. */
function framingProblem(request: IncomingMessage): string | null {
  if (request.httpVersionMajor < 1) return 'the request line has no HTTP version; use HTTP/1.1';
  const raw = request.rawHeaders;
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.length === 4 && raw[i]!.toLowerCase() === 'host') hosts++;
  if (hosts > 1) return 'the request has more than one Host header';
  if (hosts === 0 && request.httpVersion === '1.1') return 'an HTTP/1.1 request needs a Host header';
  return null;
}
