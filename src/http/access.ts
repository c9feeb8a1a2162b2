import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import rateLimit from '@fastify/rate-limit';
import type { RedisClient } from '../redis/client.js';
import { parseApiKeys } from '../credentials.js';
import { ProblemError } from '../domain/errors.js';
import { DEFAULT_TENANT, type Caller } from '../domain/tenancy.js';
import type { Keys } from '../redis/keys.js';

/** Who may call a route: anyone, a client credential, or an operator credential. */
export type Access = 'public' | 'client' | 'operator';

declare module 'fastify' {
  interface FastifyContextConfig {
    access?: Access;
  }
  interface FastifyRequest {
    /** The authenticated credential once authentication is on; null otherwise (see `callerOf`). */
    caller: Caller | null;
  }
}

interface Credential {
  digest: Buffer;
  caller: Caller;
}

const digest = (secret: string) => createHash('sha256').update(secret).digest();

/** The anonymous idempotency scope, used while authentication is off. */
export const ANONYMOUS = '_';

/**
 * The caller while authentication is off: no tenancy (everything is the default tenant, everyone sees
 * everything), as every route is open to everyone.
 */
export const ANONYMOUS_CALLER: Caller = { name: ANONYMOUS, role: 'operator', tenant: DEFAULT_TENANT };

export const callerOf = (request: FastifyRequest): Caller => request.caller ?? ANONYMOUS_CALLER;

/** `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 9110 §11.1). */
const BEARER = /^bearer[ \t]+(\S+)[ \t]*$/i;

const REALM = 'Bearer realm="inventory"';

/**
 * Optional bearer-key authentication (401 without a valid key, 403 for an operator route with a client key) and
 * optional rate limiting per credential (429), both off unless configured.
 */
export async function registerAccess(
  app: FastifyInstance,
  options: { apiKeys: string; rateLimitMax: number; rateLimitWindowMs: number; redis: RedisClient; keys: Keys },
): Promise<void> {
  const { keys: apiKeys, problems } = parseApiKeys(options.apiKeys);
  if (problems.length > 0) throw new Error(problems.join('; ')); // loadConfig refuses these first
  const credentials: Credential[] = apiKeys.map((k) => ({
    digest: digest(k.secret),
    caller: { name: k.name, role: k.role, tenant: k.tenant },
  }));
  app.decorateRequest('caller', null);

  if (credentials.length > 0) {
    // A callback, not async: nothing here waits (see plugins/http.ts).
    app.addHook('onRequest', (request, reply, done) => {
      const access = request.routeOptions.config.access ?? 'public';
      if (access === 'public') return done();
      const token = BEARER.exec(request.headers.authorization ?? '')?.[1];
      const credential = token === undefined ? undefined : authenticate(token, credentials);
      if (!credential) return done(unauthorized(reply, token !== undefined));
      if (access === 'operator' && credential.caller.role !== 'operator') {
        return done(new ProblemError('forbidden', 'this endpoint needs an operator key'));
      }
      request.caller = credential.caller;
      done();
    });
  }

  if (options.rateLimitMax > 0) {
    await app.register(rateLimit, {
      global: true,
      max: options.rateLimitMax,
      timeWindow: options.rateLimitWindowMs,
      // Shared across nodes; a Redis outage must not turn into 429s (mutations fail closed on their own).
      redis: options.redis,
      nameSpace: options.keys.rateLimit,
      skipOnError: true,
      allowList: (request) => (request.routeOptions.config.access ?? 'public') === 'public',
      keyGenerator: (request) => request.caller?.name ?? request.ip,
      errorResponseBuilder: (_request, context) =>
        new ProblemError('rate_limited', `rate limit exceeded, retry in ${context.after}`),
    });
  }
}

/** 401 with the challenge RFC 6750 asks for: `error="invalid_token"` when a bearer token was presented. */
function unauthorized(reply: FastifyReply, presented: boolean): ProblemError {
  reply.header('www-authenticate', presented ? `${REALM}, error="invalid_token"` : REALM);
  return new ProblemError('unauthorized', 'send a valid key as `Authorization: Bearer <key>`');
}

function authenticate(token: string, credentials: Credential[]): Credential | undefined {
  const presented = digest(token);
  // Compare digests in constant time, and look at every credential, so timing reveals nothing.
  let found: Credential | undefined;
  for (const c of credentials) if (timingSafeEqual(c.digest, presented)) found = c;
  return found;
}
