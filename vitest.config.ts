import { defineConfig } from 'vitest/config';

/**
 * Files that also run against a private Redis Cluster (project `cluster`, test/helpers/cluster-setup.ts): the HTTP
 * contract and the concurrency tests, the rest of the suite is about the single Redis or Redis-independent.
 */
const onCluster = [
  'test/http/reservations-create.test.ts',
  'test/http/reservations-lifecycle.test.ts',
  'test/http/idempotency.test.ts',
  'test/http/allocation.test.ts',
  'test/http/availability.test.ts',
  'test/http/stock.test.ts',
  'test/http/partial-confirm.test.ts',
  'test/http/by-reference.test.ts',
  'test/http/priority.test.ts',
  'test/integration/oversell.test.ts',
  'test/integration/exactly-once.test.ts',
  'test/integration/allocation-concurrency.test.ts',
  'test/integration/lifecycle.test.ts',
  'test/integration/three-nodes.test.ts',
  'test/integration/redis-read-replica.test.ts',
];

export default defineConfig({
  test: {
    // Each file owns its database and Redis key prefix (or its own redis-server), so files run in parallel.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 30_000,
    // The JSON report lets CI print a plain "N passed, N failed" closing line.
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results.json' },
    hookTimeout: 60_000,
    projects: [
      // redis-read-replica.test.ts needs Redis replicas: only the cluster has them.
      { extends: true, test: { name: 'redis', include: ['test/**/*.test.ts'], exclude: ['test/integration/redis-read-replica.test.ts'] } },
      { extends: true, test: { name: 'cluster', include: onCluster, globalSetup: ['test/helpers/cluster-setup.ts'] } },
    ],
  },
});
