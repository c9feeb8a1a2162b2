/** The bench's Redis clients: the single Redis (REDIS_URL) or a Redis Cluster (REDIS_CLUSTER_NODES), and cleanup. */
import { Cluster, Redis } from 'ioredis';
import { parseClusterNodes } from '../src/config.js';
import { isCluster, scanTargets, type RedisClient } from '../src/redis/client.js';

/** A connected client of the cluster at `clusterNodes` (`host:port,…`), or else of the Redis at `url`. */
export async function connectRedis(url: string, clusterNodes = ''): Promise<RedisClient> {
  const { nodes, nodeOptions } = parseClusterNodes(clusterNodes);
  const redis =
    nodes.length > 0
      ? new Cluster(nodes, { lazyConnect: true, redisOptions: { maxRetriesPerRequest: 1, ...nodeOptions } })
      : new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  return redis;
}

/** Removes every key under `prefix` (on a cluster: from every master, one key per call, as keys lie in many slots). */
export async function removePrefix(redis: RedisClient, prefix: string): Promise<void> {
  for (const server of scanTargets(redis)) {
    const stream = server.scanStream({ match: `${prefix}*`, count: 1000 });
    for await (const batch of stream as AsyncIterable<string[]>) {
      if (batch.length === 0) continue;
      if (isCluster(redis)) await Promise.all(batch.map((key) => redis.unlink(key)));
      else await redis.unlink(...batch);
    }
  }
}
