import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import rateLimit from '@fastify/rate-limit';
import type { Redis } from 'ioredis';
import { ProblemError } from '../domain/errors.js';
import type { Keys } from '../redis/keys.js';

/** Who may call a route: anyone, a client credential, or an operator credential. */
export type Access = 'public' | 'client' | 'operator';

declare module 'fastify' {
  interface FastifyContextConfig {
    access?: Access;
  }
  interface FastifyRequest {
    /** The credential's name once authentication is on; null otherwise. */
    principal: string | null;
  }
}

interface Credential {
  name: string;
  digest: Buffer;
  role: 'client' | 'operator';
}

const digest = (secret: string) => createHash('sha256').update(secret).digest();

/** `name:secret:role,…` (validated by the config schema). */
export function parseApiKeys(value: string): Credential[] {
  return value
    .split(',')
    .filter(Boolean)
    .map((entry) => {
      const first = entry.indexOf(':');
      const last = entry.lastIndexOf(':');
      return {
        name: entry.slice(0, first),
        digest: digest(entry.slice(first + 1, last)),
        role: entry.slice(last + 1) as Credential['role'],
      };
    });
}

/** The anonymous idempotency scope, used while authentication is off. */
export const ANONYMOUS = '_';

/**
 * Optional bearer-key authentication (401 without a valid key, 403 for an operator route with a client key) and
 * optional rate limiting per credential (429), both off unless configured.
 */
export async function registerAccess(
  app: FastifyInstance,
  options: { apiKeys: string; rateLimitMax: number; rateLimitWindowMs: number; redis: Redis; keys: Keys },
): Promise<void> {
  const credentials = parseApiKeys(options.apiKeys);
  app.decorateRequest('principal', null);

  if (credentials.length > 0) {
    app.addHook('onRequest', async (request) => {
      const access = request.routeOptions.config.access ?? 'public';
      if (access === 'public') return;
      const credential = authenticate(request, credentials);
      if (!credential) throw new ProblemError('unauthorized', 'send a valid key as `Authorization: Bearer <key>`');
      if (access === 'operator' && credential.role !== 'operator') {
        throw new ProblemError('forbidden', 'this endpoint needs an operator key');
      }
      request.principal = credential.name;
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
      keyGenerator: (request) => request.principal ?? request.ip,
      errorResponseBuilder: (_request, context) =>
        new ProblemError('rate_limited', `rate limit exceeded, retry in ${context.after}`),
    });
  }
}

function authenticate(request: FastifyRequest, credentials: Credential[]): Credential | undefined {
  const header = request.headers.authorization;
  if (!header?.startsWith('Bearer ')) return undefined;
  const presented = digest(header.slice('Bearer '.length).trim());
  // Compare digests in constant time, and look at every credential, so timing reveals nothing.
  let found: Credential | undefined;
  for (const c of credentials) if (timingSafeEqual(c.digest, presented)) found = c;
  return found;
}
