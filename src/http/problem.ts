import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { errorCatalogue, ProblemError, type ErrorCode, type FieldError, type ProblemExtras } from '../domain/errors.js';
import { MAX_BODY_BYTES, patternMessages } from '../domain/schemas.js';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json; charset=utf-8';

/** An RFC 9457 problem+json document, as sent. The only place error bodies are made. */
export function problemBody(code: ErrorCode, detail?: string, extras: ProblemExtras = {}): string {
  const { status, title } = errorCatalogue[code];
  return JSON.stringify({ type: 'about:blank', title, status, code, ...(detail ? { detail } : {}), ...extras });
}

export function sendProblem(reply: FastifyReply, code: ErrorCode, detail?: string, extras: ProblemExtras = {}): FastifyReply {
  return reply.code(errorCatalogue[code].status).type(PROBLEM_CONTENT_TYPE).send(problemBody(code, detail, extras));
}

/**
 * The most of a client's input (a URL, a key) an answer repeats: as long as the longest identifier (an item id), so
 * anything near valid is named whole, and never a large echo.
 */
const ECHO_CODE_POINTS = 128;

/** `value` cut to its first 128 code points (a surrogate pair is never split), marked with `…` when cut. */
export function shorten(value: string): string {
  if (value.length <= ECHO_CODE_POINTS) return value;
  let kept = '';
  let count = 0;
  for (const point of value) {
    if (count++ === ECHO_CODE_POINTS) return `${kept}…`;
    kept += point;
  }
  return kept;
}

interface AjvError {
  instancePath: string;
  keyword: string;
  params: Record<string, unknown>;
  /** Set on the errors of a `propertyNames` subschema, which fail the key, not the object they sit on. */
  propertyName?: string;
  /** The failing keyword's value and the schema holding it (Ajv's `verbose`, set in plugins/http.ts). */
  schema?: unknown;
  parentSchema?: Record<string, unknown>;
}

