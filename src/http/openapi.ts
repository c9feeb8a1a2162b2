import { STATUS_CODES } from 'node:http';
import { Type, type Static, type TSchema } from 'typebox';
import { errorCatalogue, type ErrorCode, type ProblemExtras } from '../domain/errors.js';
import { Problem } from '../domain/schemas.js';

// The routes' documentation, built from the schemas that validate and serialise them and from the error
// catalogue: the routes (src/http/routes/) say which codes each operation answers and give their examples; this
// module turns that into OpenAPI responses. The document itself is generated (src/plugins/docs.ts), never
// written by hand.

/** The problem+json shape, registered once (src/plugins/http.ts): `#/components/schemas/Problem` in the document. */
export const ProblemDocument = { ...Problem, $id: 'Problem' };

export type ProblemBody = Static<typeof Problem>;
/** What an example problem adds to the catalogue's type, title, status and code. */
export type ProblemExample = { detail: string } & ProblemExtras;

const problemRef = Type.Unsafe<ProblemBody>({ $ref: 'Problem#' });

/** One named example, as OpenAPI's Example Object: Swagger UI lists them by summary. */
export interface Example<T> {
  summary: string;
  description?: string;
  value: T;
}
export type Examples<T> = Record<string, Example<T>>;

/** A documented response header (Location, Retry-After, …): its schema, whose description becomes the header's. */
export interface HeaderDoc {
  description: string;
  type: 'string' | 'integer';
}

/**
 * What each code means, said once for every operation that answers it, and an example detail. An operation may
 * say what a code means in its own terms (`problems`); the API description's table of codes is made from these.
 */
