import type { Cluster } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { useHttpApp } from '../helpers/api.js';
import { newItem } from '../helpers/app.js';
import { untilTime, waitFor } from '../helpers/wait.js';

// In the `cluster` project (a private Redis Cluster): REDIS_READ_FROM=replica.
describe('REDIS_READ_FROM=replica: availability from replicas', () => {
  const { t, api } = useHttpApp({ REDIS_READ_FROM: 'replica' });

  /** Script calls the replicas have run so far. */
  async function replicaScriptCalls(): Promise<number> {
    const replicas = (t.app.runtime.redis as unknown as Cluster).nodes('slave');
    let calls = 0;
    for (const replica of replicas) {
      const stats = await replica.info('commandstats');
      for (const match of stats.matchAll(/cmdstat_(?:evalsha|eval):calls=(\d+)/g)) calls += Number(match[1]);
    }
    return calls;
  }

  it('answers from a replica, catching up with the master within the replication delay', async () => {
    const item = newItem('replica');
    await api.stock(item, 10);
    const before = await replicaScriptCalls();
    expect((await api.reserve({ lines: [{ itemId: item, quantity: 3 }] })).status).toBe(201);
    await waitFor('the replica to show the hold', async () => ((await api.at(item)).reserved === 3 ? true : undefined));
    expect(await api.at(item)).toEqual({ onHand: 10, reserved: 3, available: 7 });
    expect(await replicaScriptCalls()).toBeGreaterThan(before);
  });

  it('a hold whose TTL passed is released in the answer, although a replica writes nothing', async () => {
    const item = newItem('replica-ttl');
    await api.stock(item, 5);
    const held = await api.reserve({ lines: [{ itemId: item, quantity: 2 }], ttlSeconds: 1 });
    expect(held.status).toBe(201);
    await waitFor('the replica to show the hold', async () => ((await api.at(item)).reserved === 2 ? true : undefined));
    await untilTime(Date.parse((held.body as { expiresAt: string }).expiresAt) + 50);
    expect(await api.at(item)).toEqual({ onHand: 5, reserved: 0, available: 5 });
  });
});
