import type { FastifyBaseLogger } from 'fastify';
import fp from 'fastify-plugin';
import { Redis } from 'ioredis';
import { addressOf, type Config } from '../config.js';

declare module 'fastify' {
  interface FastifyInstance {
    redis: Redis;
  }
}

/** The Redis client every part of the node shares; quit on close. */
export const redisPlugin = fp<{ config: Config }>(
  async (app, { config }) => {
    const log = app.log;
    const redis = new Redis(config.REDIS_URL, {
      // Fail fast while Redis is away (the request answers 503) instead of queueing commands.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: config.REDIS_COMMAND_TIMEOUT_MS,
      retryStrategy: (times) => Math.min(times * 50, 1000),
      lazyConnect: true,
      // Commands issued in the same tick (concurrent requests' scripts) go out in one write.
      enableAutoPipelining: true,
    });
    // ioredis' own errors ("Connection is closed.") do not say where; every Redis log line names the address.
    const address = addressOf(config.REDIS_URL);
    redis.on('error', (err) => log.debug({ err, redis: address }, `Redis connection error (${address})`));
    await redis
      .connect()
      .catch((err: unknown) => log.warn({ err, redis: address }, `Redis at ${address} is unreachable at start; will keep trying`));
    app.decorate('redis', redis);

    app.addHook('onReady', async () => {
      await warnIfRedisEvicts(redis, log);
    });
    app.addHook('onClose', async () => {
      await redis.quit().catch(() => {});
    });
  },
  { name: 'redis', fastify: '5.x' },
);

/** Evicting keys would silently drop holds and idempotency records: Redis must run with `noeviction`. */
async function warnIfRedisEvicts(redis: Redis, log: FastifyBaseLogger): Promise<void> {
  try {
    const [, policy] = (await redis.config('GET', 'maxmemory-policy')) as [string, string];
    if (policy !== 'noeviction') log.warn({ policy }, 'Redis maxmemory-policy should be noeviction: evicted keys lose holds');
  } catch {
    // CONFIG is disabled on some managed Redis services; nothing to check then.
  }
}