export const codeDocs: Record<ErrorCode, { means: string; example: ProblemExample }> = {
  validation_failed: {
    means:
      'A field, header or path parameter breaks its rule, or the body is not JSON or is over 64 KiB. `errors` names each ' +
      'field (a JSON path such as `lines[0].quantity`, a header name, or `body`) with the rule it breaks. Nothing changed.',
    example: {
      detail: 'lines[0].quantity: must be at least 1',
      errors: [{ field: 'lines[0].quantity', message: 'must be at least 1' }],
    },
  },
  malformed_request: {
    means:
      'The bytes are not a valid HTTP/1.1 request (an unknown or lower-case method, a control character in the path or a ' +
      'header, Content-Length twice or beside Transfer-Encoding, no Host header or two). The connection is closed.',
    example: { detail: 'an HTTP/1.1 request needs a Host header' },
  },
  unauthorized: {
    means:
      'No API key, or one the service does not know (only when API keys are configured). The answer carries ' +
      '`WWW-Authenticate: Bearer realm="inventory"`.',
    example: { detail: 'send a valid key as `Authorization: Bearer <key>`' },
  },
  forbidden: {
    means: 'A `client` key on an operator operation (stock changes, reconciliation, the event feed).',
    example: { detail: 'this endpoint needs an operator key' },
  },
  item_not_found: {
    means: 'The item, or that location of it, was never stocked (only setting stock creates one).',
    example: { detail: 'sku-404 is not stocked' },
  },
  reservation_not_found: {
    means: "No reservation has that id, whatever its shape; another tenant's reservation answers the same.",
    example: { detail: 'no reservation 01a217ba-1200-7c1e-9a4f-5d2b8e3c6a10' },
  },
  not_found: { means: 'No route at that path.', example: { detail: 'no route GET /reservation' } },
  method_not_allowed: {
    means: 'The path exists but not with that method; `Allow` lists the methods it has.',
    example: { detail: 'DELETE is not allowed here; use POST' },
  },
  request_timeout: {
    means: 'The request did not arrive whole in time (its head within Node\'s headersTimeout, all of it within 30 s). The connection is closed.',
    example: { detail: 'the request did not arrive in time' },
  },
  insufficient_stock: {
    means: 'Not enough units; `lines` names each short line with what was asked and what there is. Nothing changed.',
    example: {
      detail: 'sneaker-drop-42: requested 1, available 0',
      lines: [{ itemId: 'sneaker-drop-42', location: 'default', requested: 1, available: 0 }],
    },
  },
  reservation_expired: {
    means: 'The reservation passed its `expiresAt` before this call: its units are available again.',
    example: { detail: 'the reservation is expired' },
  },
  reservation_released: { means: 'The reservation was released.', example: { detail: 'the reservation is released' } },
  reservation_confirmed: {
    means: 'The reservation was confirmed: its units are sold and cannot be given back.',
    example: { detail: 'the reservation is confirmed' },
  },
  idempotency_key_in_use: {
    means: 'The first request with this `Idempotency-Key` and body is still being processed: retry shortly with the same key.',
    example: { detail: 'a request with this Idempotency-Key is still being processed' },
  },
  precondition_failed: {
    means:
      "An `If-Match` named another version than the reservation's (its `ETag`): it changed since the caller read it. " +
      'Nothing changed; read it again and decide anew.',
    example: { detail: 'If-Match names version 1; the reservation is at version 2' },
  },
  too_many_reservations: {
    means:
      'The reference has more reservations than one release by reference handles (100): nothing was released. List ' +
      'them (`GET /reservations?reference=…&status=pending`) and release each.',
    example: { detail: 'reference order-123 has more than 100 reservations; release them one by one' },
  },
  unsupported_media_type: {
    means: 'A body that is not `application/json`.',
    example: { detail: 'send application/json' },
  },
  expectation_failed: {
    means: 'An `Expect` header other than `100-continue`. The connection is closed.',
    example: { detail: 'the only expectation served is "Expect: 100-continue"' },
  },
  idempotency_key_reused: {
    means: 'This `Idempotency-Key` was first used with another body (another JSON value; key order and spacing do not count).',
    example: { detail: 'this Idempotency-Key was used with a different request body' },
  },
  rate_limited: {
    means: 'Over the request rate an operator configured for this key (or client address); `Retry-After` says when to retry.',
    example: { detail: 'rate limit exceeded, retry in 1 second' },
  },
  request_header_too_large: {
    means: 'The request line and headers are over 16 KiB. The connection is closed.',
    example: { detail: 'the request line and headers are larger than 16 KiB' },
  },
  internal: { means: 'A fault in the service; the details are in its log only.', example: { detail: 'Internal server error' } },
  unavailable: {
    means:
      'Redis or PostgreSQL is unreachable, Redis state is being rebuilt from PostgreSQL, the node is shutting down, or it ' +
      'holds as many unrecorded writes as it may (`WRITER_MAX_QUEUE`: then the answer comes at once, with `Retry-After` ' +
      'in seconds, and nothing was decided). Retry: a reservation with the same `Idempotency-Key`; confirm, release and ' +
      'setting stock are safe to repeat.',
    example: { detail: 'Redis state is being rebuilt from PostgreSQL; retry' },
  },
};

/**
 * The codes any request can get before an operation runs, from the HTTP layer: documented once in the API
 * description, and on each operation as its `4XX` response.
 */
export const transportCodes: readonly ErrorCode[] = [
  'malformed_request',
  'request_timeout',
  'unsupported_media_type',
  'expectation_failed',
  'request_header_too_large',
];

/** The full problem document for `code` with an example's detail and extras. */
export function problemExample(code: ErrorCode, example: ProblemExample = codeDocs[code].example): ProblemBody {
  const { status, title } = errorCatalogue[code];
  return { type: 'about:blank', title, status, code, ...example } as ProblemBody;
}

/** A success response: its description, its schema, named examples of it, and the headers it carries. */
export function documented<S extends TSchema>(
  description: string,
  schema: S,
  examples: Examples<Static<S>> = {},
  headers: Record<string, HeaderDoc> = {},
) {
  return {
    description,
    ...(Object.keys(headers).length > 0 ? { headers } : {}),
    content: { 'application/json': { schema, ...(Object.keys(examples).length > 0 ? { examples } : {}) } },
  };
}

