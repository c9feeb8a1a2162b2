import fp from 'fastify-plugin';
import type { Config } from '../config.js';
import { BatchWriter } from '../store/writer.js';

declare module 'fastify' {
  interface FastifyInstance {
    writer: BatchWriter;
  }
}

/** The group-commit writer; on close it finishes the batches in flight, before the pool it writes through ends. */
export const writerPlugin = fp<{ config: Config; appendEvents?: boolean }>(
  async (app, { config, appendEvents }) => {
    const writer = new BatchWriter(app.db, app.metrics, {
      maxBatch: config.WRITER_MAX_BATCH,
      concurrency: config.WRITER_CONCURRENCY,
      fateWaitMs: config.WRITER_FATE_WAIT_MS,
      maxQueue: config.WRITER_MAX_QUEUE,
      appendEvents,
    });
    app.decorate('writer', writer);
    app.addHook('onClose', async () => {
      await writer.close();
    });
  },
  { name: 'writer', fastify: '5.x', dependencies: ['metrics', 'postgres'] },
);
