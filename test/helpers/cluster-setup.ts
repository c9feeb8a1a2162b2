import type { TestProject } from 'vitest/node';
import { startRedisCluster } from './redis-cluster.js';

/**
 * The `cluster` project's global setup (vitest.config.ts): one private Redis Cluster (3 masters + 3 replicas) for
 * the run, named to every test app by TEST_REDIS_CLUSTER_NODES (test/helpers/app.ts). Each file still owns its key
 * prefix and database.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const cluster = await startRedisCluster();
  process.env.TEST_REDIS_CLUSTER_NODES = cluster.seeds;
  project.provide('redisClusterNodes', cluster.seeds);
  return () => cluster.stop();
}

declare module 'vitest' {
  export interface ProvidedContext {
    redisClusterNodes: string;
  }
}