/**
 * What a code means in one operation: the sentence, and an example if the generic one does not fit (`also`: more
 * named examples of it, listed as `<code>-<name>`).
 */
export type CodeDoc = string | { means: string; example: ProblemExample; also?: Examples<ProblemExample> };

const HEADERS_BY_CODE: Partial<Record<ErrorCode, Record<string, HeaderDoc>>> = {
  unauthorized: {
    'WWW-Authenticate': { description: '`Bearer realm="inventory"`, plus `error="invalid_token"` when a key was sent', type: 'string' },
  },
  rate_limited: { 'Retry-After': { description: 'Seconds until a retry can succeed', type: 'integer' } },
  method_not_allowed: { Allow: { description: 'The methods the path has', type: 'string' } },
};

/**
 * The error responses of an operation: one per status, listing each code it can answer there with what the code
 * means, and one named example per code. Statuses and titles come from the error catalogue.
 */
export function problems(codes: Partial<Record<ErrorCode, CodeDoc>>) {
  const byStatus = new Map<number, [ErrorCode, CodeDoc][]>();
  for (const [code, doc] of Object.entries(codes) as [ErrorCode, CodeDoc][]) {
    const { status } = errorCatalogue[code];
    byStatus.set(status, [...(byStatus.get(status) ?? []), [code, doc]]);
  }
  const responses: Record<number, ReturnType<typeof problemResponse>> = {};
  for (const [status, entries] of byStatus) responses[status] = problemResponse(entries);
  return responses;
}

function problemResponse(entries: [ErrorCode, CodeDoc][]) {
  const examples: Examples<ProblemBody> = {};
  let headers: Record<string, HeaderDoc> = {};
  const lines: string[] = [];
  for (const [code, doc] of entries) {
    const { means, example, also = {} } = typeof doc === 'string' ? { means: doc, example: codeDocs[code].example } : doc;
    lines.push(`- \`${code}\`: ${means}`);
    examples[code] = { summary: `${code}: ${errorCatalogue[code].title}`, value: problemExample(code, example) };
    for (const [name, more] of Object.entries(also)) {
      examples[`${code}-${name}`] = { summary: `${code}: ${more.summary}`, value: problemExample(code, more.value) };
    }
    headers = { ...headers, ...HEADERS_BY_CODE[code] };
  }
  const { status } = errorCatalogue[entries[0]![0]];
  return {
    description: `${STATUS_CODES[status] ?? 'Error'}, by \`code\`:\n\n${lines.join('\n')}`,
    ...(Object.keys(headers).length > 0 ? { headers } : {}),
    content: { 'application/problem+json': { schema: problemRef, examples } },
  };
}

/**
 * The `4XX` response of every operation: what the HTTP layer answers before any operation runs (415 only where a
 * body is read: Fastify reads none for GET).
 */
export function transportResponse(method: string) {
  const codes = transportCodes
    .filter((code) => code !== 'unsupported_media_type' || method !== 'GET')
    .map((code) => `\`${errorCatalogue[code].status} ${code}\``)
    .join(', ');
  return {
    description: `Refused before the operation ran (${codes}): see "Errors" in the API description.`,
    content: {
      'application/problem+json': {
        schema: problemRef,
        examples: { malformed_request: { summary: 'malformed_request: Malformed request', value: problemExample('malformed_request') } },
      },
    },
  };
}

/** The API description's table of every code, from the error catalogue. */
export function codeTable(): string {
  const rows = (Object.keys(errorCatalogue) as ErrorCode[]).map(
    (code) => `| \`${code}\` | ${errorCatalogue[code].status} | ${codeDocs[code].means.replace(/\|/g, '\\|')} |`,
  );
  return ['| code | status | meaning |', '|---|---|---|', ...rows].join('\n');
}
