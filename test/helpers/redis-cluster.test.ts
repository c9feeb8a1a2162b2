import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedisCluster, type RedisClusterServer } from './redis-cluster.js';

describe('startRedisCluster', () => {
  let cluster: RedisClusterServer;
  let client: Cluster;
  beforeAll(async () => {
    cluster = await startRedisCluster();
    client = new Cluster(cluster.seeds.split(',').map((a) => ({ host: '127.0.0.1', port: Number(a.split(':')[1]) })));
  });
  afterAll(async () => {
    client.disconnect();
    await cluster.stop();
  });

  it('serves every slot over three masters, and a master killed with kill -9 is replaced by its replica', async () => {
    const masters = new Set(await Promise.all(['{a}', '{b}', '{c}', '{d}', '{e}', '{f}'].map(async (k) => (await cluster.masterOf(k)).port)));
    expect(masters.size).toBeGreaterThan(1);
    await client.set('{a}x', 'written');
    const before = await client.eval("return redis.call('CLUSTER', 'MYID')", 1, '{a}x');
    const killed = await cluster.killMasterOf('{a}x');
    expect((await cluster.masterOf('{a}x')).port).not.toBe(killed.port);
    expect(await client.eval("return redis.call('CLUSTER', 'MYID')", 1, '{a}x')).not.toBe(before);
    // Served again (the value itself may be lost: replication is asynchronous, which is what the service guards).
    await client.get('{a}x');
  });
});
