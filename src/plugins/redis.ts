import type { FastifyBaseLogger } from 'fastify';
import fp from 'fastify-plugin';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { parseClusterNodes, redisAddress, type Config } from '../config.js';
import { isCluster, type RedisClient } from '../redis/client.js';

declare module 'fastify' {
  interface FastifyInstance {
    redis: RedisClient;
    /** Where availability reads go: the same client, or (REDIS_READ_FROM=replica) one that reads from replicas. */
    redisReads: RedisClient;
  }
}

/**
 * The Redis client every part of the node shares, quit on close: a single Redis (REDIS_URL) or a Redis Cluster
 * (REDIS_CLUSTER_NODES), which ioredis follows through failovers and slot moves (MOVED/ASK), sending each command
 * to the master of its keys' slot.
 */
export const redisPlugin = fp<{ config: Config }>(
  async (app, { config }) => {
    const log = app.log;
    const address = redisAddress(config);
    const redis = createClient(config, 'master');
    const reads = config.REDIS_READ_FROM === 'replica' ? createClient(config, 'replica') : redis;
    for (const client of new Set([redis, reads])) {
      // ioredis' own errors ("Connection is closed.") do not say where; every Redis log line names the address.
      client.on('error', (err) => log.debug({ err, redis: address }, `Redis connection error (${address})`));
      await client
        .connect()
        .catch((err: unknown) => log.warn({ err, redis: address }, `Redis at ${address} is unreachable at start; will keep trying`));
    }
    app.decorate<RedisClient>('redis', redis);
    app.decorate<RedisClient>('redisReads', reads);

    app.addHook('onReady', async () => {
      await warnIfRedisEvicts(redis, log);
    });
    app.addHook('onClose', async () => {
      for (const client of new Set([redis, reads])) await client.quit().catch(() => {});
    });
  },
  { name: 'redis', fastify: '5.x' },
);

function createClient(config: Config, readFrom: 'master' | 'replica'): RedisClient {
  const options: RedisOptions = {
    // Fail fast while Redis is away (the request answers 503) instead of queueing commands.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: config.REDIS_COMMAND_TIMEOUT_MS,
    retryStrategy: (times) => Math.min(times * 50, 1000),
    lazyConnect: true,
    // Commands issued in the same tick (concurrent requests' scripts) go out in one write (per node, on a cluster).
    enableAutoPipelining: true,
  };
  const { nodes, nodeOptions } = parseClusterNodes(config.REDIS_CLUSTER_NODES);
  if (nodes.length === 0) return new Redis(config.REDIS_URL, options);
  const { enableAutoPipelining: _, lazyConnect, enableOfflineQueue, ...perNode } = options;
  return new Cluster(nodes, {
    redisOptions: { ...perNode, ...nodeOptions },
    // Over TLS a node is connected to by the name the cluster gives, not an address ioredis resolved it to, so
    // that its certificate is checked against that name (ioredis' advice for TLS clusters).
    ...(nodeOptions.tls ? { dnsLookup: (address: string, callback: (err: null, address: string) => void) => callback(null, address) } : {}),
    // Not on a cluster: ioredis groups an auto-pipeline by the slot of a command's first argument, which for a
    // script defined with a variable number of keys is the key count, so a batch would mix nodes and be refused.
    // Commands still go out without waiting for the previous answer.
    enableAutoPipelining: false,
    lazyConnect,
    enableOfflineQueue,
    clusterRetryStrategy: (times) => Math.min(times * 50, 1000),
    // Read-only commands (and scripts defined read-only) of this client go to a replica of the slot.
    scaleReads: readFrom === 'replica' ? 'slave' : 'master',
  });
}

/** Evicting keys would silently drop holds and idempotency records: Redis must run with `noeviction`. */
async function warnIfRedisEvicts(redis: RedisClient, log: FastifyBaseLogger): Promise<void> {
  try {
    const servers = isCluster(redis) ? redis.nodes('master') : [redis];
    for (const server of servers) {
      const [, policy] = (await server.config('GET', 'maxmemory-policy')) as [string, string];
      if (policy !== 'noeviction') log.warn({ policy }, 'Redis maxmemory-policy should be noeviction: evicted keys lose holds');
    }
  } catch {
    // CONFIG is disabled on some managed Redis services; nothing to check then.
  }
}
