import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis, type Cluster } from 'ioredis';
import { onEveryGroup } from '../../src/redis/groups.js';
import { scriptSource } from '../../src/redis/scripts.js';
import { serverRunIds } from '../../src/redis/server-check.js';
import { slotTagList } from '../../src/redis/slots.js';
import { Api, outcome, reservationOf, startHttpApp, waitReady, type Answer } from '../helpers/api.js';
import { newItem, type TestApp } from '../helpers/app.js';
import { waitFor } from '../helpers/wait.js';
import { startRedisCluster, type RedisClusterServer } from '../helpers/redis-cluster.js';
import { expectNoSecondSale } from '../helpers/server-change.js';

/**
 * I1 across a cluster master that restarts from its own files before a replica takes over: it keeps its node id, so
 * the markers' node id (checked by every script) cannot tell it from the process that acknowledged the last holds,
 * which its files may lack. Each connection to a master is checked first (src/redis/server-check.ts).
 *
 * Its own cluster, with Redis' default node timeout: a master down for a second is restarted, not failed over.
 */
describe('a Redis Cluster master restarted from its own files', () => {
  let cluster: RedisClusterServer;
  let t: TestApp;
  let api: Api;
  const client = () => t.app.runtime.redis as unknown as Cluster;
  const generation = () => t.app.runtime.recovery.generation();
  /** Every slot's marker (a command to every master: each new connection's check goes first). */
  const markers = async (): Promise<(string | null)[]> =>
    (await onEveryGroup(client(), t.app.runtime.keys, (p, group) => p.get(t.app.runtime.keys.markerOf(group)))) as (string | null)[];

  /** Cuts the app's connections to every master; the next commands make new ones (each checked first). */
  const reconnect = async (): Promise<void> => {
    const old = client().nodes('master');
    for (const node of old) node.disconnect();
    await waitFor('the connections to end', async () => old.every((node) => node.status === 'end') || undefined, { timeoutMs: 10_000 });
  };

  beforeAll(async () => {
    cluster = await startRedisCluster(3, { nodeTimeoutMs: 15_000 });
    t = await startHttpApp({ REDIS_CLUSTER_NODES: cluster.seeds, REDIS_COMMAND_TIMEOUT_MS: 1000 });
    api = Api.inject(t.app);
  }, 60_000);
  afterAll(async () => {
    await t?.close();
    await cluster?.stop();
  });

  it('marks each slot with the process it was rebuilt on', async () => {
    for (const marker of await markers()) expect(marker).toMatch(/^\d+@[0-9a-f]{40}@[0-9a-f]{40}$/);
  });

  it('is rebuilt from PostgreSQL before it decides: the unit held after its snapshot is not sold again', async () => {
    const sku = newItem('cluster-snapshot');
    expect(outcome(await api.putStock(sku, { quantity: 1 }))).toBe('200');
    const master = await cluster.masterOf(t.app.runtime.keys.item(sku).stock);
    const direct = new Redis(master.url);
    await direct.save(); // the snapshot has the unit free
    await direct.quit();
    const held = await api.reserve({ lines: [{ itemId: sku, quantity: 1 }] });
    expect(outcome(held)).toBe('201');
    const before = await generation();

    // Reserves keep coming while the master is down and as it comes back, so the first script on the new
    // connection is one of them.
    let stop = false;
    const answers: Answer[] = [];
    const hammer = (async () => {
      while (!stop) {
        answers.push(await api.reserve({ lines: [{ itemId: sku, quantity: 1 }] }));
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    await master.kill9();
    await master.restart(); // the same node id (nodes.conf), the snapshot's data: its marker, and the unit free
    await expectNoSecondSale(t, api, sku);
    stop = true;
    await hammer;
    expect(answers.filter((a) => a.status === 201).map(outcome)).toEqual([]);
    expect(Number(await generation())).toBeGreaterThan(Number(before));
    expect(outcome(await api.confirm(reservationOf(held).id))).toBe('200');
  }, 60_000);

  it('a new connection to the same process is not rebuilt', async () => {
    const before = await generation();
    await reconnect();
    await waitReady(t.app, 20_000);
    const sku = newItem('cluster-reconnect');
    expect(outcome(await api.putStock(sku, { quantity: 1 }))).toBe('200');
    expect(await generation()).toBe(before);
  });

  it('the check runs on a master out of memory (the scripts behind it are no reason to skip it)', async () => {
    const sku = newItem('cluster-oom');
    expect(outcome(await api.putStock(sku, { quantity: 3 }))).toBe('200');
    const { keys } = t.app.runtime;
    const master = new Redis((await cluster.masterOf(keys.item(sku).stock)).url);
    try {
      // Out of memory, a master refuses a script that may write and declares flags, unless it allows that.
      await master.config('SET', 'maxmemory', '1');
      const reply = await master.eval(scriptSource('cluster_server_check'), 0, ...keys.markerAroundTag, slotTagList());
      expect(reply).toEqual([0, 'same']);
    } finally {
      await master.config('SET', 'maxmemory', '0');
      await master.quit();
    }
  });

  it('markers written before they named a process are adopted, not rebuilt', async () => {
    const before = await generation();
    const { keys } = t.app.runtime;
    // Strip the run_id from every slot's marker, as an earlier version wrote them, then connect anew.
    const stripped = (await markers()).map((value) => value!.replace(/@[0-9a-f]{40}$/, ''));
    await onEveryGroup(client(), keys, (p, group) => p.set(keys.markerOf(group), stripped[group]!));
    for (const marker of await markers()) expect(marker).toMatch(/^\d+@[0-9a-f]{40}$/);
    await reconnect();
    const adopted = await waitFor('new connections to every master', () => markers().catch(() => undefined), { timeoutMs: 10_000 });
    for (const marker of adopted) expect(marker).toMatch(/^\d+@[0-9a-f]{40}@[0-9a-f]{40}$/);
    await waitReady(t.app, 20_000);
    expect(await generation()).toBe(before);
  }, 60_000);

  it('a rebuild whose master changed process before it finished sets no marker', async () => {
    const { keys, decisions } = t.app.runtime;
    const marker = await client().get(keys.markerOf(0));
    const servers = await serverRunIds(client());
    await onEveryGroup(client(), keys, (p, group) => p.set(keys.rebuildingOf(group), 'token-1'));
    const others = new Map([...servers].map(([server]) => [server, 'f'.repeat(40)]));
    expect(await decisions.finishRebuild('token-1', '999', others)).toBe(false);
    expect(await client().get(keys.markerOf(0))).toBe(marker);
    expect(await decisions.finishRebuild('token-1', marker!.split('@')[0]!, servers)).toBe(true);
    expect(await client().get(keys.markerOf(0))).toBe(marker);
  }, 60_000);
});
