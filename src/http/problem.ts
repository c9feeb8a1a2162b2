import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { errorCatalogue, ProblemError, type ErrorCode, type FieldError, type ProblemExtras } from '../domain/errors.js';

/** Renders RFC 9457 problem+json. The only place error bodies are made. */
export function sendProblem(reply: FastifyReply, code: ErrorCode, detail?: string, extras: ProblemExtras = {}): FastifyReply {
  const { status, title } = errorCatalogue[code];
  return reply
    .code(status)
    .type('application/problem+json')
    .send(JSON.stringify({ type: 'about:blank', title, status, code, ...(detail ? { detail } : {}), ...extras }));
}

interface AjvError {
  instancePath: string;
  keyword: string;
  message?: string;
  params: Record<string, unknown>;
  /** Set on the errors of a `propertyNames` subschema, which fail the key, not the object they sit on. */
  propertyName?: string;
}

/** A key that is not a plain identifier (`a.b`, `x-1`, ``) is written `["…"]`, so the path stays unambiguous. */
const pathSegment = (key: string) => (/^[A-Za-z_$][\w$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`);

/** `/lines/0/quantity` → `lines[0].quantity`; header names in their usual spelling. */
function fieldOf(error: AjvError, context: string): string {
  const parts = error.instancePath.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  const extra = error.params.missingProperty ?? error.params.additionalProperty ?? error.params.propertyName;
  if (typeof extra === 'string') parts.push(extra);
  if (context === 'headers') return parts.map((p) => p.replace(/(^|-)([a-z])/g, (_, dash: string, c: string) => dash + c.toUpperCase())).join('.') || 'headers';
  const path = parts.reduce((acc, p) => acc + (/^\d+$/.test(p) ? `[${p}]` : pathSegment(p)), '').replace(/^\./, '');
  return path || (context === 'body' ? 'body' : context);
}

function messageOf(error: AjvError): string {
  switch (error.keyword) {
    case 'additionalProperties':
      return 'unknown field';
    case 'required':
      return 'is required';
    case 'propertyNames':
      return 'key must be 1–64 characters';
    default:
      return error.message ?? 'is invalid';
  }
}

const bodyErrors: Record<string, string> = {
  FST_ERR_CTP_INVALID_JSON_BODY: 'malformed JSON',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'body is empty',
  FST_ERR_CTP_BODY_TOO_LARGE: 'body is larger than 64 KiB',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'Content-Length does not match the body',
};

export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError & { validation?: AjvError[]; validationContext?: string }, request, reply) => {
    if (error instanceof ProblemError) {
      if (error.status >= 500) request.log.warn({ err: error.cause ?? error }, error.message);
      return sendProblem(reply, error.code, error.detail, error.extras);
    }
    if (error.validation) {
      const context = error.validationContext ?? 'body';
      const seen = new Set<string>();
      const errors: FieldError[] = [];
      for (const e of error.validation) {
        if (e.keyword === 'if' || e.keyword === 'anyOf') continue; // the branch errors say it better
        if (e.propertyName !== undefined) continue; // its `propertyNames` error names the key and says it better
        const fe = { field: fieldOf(e, context), message: messageOf(e) };
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
    if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
      return sendProblem(reply, 'validation_failed', error.message, { errors: [{ field: 'body', message: error.message }] });
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
    return sendProblem(reply, 'not_found', `no route ${request.method} ${path}`);
  });
}
