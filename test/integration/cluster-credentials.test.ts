import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, outcome, startHttpApp } from '../helpers/api.js';
import { newItem, newKey, startTestApp } from '../helpers/app.js';
import { startRedisCluster, type RedisClusterServer } from '../helpers/redis-cluster.js';

/**
 * A Redis Cluster whose nodes want credentials: REDIS_CLUSTER_NODES names them once, as a redis:// entry, and the
 * service asks every node with them, the nodes it finds by itself included. Its own cluster: an ACL user is added
 * to each node (ACLs are per node), the default user left as it is for the helpers.
 */
describe('Redis Cluster with credentials', () => {
  const secret = `cluster-${randomBytes(6).toString('hex')}`;
  let cluster: RedisClusterServer;
  const onEveryNode = async (command: (node: Redis) => Promise<unknown>) => {
    const results = [];
    for (const server of cluster.servers) {
      const node = new Redis({ host: '127.0.0.1', port: server.port, lazyConnect: true });
      await node.connect();
      results.push(await command(node).finally(() => node.disconnect()));
    }
    return results;
  };

  beforeAll(async () => {
    cluster = await startRedisCluster();
    await onEveryNode((node) => node.call('ACL', 'SETUSER', 'irs', 'on', `>${secret}`, '~*', '&*', '+@all'));
  }, 60_000);
  afterAll(() => cluster?.stop());

  /** REDIS_CLUSTER_NODES naming one seed only, with `password`: the client finds the other nodes. */
  const seedWith = (password: string) => `redis://irs:${password}@${cluster.seeds.split(',')[0]}`;

  it('stocks and reserves, asking every master as that user', async () => {
    const t = await startHttpApp({ REDIS_CLUSTER_NODES: seedWith(secret) });
    try {
      const api = Api.inject(t.app);
      const item = newItem('acl');
      await api.stock(item, 5);
      const reserved = await api.reserve({ lines: [{ itemId: item, quantity: 2 }] }, newKey());
      expect(outcome(reserved)).toBe('201');
      const clients = (await onEveryNode((node) => node.call('CLIENT', 'LIST'))) as string[];
      const roles = (await onEveryNode((node) => node.call('ROLE'))) as [string][];
      const mastersAsked = clients.filter((list, n) => roles[n]![0] === 'master' && /\buser=irs\b/.test(list));
      expect(mastersAsked).toHaveLength(3);
    } finally {
      await t.close();
    }
  });

  it('with a wrong password is not ready, and never says the password', async () => {
    const wrong = `wrong-${randomBytes(6).toString('hex')}`;
    const t = await startTestApp({ REDIS_CLUSTER_NODES: seedWith(wrong) });
    try {
      const answer = await Api.inject(t.app).ready();
      expect(answer.status).toBe(503);
      expect(answer.text).not.toContain(wrong);
      expect(JSON.stringify(t.config)).toContain(wrong); // the check above could not pass by the value being absent
    } finally {
      await t.close();
    }
  });
});