/** A key that is not a plain identifier (`a.b`, `x-1`, ``) is written `["…"]`, so the path stays unambiguous. */
const pathSegment = (key: string) => (/^[A-Za-z_$][\w$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`);

/** `/lines/0/quantity` → `lines[0].quantity`; header names in their usual spelling; keys shortened. */
function fieldOf(error: AjvError, context: string): string {
  const parts = error.instancePath.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  const extra = error.propertyName ?? error.params.missingProperty ?? error.params.additionalProperty;
  if (typeof extra === 'string') parts.push(extra);
  if (context === 'headers') return parts.map((p) => p.replace(/(^|-)([a-z])/g, (_, dash: string, c: string) => dash + c.toUpperCase())).join('.') || 'headers';
  const path = parts.reduce((acc, p) => acc + (/^\d+$/.test(p) ? `[${p}]` : pathSegment(shorten(p))), '').replace(/^\./, '');
  return path || (context === 'body' ? 'body' : context);
}

const count = (n: unknown, noun: string) => `${String(n)} ${noun}${n === 1 ? '' : 's'}`;
const typeNames: Record<string, string> = {
  integer: 'an integer',
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
  object: 'an object',
  array: 'an array',
  null: 'null',
};

/** A failed keyword in a client's words, from its limit (what Ajv says, e.g. "must NOT be valid", is for schema authors). */
function messageOf(error: AjvError): string {
  const { limit } = error.params;
  switch (error.keyword) {
    case 'additionalProperties':
      return 'unknown field';
    case 'required':
      return 'is required';
    case 'type':
      return `must be ${String(error.params.type)
        .split(',')
        .map((t) => typeNames[t] ?? t)
        .join(' or ')}`;
    case 'minimum':
      return `must be at least ${String(limit)}`;
    case 'maximum':
      return `must be at most ${String(limit)}`;
    case 'exclusiveMinimum':
      return `must be greater than ${String(limit)}`;
    case 'exclusiveMaximum':
      return `must be less than ${String(limit)}`;
    case 'minLength':
    case 'maxLength': {
      // A string's rule is its length range, as the contract writes it ("1–128 chars").
      const { minLength, maxLength } = error.parentSchema ?? {};
      if (typeof minLength === 'number' && typeof maxLength === 'number') return `must be ${minLength}–${maxLength} characters`;
      return `must be ${error.keyword === 'minLength' ? 'at least' : 'at most'} ${count(limit, 'character')}`;
    }
    case 'minItems':
      return `must have at least ${count(limit, 'item')}`;
    case 'maxItems':
      return `must have at most ${count(limit, 'item')}`;
    case 'uniqueItems':
      return `must not repeat an item (items ${String(error.params.j)} and ${String(error.params.i)} are the same)`;
    case 'minProperties':
      return `must have at least ${count(limit, 'key')}`;
    case 'maxProperties':
      return `must have at most ${count(limit, 'key')}`;
    case 'pattern':
      return patternMessages[String(error.params.pattern)] ?? 'is not in the expected format';
    case 'not': {
      const not = error.schema as { const?: unknown } | undefined;
      return not && 'const' in not ? `must not be ${JSON.stringify(not.const)}` : 'is not allowed';
    }
    case 'const':
      return `must be ${JSON.stringify(error.params.allowedValue)}`;
    case 'enum':
      return `must be one of ${(error.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    default:
      return 'is invalid';
  }
}

const bodyErrors: Record<string, string> = {
  FST_ERR_CTP_INVALID_JSON_BODY: 'malformed JSON',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'body is empty',
  FST_ERR_CTP_BODY_TOO_LARGE: `body is larger than ${MAX_BODY_BYTES / 1024} KiB`,
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'Content-Length does not match the body',
};

export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError & { validation?: AjvError[]; validationContext?: string }, request, reply) => {
    if (error instanceof ProblemError) {
      if (error.retryAfterSeconds !== undefined) reply.header('retry-after', String(error.retryAfterSeconds));
      else if (error.status >= 500) request.log.warn({ err: error.cause ?? error }, error.message);
      return sendProblem(reply, error.code, error.detail, error.extras);
    }
    if (error.validation) {
      const context = error.validationContext ?? 'body';
      const seen = new Set<string>();
      const errors: FieldError[] = [];
      for (const e of error.validation) {
        if (e.keyword === 'if' || e.keyword === 'anyOf') continue; // the branch errors say it better
        if (e.keyword === 'propertyNames') continue; // its subschema's errors say what is wrong with the key
        const message = e.propertyName === undefined ? messageOf(e) : `key ${messageOf(e)}`;
        const fe = { field: fieldOf(e, context), message };
        const key = `${fe.field}\u0000${fe.message}`;
        if (!seen.has(key)) errors.push(fe);
        seen.add(key);
      }
      return sendProblem(reply, 'validation_failed', errors.map((e) => `${e.field}: ${e.message}`).join('; '), { errors });
    }
    if (error.code && bodyErrors[error.code]) {
      const message = bodyErrors[error.code]!;
      return sendProblem(reply, 'validation_failed', message, { errors: [{ field: 'body', message }] });
    }
    if (error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      return sendProblem(reply, 'unsupported_media_type', 'send application/json');
    }
    if (error.statusCode === 429) return sendProblem(reply, 'rate_limited', error.message);
    // Other 4xx come from the /docs assets (@fastify/static): a path that leaves their folder or holds a NUL (403)
    // names no document; a Range or precondition they cannot meet (416, 412) is the request's fault.
    if (error.statusCode === 403 || error.statusCode === 404) {
      return sendProblem(reply, 'not_found', `no document at ${shorten(request.url.split('?')[0] ?? '')}`);
    }
    if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
      const message = shorten(error.message);
      return sendProblem(reply, 'validation_failed', message, { errors: [{ field: 'request', message }] });
    }
    request.log.error({ err: error }, 'unhandled error');
    return sendProblem(reply, 'internal');
  });
}

/** Unknown paths are 404 not_found; a known path with another method is 405 with `Allow`. */
export function registerNotFound(app: FastifyInstance): void {
  const methodsByPath = new Map<string, Set<string>>();
  const patterns: { regex: RegExp; path: string }[] = [];
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    let set = methodsByPath.get(route.url);
    if (!set) {
      set = new Set();
      methodsByPath.set(route.url, set);
      const regex = new RegExp(`^${route.url.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/:[^/]+/g, '[^/]+')}$`);
      patterns.push({ regex, path: route.url });
    }
    for (const m of methods) set.add(m);
  });
  app.setNotFoundHandler((request: FastifyRequest, reply: FastifyReply) => {
    const path = request.url.split('?')[0] ?? '';
    const match = patterns.find((p) => p.regex.test(path));
    if (match) {
      const allow = [...methodsByPath.get(match.path)!].join(', ');
      reply.header('allow', allow);
      return sendProblem(reply, 'method_not_allowed', `${request.method} is not allowed here; use ${allow}`);
    }
    return sendProblem(reply, 'not_found', `no route ${request.method} ${shorten(path)}`);
  });
}
