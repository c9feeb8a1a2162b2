import fp from 'fastify-plugin';
import { createMetrics, type Metrics } from '../metrics.js';

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics;
  }
}

/** The app's metrics, on a registry of its own (tests build many apps in one process). Nothing to close. */
export const metricsPlugin = fp(
  async (app) => {
    app.decorate('metrics', createMetrics());
  },
  { name: 'metrics', fastify: '5.x' },
);
