import type { FastifyPluginAsync } from 'fastify';
import type pg from 'pg';
import type { Redis } from 'ioredis';
import type { Recovery } from '../../jobs/recovery.js';
import type { Metrics } from '../../metrics.js';
import { reachable } from '../../store/health.js';
import { sendProblem } from '../problem.js';

export const operationRoutes: FastifyPluginAsync<{
  redis: Redis;
  db: pg.Pool;
  recovery: Recovery;
  metrics: Metrics;
  /** `host:port` of each dependency (no credentials), named in the readiness log lines. */
  addresses: { redis: string; postgres: string };
}> = async (app, { redis, db, recovery, metrics, addresses }) => {
  /** The last readiness verdict logged: a change is logged once, not every probe. */
  let lastVerdict = 'ready';

  app.get('/health/live', { schema: { tags: ['operations'], summary: 'The process is up' } }, async () => ({ status: 'ok' }));

  app.get(
    '/health/ready',
    { schema: { tags: ['operations'], summary: 'Redis and PostgreSQL reachable and Redis state rebuilt; else 503' } },
    async (request, reply) => {
      const [redisOk, postgresOk] = await Promise.all([
        redis.ping().then(() => true, () => false),
        reachable(db),
      ]);
      const stateOk = redisOk && (await recovery.check());
      const checks = {
        redis: redisOk ? 'ok' : 'unreachable',
        postgres: postgresOk ? 'ok' : 'unreachable',
        state: redisOk ? recovery.phase : 'unknown',
      };
      const problems = [
        ...(redisOk ? [] : [`Redis at ${addresses.redis} unreachable`]),
        ...(postgresOk ? [] : [`PostgreSQL at ${addresses.postgres} unreachable`]),
        ...(redisOk && !stateOk ? [`Redis state ${recovery.phase}`] : []),
      ];
      const verdict = problems.length === 0 ? 'ready' : `not ready: ${problems.join('; ')}`;
      if (verdict !== lastVerdict) {
        lastVerdict = verdict;
        if (problems.length === 0) request.log.info({ checks }, 'ready again');
        else request.log.warn({ checks, ...addresses }, verdict);
      }
      if (problems.length === 0) return { status: 'ready', checks };
      return sendProblem(reply, 'unavailable', 'not ready', { checks });
    },
  );

  app.get('/metrics', { schema: { tags: ['operations'], summary: 'Prometheus metrics' } }, async (_request, reply) => {
    reply.type(metrics.registry.contentType);
    return metrics.registry.metrics();
  });
};
