import type { Cluster, Redis } from 'ioredis';

/**
 * The Redis handle every part of the node shares: a single Redis (`REDIS_URL`) or a Redis Cluster
 * (`REDIS_CLUSTER_NODES`). Both take the same commands; every script call touches the keys of one slot (keys.ts).
 */
export type RedisClient = Redis | Cluster;

export const isCluster = (redis: RedisClient): redis is Cluster => redis.isCluster;

/** The servers to walk for a keyspace scan: a cluster's every master (SCAN sees one node's keys), or the Redis. */
export const scanTargets = (redis: RedisClient): Redis[] => (isCluster(redis) ? redis.nodes('master') : [redis]);

/**
 * Whether a command that failed may still have run in Redis (a timeout, a connection cut after the send). Only a
 * refusal to send while disconnected (the offline queue is off) proves it never did.
 */
export const mayHaveRun = (err: unknown): boolean =>
  !(err instanceof Error && /(Stream|Cluster) isn't (writeable|ready) and enableOfflineQueue options is false/.test(err.message));

/**
 * Walks a hash with HSCAN, handing each page's flat [field, value, …] list to `page`. A loop of calls rather than
 * ioredis' hscanStream: reconciliation reads every item's holds, most of them one page, and a stream (with its async
 * iterator) per item was a sixth of what a pass allocated.
 */
export async function scanHash(redis: RedisClient, key: string, page: (entries: string[]) => void): Promise<void> {
  let cursor = '0';
  do {
    const [next, entries] = await redis.hscan(key, cursor, 'COUNT', 1000);
    page(entries);
    cursor = next;
  } while (cursor !== '0');
}
