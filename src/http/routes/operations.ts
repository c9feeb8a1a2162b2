import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type pg from 'pg';
import type { RedisClient } from '../../redis/client.js';
import { Type } from 'typebox';
import type { Recovery } from '../../jobs/recovery.js';
import type { Metrics } from '../../metrics.js';
import { reachable } from '../../store/health.js';
import { documented, problems } from '../openapi.js';
import { sendProblem } from '../problem.js';

const Checks = Type.Object(
  {
    redis: Type.Union([Type.Literal('ok'), Type.Literal('unreachable')]),
    postgres: Type.Union([Type.Literal('ok'), Type.Literal('unreachable')]),
    state: Type.String({
      description:
        'Redis state: `ready`; `rebuilding` or `waiting_for_rebuild` (from PostgreSQL, after Redis lost it); `starting`; ' +
        '`redis_unreachable`; `unknown` while Redis is unreachable',
    }),
  },
  { description: 'The state of each dependency' },
);
const Ready = Type.Object({ status: Type.Literal('ready'), checks: Checks });

export const operationRoutes: FastifyPluginAsyncTypebox<{
  redis: RedisClient;
  db: pg.Pool;
  recovery: Recovery;
  metrics: Metrics;
  /** `host:port` of each dependency (no credentials), named in the readiness log lines. */
  addresses: { redis: string; postgres: string };
}> = async (app, { redis, db, recovery, metrics, addresses }) => {
  /** The last readiness verdict logged: a change is logged once, not every probe. */
  let lastVerdict = 'ready';

  app.get(
    '/health/live',
    {
      schema: {
        operationId: 'getLiveness',
        tags: ['operations'],
        summary: 'The process is up',
        description: 'For a liveness probe: answers while the process runs, whatever its dependencies.',
        response: {
          200: documented('The process is up', Type.Object({ status: Type.Literal('ok') }), {
            up: { summary: 'Up', value: { status: 'ok' } },
          }),
        },
      },
    },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/health/ready',
    {
      schema: {
        operationId: 'getReadiness',
        tags: ['operations'],
        summary: 'Redis and PostgreSQL reachable and Redis state rebuilt; else 503',
        description:
          'For the load balancer: while this answers 503, mutations and availability reads answer 503 too. Each change ' +
          'of verdict is logged once.',
        response: {
          200: documented('Ready to serve', Ready, {
            ready: { summary: 'Ready', value: { status: 'ready', checks: { redis: 'ok', postgres: 'ok', state: 'ready' } } },
          }),
          ...problems({
            unavailable: {
              means: 'Not ready: `checks` says which dependency is unreachable, or that Redis state is being rebuilt.',
              example: {
                detail: 'not ready',
                checks: { redis: 'ok', postgres: 'ok', state: 'rebuilding' },
              },
            },
          }),
        },
      },
    },
    async (request, reply) => {
      const [redisOk, postgresOk] = await Promise.all([
        redis.ping().then(() => true, () => false),
        reachable(db),
      ]);
      const stateOk = redisOk && (await recovery.check());
      const checks = {
        redis: redisOk ? ('ok' as const) : ('unreachable' as const),
        postgres: postgresOk ? ('ok' as const) : ('unreachable' as const),
        state: redisOk ? recovery.phase : 'unknown',
      };
      const failures = [
        ...(redisOk ? [] : [`Redis at ${addresses.redis} unreachable`]),
        ...(postgresOk ? [] : [`PostgreSQL at ${addresses.postgres} unreachable`]),
        ...(redisOk && !stateOk ? [`Redis state ${recovery.phase}`] : []),
      ];
      const verdict = failures.length === 0 ? 'ready' : `not ready: ${failures.join('; ')}`;
      if (verdict !== lastVerdict) {
        lastVerdict = verdict;
        if (failures.length === 0) request.log.info({ checks }, 'ready again');
        else request.log.warn({ checks, ...addresses }, verdict);
      }
      if (failures.length === 0) return { status: 'ready' as const, checks };
      return sendProblem(reply, 'unavailable', 'not ready', { checks });
    },
  );

  app.get(
    '/metrics',
    {
      schema: {
        operationId: 'getMetrics',
        tags: ['operations'],
        summary: 'Prometheus metrics',
        description: "This node's metrics in the Prometheus text format (the README lists them).",
        response: {
          200: {
            description: 'The metrics, in the Prometheus text exposition format',
            content: {
              'text/plain': {
                schema: Type.String(),
                examples: {
                  excerpt: {
                    summary: 'An excerpt',
                    value:
                      '# HELP irs_reservation_outcomes_total Reservation outcomes: created, insufficient, confirmed, released, expired, replayed\n' +
                      '# TYPE irs_reservation_outcomes_total counter\n' +
                      'irs_reservation_outcomes_total{outcome="created"} 1842\n',
                  },
                },
              },
            },
          },
        },
      },
    },
    async (_request, reply) => {
      reply.type(metrics.registry.contentType);
      return metrics.registry.metrics();
    },
  );
};
