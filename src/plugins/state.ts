import fp from 'fastify-plugin';
import { redisAddress, type Config } from '../config.js';
import { Recovery } from '../jobs/recovery.js';
import { Decisions } from '../redis/decisions.js';
import { isCluster } from '../redis/client.js';
import { Keys } from '../redis/keys.js';
import { ClusterServerCheck, ServerCheck, type ServerVerdict } from '../redis/server-check.js';

declare module 'fastify' {
  interface FastifyInstance {
    keys: Keys;
    decisions: Decisions;
    recovery: Recovery;
  }
}

/**
 * The Redis state: its keys, the Lua decision scripts, and the recovery that rebuilds it from PostgreSQL. One
 * plugin, because the two need each other: a script that finds no state starts recovery, and recovery rebuilds
 * through the scripts' module. On ready, the node waits (up to 30 s) for state to serve from.
 */
export const statePlugin = fp<{ config: Config }>(
  async (app, { config }) => {
    const { redis, db, metrics, log } = app;
    const keys = new Keys(config.REDIS_KEY_PREFIX, config.REDIS_CLUSTER_NODES !== '');
    const redisLog = log.child({ redis: redisAddress(config) });
    // Redis' state is trusted only on the server (the processes) it was rebuilt on (src/redis/server-check.ts).
    const onVerdict = (verdict: ServerVerdict, node?: string) => {
      if (verdict === 'unknown') {
        redisLog.warn({ node }, 'the Redis user may not run INFO, so a Redis that restarts from its files or fails over cannot be told from the one its state was rebuilt on, and may sell a held unit again: grant it +info');
      }
      if (verdict !== 'dropped') return;
      redisLog.warn({ node }, 'Redis is not the server its state was rebuilt on (it restarted from its files, or a replica took over), so it may lack acknowledged holds: rebuilding from PostgreSQL');
      void recovery.ensure();
    };
    // The message only: ioredis' error carries the command, here a script and, on a cluster, every slot's tag.
    const onCheckError = (err: unknown, node?: string) =>
      redisLog.warn({ node, reason: err instanceof Error ? err.message : String(err) }, 'checking which Redis server this is failed');
    const clusterCheck = isCluster(redis) ? new ClusterServerCheck(redis, keys, onVerdict, onCheckError) : null;
    const serverCheck = isCluster(redis) ? null : new ServerCheck(redis, keys, onVerdict, onCheckError);
    const decisions = new Decisions(redis, keys, metrics, config.TOMBSTONE_RETENTION_SECONDS * 1000, () => void recovery.ensure(), app.redisReads, clusterCheck ?? serverCheck);
    const recovery = new Recovery(
      { redis, db, keys, decisions, metrics, log: redisLog },
      { idempotencyRetentionHours: config.IDEMPOTENCY_RETENTION_HOURS },
    );
    app.decorate('keys', keys);
    app.decorate('decisions', decisions);
    app.decorate('recovery', recovery);

    app.addHook('onReady', async () => {
      // Connections made before this plugin listened are checked before the node serves.
      await clusterCheck?.checkAll().catch(() => undefined);
      if (redis.status === 'ready') await serverCheck?.check().catch(() => undefined);
      // Start serving with Redis state in place when Redis is up; otherwise start not-ready and recover later.
      if (!(await recovery.check()) && recovery.phase !== 'redis_unreachable') {
        await Promise.race([recovery.ensure(), new Promise((r) => setTimeout(r, 30_000).unref())]);
      }
    });
  },
  { name: 'state', fastify: '5.x', dependencies: ['metrics', 'redis', 'postgres'] },
);
