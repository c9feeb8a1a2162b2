import fp from 'fastify-plugin';
import { addressOf, type Config } from '../config.js';
import { createPool } from '../store/database.js';
import { sessionName } from '../store/nodes.js';
import { primaryReads, ReplicaRouter, type Reads } from '../store/read-replica.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** The reads a replica may serve (src/store/read-replica.ts): on DATABASE_REPLICA_URL when set and fit, else the primary. */
    reads: Reads;
  }
}

/**
 * With DATABASE_REPLICA_URL, a pool on the replica and the router that samples its lag; without, reads on the primary.
 * The replica is never needed: the node starts, is ready and answers with it down.
 */
export const readReplicaPlugin = fp<{ config: Config; nodeId: string }>(
  async (app, { config, nodeId }) => {
    const { db, metrics, log } = app;
    if (config.DATABASE_REPLICA_URL === '') {
      app.decorate('reads', primaryReads(db, metrics));
      return;
    }
    const replica = createPool(config.DATABASE_REPLICA_URL, {
      max: config.DATABASE_POOL_SIZE,
      queryTimeoutMs: config.DATABASE_QUERY_TIMEOUT_MS,
      applicationName: sessionName(nodeId),
    });
    const router = new ReplicaRouter(
      { primary: db, replica, metrics, log: log.child({ replica: addressOf(config.DATABASE_REPLICA_URL) }) },
      { maxLagMs: config.DATABASE_REPLICA_MAX_LAG_MS },
    );
    app.decorate('reads', router);

    app.addHook('onReady', async () => {
      router.start();
    });
    app.addHook('onClose', async () => {
      await router.stop();
      await replica.end().catch(() => {});
    });
  },
  { name: 'read-replica', fastify: '5.x', dependencies: ['metrics', 'postgres'] },
);
