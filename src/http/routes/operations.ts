import type { FastifyPluginAsync } from 'fastify';
import type pg from 'pg';
import type { Redis } from 'ioredis';
import type { Recovery } from '../../jobs/recovery.js';
import type { Metrics } from '../../metrics.js';
import { sendProblem } from '../problem.js';

export const operationRoutes: FastifyPluginAsync<{ redis: Redis; db: pg.Pool; recovery: Recovery; metrics: Metrics }> = async (
  app,
  { redis, db, recovery, metrics },
) => {
  app.get('/health/live', { schema: { tags: ['operations'], summary: 'The process is up' } }, async () => ({ status: 'ok' }));

  app.get(
    '/health/ready',
    { schema: { tags: ['operations'], summary: 'Redis and PostgreSQL reachable and Redis state rebuilt; else 503' } },
    async (_request, reply) => {
      const [redisOk, postgresOk] = await Promise.all([
        redis.ping().then(() => true, () => false),
        db.query('SELECT 1').then(() => true, () => false),
      ]);
      const stateOk = redisOk && (await recovery.check());
      const checks = {
        redis: redisOk ? 'ok' : 'unreachable',
        postgres: postgresOk ? 'ok' : 'unreachable',
        state: redisOk ? recovery.phase : 'unknown',
      };
      if (redisOk && postgresOk && stateOk) return { status: 'ready', checks };
      return sendProblem(reply, 'unavailable', 'not ready', { checks });
    },
  );

  app.get('/metrics', { schema: { tags: ['operations'], summary: 'Prometheus metrics' } }, async (_request, reply) => {
    reply.type(metrics.registry.contentType);
    return metrics.registry.metrics();
  });
};
