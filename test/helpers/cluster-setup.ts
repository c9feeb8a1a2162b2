import type { TestProject } from 'vitest/node';
import { startRedisCluster } from './redis-cluster.js';

/**
 * The `cluster` project's global setup (vitest.config.ts): one private Redis Cluster (3 masters + 3 replicas) for
 * the run, provided to that project's files only (`inject('redisClusterNodes')`, test/helpers/app.ts; an
 * environment variable would reach every project's workers). Each file still owns its key prefix and database.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const cluster = await startRedisCluster();
  project.provide('redisClusterNodes', cluster.seeds);
  return () => cluster.stop();
}

declare module 'vitest' {
  export interface ProvidedContext {
    redisClusterNodes: string;
  }
}
