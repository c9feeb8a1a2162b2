import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { LEASE_RENEW_MS, LEASE_TTL_MS, NodeLease, newNodeId } from '../../src/jobs/node-lease.js';
import { Keys } from '../../src/redis/keys.js';
import { untilTime, waitFor } from '../helpers/wait.js';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const keys = new Keys(`t${randomBytes(4).toString('hex')}:`);
const redis = new Redis(url);
const leases: NodeLease[] = [];
const clients: Redis[] = [redis];

/** A lease on its own connection (so its process can "die" alone), with short timings unless given. */
async function lease(ttlMs = 300, renewMs = 100): Promise<{ lease: NodeLease; client: Redis }> {
  const client = new Redis(url, { maxRetriesPerRequest: 0, enableOfflineQueue: false, lazyConnect: true });
  client.on('error', () => {});
  await client.connect();
  clients.push(client);
  const l = new NodeLease(client, keys, newNodeId(), ttlMs, renewMs);
  leases.push(l);
  return { lease: l, client };
}

afterAll(async () => {
  await Promise.all(leases.map((l) => l.stop()));
  const stale = await redis.keys(`${keys.prefix}*`);
  if (stale.length > 0) await redis.del(...stale);
  for (const c of clients) c.disconnect();
});

describe('node lease', () => {
  it('gives each process its own 12-hex-digit node id, and renews three times within one TTL by default', () => {
    const ids = new Set(Array.from({ length: 100 }, newNodeId));
    expect(ids.size).toBe(100);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{12}$/);
    expect(LEASE_TTL_MS / LEASE_RENEW_MS).toBe(3);
  });

  it('is held from start, under <prefix>node:<id>, with the TTL Redis counts down', async () => {
    const { lease: l } = await lease();
    expect(l.key).toBe(`${keys.prefix}node:${l.nodeId}`);
    expect(await l.isAlive(l.nodeId)).toBe(false);
    l.start();
    await waitFor('the lease', async () => ((await redis.exists(l.key)) === 1 ? true : undefined));
    const ttl = await redis.pttl(l.key);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(300);
    expect(l.running).toBe(true);
    const { lease: other } = await lease();
    expect(await other.isAlive(l.nodeId)).toBe(true);
    expect(await other.isAlive(newNodeId())).toBe(false);
  });

  it('stays alive for many TTLs while renewed', async () => {
    const { lease: l } = await lease(1_000, 100);
    l.start();
    await waitFor('the lease', async () => ((await l.isAlive(l.nodeId)) ? true : undefined));
    const until = Date.now() + 3 * 1_000;
    while (Date.now() < until) {
      expect(await l.isAlive(l.nodeId)).toBe(true);
      await untilTime(Date.now() + 50);
    }
  });

  it('lapses within its TTL once its process stops renewing (its connection gone, as after kill -9)', async () => {
    const { lease: l, client } = await lease();
    l.start();
    await waitFor('the lease', async () => ((await redis.exists(l.key)) === 1 ? true : undefined));
    client.disconnect(); // renewals now fail; the process does not know it is "dead"
    const gone = Date.now();
    await waitFor('the lease to lapse', async () => ((await redis.exists(l.key)) === 0 ? true : undefined), { timeoutMs: 2_000 });
    expect(Date.now() - gone).toBeLessThanOrEqual(300 + 300);
    expect(l.running).toBe(true); // it keeps trying
  });

  it('is deleted at once by stop (a graceful close), and taken again by start', async () => {
    const { lease: l } = await lease(60_000, 20_000);
    l.start();
    await waitFor('the lease', async () => ((await redis.exists(l.key)) === 1 ? true : undefined));
    await l.stop();
    expect(l.running).toBe(false);
    expect(await redis.exists(l.key)).toBe(0);
    l.start();
    await waitFor('the lease again', async () => ((await redis.exists(l.key)) === 1 ? true : undefined));
  });
});
