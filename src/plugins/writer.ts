import fp from 'fastify-plugin';
import type { Config } from '../config.js';
import { createPool } from '../store/database.js';
import { sessionName } from '../store/nodes.js';
import { BatchWriter, readSessionsOnConnect } from '../store/writer.js';

declare module 'fastify' {
  interface FastifyInstance {
    writer: BatchWriter;
  }
}

/**
 * The group-commit writer, on a pool of its own (its connections plan the batch statement once:
 * src/store/database.ts), its sessions named as the node's others. On close it finishes the batches in flight,
 * then ends its pool.
 */
export const writerPlugin = fp<{ config: Config; nodeId: string; appendEvents?: boolean }>(
  async (app, { config, nodeId, appendEvents }) => {
    const pool = createPool(config.DATABASE_URL, {
      // The batches in flight, and lookups of lost ones beside them.
      max: config.WRITER_CONCURRENCY + 2,
      queryTimeoutMs: config.DATABASE_QUERY_TIMEOUT_MS,
      applicationName: sessionName(nodeId),
      groupCommit: true,
    });
    readSessionsOnConnect(pool);
    const writer = new BatchWriter(pool, app.metrics, {
      maxBatch: config.WRITER_MAX_BATCH,
      concurrency: config.WRITER_CONCURRENCY,
      fateWaitMs: config.WRITER_FATE_WAIT_MS,
      maxQueue: config.WRITER_MAX_QUEUE,
      appendEvents,
    });
    app.decorate('writer', writer);
    app.addHook('onClose', async () => {
      await writer.close();
      await pool.end().catch(() => {});
    });
  },
  { name: 'writer', fastify: '5.x', dependencies: ['metrics', 'postgres'] },
);
