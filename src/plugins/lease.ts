import fp from 'fastify-plugin';
import { NodeLease } from '../jobs/node-lease.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** This process's node id and lease (src/jobs/node-lease.ts). */
    lease: NodeLease;
  }
}

/**
 * This node's lease, taken once the node is ready and given up on close. Registered before the writer, so it is
 * given up only after the writer's last commit (Fastify runs onClose hooks in reverse order): until then the claims
 * this node left in Redis are in flight.
 */
export const leasePlugin = fp<{ nodeId: string }>(
  async (app, { nodeId }) => {
    const lease = new NodeLease(app.redis, app.keys, nodeId);
    app.decorate('lease', lease);
    app.addHook('onReady', async () => {
      lease.start();
    });
    app.addHook('onClose', async () => {
      await lease.stop();
    });
  },
  { name: 'lease', fastify: '5.x', dependencies: ['redis', 'state'] },
);
