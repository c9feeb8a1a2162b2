import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reconcile } from '../../src/jobs/reconcile.js';
import { findReservation } from '../../src/store/reservations.js';
import { Api, range, reservationOf, startHttpApp, waitReady, type Answer } from '../helpers/api.js';
import { newItem, type TestApp } from '../helpers/app.js';
import { checkInvariants } from '../helpers/invariants.js';
import { mulberry32 } from '../helpers/random.js';
import { startRedisCluster, type RedisClusterServer } from '../helpers/redis-cluster.js';

// Its own cluster (the `cluster` project's shared one must not lose a master under other files' feet): three API
// nodes on one database and one key prefix, under concurrent carts, confirms and releases, while the master of one
// item's slot is killed with kill -9 and its replica takes over.
describe('Redis Cluster: three API nodes, a master killed -9 mid-load', () => {
  let cluster: RedisClusterServer;
  const nodes: TestApp[] = [];
  let apis: Api[];

  beforeAll(async () => {
    cluster = await startRedisCluster();
    const first = await startHttpApp({ REDIS_CLUSTER_NODES: cluster.seeds });
    nodes.push(first);
    for (let i = 0; i < 2; i++) {
      nodes.push(
        await startHttpApp({ REDIS_CLUSTER_NODES: cluster.seeds, DATABASE_URL: first.databaseUrl, REDIS_KEY_PREFIX: first.config.REDIS_KEY_PREFIX }),
      );
    }
    apis = nodes.map((n) => Api.inject(n.app));
  });
  afterAll(async () => {
    // The first node last: it drops the database.
    for (const node of [...nodes].reverse()) await node.close();
    await cluster?.stop();
  });

  it('the replica takes over, the nodes rebuild, nothing acknowledged is lost, I1–I6 hold', async () => {
    const rng = mulberry32(20_261_130);
    const items = range(9).map(() => newItem('failover'));
    for (const item of items) await apis[0]!.stock(item, 40);
    const { keys, recovery } = nodes[0]!.app.runtime;
    const before = await recovery.generation();

    const created = new Set<string>();
    const confirmed = new Set<string>();
    const released = new Set<string>();
    const statuses: Record<string, number> = {};
    let createdAfterFailover = 0;
    let failedOver = false;
    let stop = false;
    const count = (a: Answer) => (statuses[a.status] = (statuses[a.status] ?? 0) + 1);
    const api = () => apis[rng.int(0, apis.length - 1)]!;

    const worker = async () => {
      while (!stop) {
        const lines = rng.sample(items, rng.int(1, 3)).map((itemId) => ({ itemId, quantity: rng.int(1, 2) }));
        const answer = await api().reserve({ lines, ttlSeconds: 30 });
        count(answer);
        if (answer.status !== 201) continue;
        const id = reservationOf(answer).id;
        created.add(id);
        if (failedOver) createdAfterFailover++;
        const next = rng.int(0, 2);
        if (next === 0) {
          const a = await api().confirm(id);
          count(a);
          if (a.status === 200) confirmed.add(id);
        } else if (next === 1) {
          const a = await api().release(id);
          count(a);
          if (a.status === 200) released.add(id);
        }
      }
    };
    const load = Promise.all(range(12).map(worker));

    await waitForCount(() => created.size, 30);
    await cluster.killMasterOf(keys.item(items[0]!).stock);
    failedOver = true;
    for (const node of nodes) await waitReady(node.app, 30_000);
    await waitForCount(() => createdAfterFailover, 10);
    stop = true;
    await load;

    // The promoted replica was taken as lost state: a rebuild made a new generation.
    const after = await recovery.generation();
    expect(after, JSON.stringify(statuses)).not.toBeNull();
    expect(Number(after)).toBeGreaterThan(Number(before));
    // Every acknowledged change is in PostgreSQL.
    for (const id of created) {
      const r = await findReservation(nodes[0]!.app.runtime.db, id);
      expect(r, id).not.toBeNull();
      if (confirmed.has(id)) expect(r!.status, id).toBe('confirmed');
      if (released.has(id)) expect(r!.status, id).toBe('released');
    }
    // Only answers the contract allows: created, refused, settled, or 503 (nothing applied) while the slot failed over.
    expect(Object.keys(statuses).sort()).toEqual(expect.arrayContaining(['200', '201']));
    for (const status of Object.keys(statuses)) expect(['200', '201', '409', '503']).toContain(status);
    // A request that failed while its slot failed over may not have been able to give its holds back (its undo met
    // the dead master, or the client mid-refresh): holds nobody acknowledged, which expire at their TTL or are dropped
    // by reconciliation (README, "Reconciliation"), as the nodes' own reconcilers do. Judged before anything is
    // repaired: a dry run finds nothing but such holds (no stranded intent; drift only in units reserved, more in
    // Redis, on items that have them). Then only those are dropped, and no drift is healed.
    const deps = nodes[0]!.app.runtime.reconcileDeps;
    const found = await reconcile(deps, { heal: false, dropOrphans: false, rebuildOnDrift: false, orphanAfterMs: 0, settleMs: 500 });
    expect(found.strandedIntents).toEqual([]);
    const orphanItems = new Set(found.orphanHolds.map((o) => o.itemId));
    for (const d of found.drift) {
      expect(orphanItems.has(d.itemId), JSON.stringify(d)).toBe(true);
      expect({ ...d.redis, reserved: 0, holds: 0 }, JSON.stringify(d)).toEqual({ ...d.postgres, reserved: 0, holds: 0 });
      expect(d.redis.reserved, JSON.stringify(d)).toBeGreaterThan(d.postgres.reserved);
    }
    await reconcile(deps, { heal: false, dropOrphans: true, rebuildOnDrift: false, orphanAfterMs: 0, settleMs: 500 });
    await checkInvariants(nodes[0]!.app, items);
  }, 120_000);
});

async function waitForCount(count: () => number, atLeast: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (count() < atLeast) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${atLeast} (have ${count()})`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
