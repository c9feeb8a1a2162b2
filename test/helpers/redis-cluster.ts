import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import calculateSlot from 'cluster-key-slot';
import { Redis } from 'ioredis';
import { freePort } from './ports.js';
import { startRedis, type RedisServer } from './redis-server.js';
import { waitFor } from './wait.js';

const run = promisify(execFile);

/**
 * How long a master may be unreachable before its replica is promoted. Small, so a kill -9 fails over within a
 * second or two in a test (production keeps Redis' default of 15 s).
 */
const NODE_TIMEOUT_MS = 1_000;

export interface RedisClusterOptions {
  /** cluster-node-timeout (default NODE_TIMEOUT_MS); the bench, which kills nothing, keeps Redis' 15 s. */
  nodeTimeoutMs?: number;
  /**
   * TLS as well: each node also serves TLS on a port of its own (`tlsSeeds`) with this certificate, and the nodes
   * talk to each other over TLS, so a TLS client is shown TLS ports. The plain ports stay, for the helpers.
   */
  tls?: { certFile: string; keyFile: string; caFile: string };
}

export interface RedisClusterServer {
  /** Every redis-server of the cluster, masters first as created (their roles change on failover). */
  readonly servers: readonly RedisServer[];
  /** `host:port,…` of every node: what REDIS_CLUSTER_NODES takes. */
  readonly seeds: string;
  /** The same, of the nodes' TLS ports (with the `tls` option; else empty). */
  readonly tlsSeeds: string;
  /** Each node's TLS port, in the order of `servers` (with the `tls` option). */
  readonly tlsPorts: readonly number[];
  /** The server that is master of `key`'s slot now. */
  masterOf(key: string): Promise<RedisServer>;
  /** kill -9 the master of `key`'s slot and wait until its replica took over and the cluster is whole again. */
  killMasterOf(key: string): Promise<RedisServer>;
  /** Waits for cluster_state:ok, every slot served, on every running node. */
  waitHealthy(): Promise<void>;
  stop(): Promise<void>;
}

const parseInfo = (text: string): Record<string, string> =>
  Object.fromEntries(text.split('\r\n').filter((line) => line.includes(':')).map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 1)]));

/** `CLUSTER INFO` and `INFO replication` of one node, or null when it does not answer. */
async function nodeInfo(port: number): Promise<Record<string, string> | null> {
  const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false });
  client.on('error', () => {});
  try {
    await client.connect();
    return { ...parseInfo((await client.cluster('INFO')) as string), ...parseInfo(await client.info('replication')) };
  } catch {
    return null;
  } finally {
    client.disconnect();
  }
}

/** `CLUSTER SLOTS` reduced to: for each slot range, the port of its master and how many replicas serve it. */
async function masterPorts(port: number): Promise<{ from: number; to: number; port: number; replicas: number }[]> {
  const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0 });
  client.on('error', () => {});
  try {
    await client.connect();
    const slots = await client.cluster('SLOTS');
    return slots.map(([from, to, master, ...replicas]) => ({ from, to, port: master![1], replicas: replicas.length }));
  } finally {
    client.disconnect();
  }
}

/**
 * A private Redis Cluster of `masters` masters with one replica each (`redis-server --cluster-enabled yes` × 2n, then
 * `redis-cli --cluster create … --cluster-replicas 1`), killed at the process's exit like every private server
 * (the tests' and the bench's: bench/harness.ts).
 */
export async function startRedisCluster(masters = 3, { nodeTimeoutMs = NODE_TIMEOUT_MS, tls }: RedisClusterOptions = {}): Promise<RedisClusterServer> {
  const servers: RedisServer[] = [];
  const tlsPorts: number[] = [];
  for (let i = 0; i < masters * 2; i++) {
    // The cluster bus defaults to port + 10000, which may be taken or past 65535: ask for one of its own.
    const busPort = await freePort();
    const tlsPort = tls ? await freePort() : 0;
    if (tls) tlsPorts.push(tlsPort);
    servers.push(
      await startRedis({
        extraArgs: [
          '--cluster-enabled', 'yes',
          '--cluster-config-file', 'nodes.conf',
          '--cluster-node-timeout', String(nodeTimeoutMs),
          '--cluster-port', String(busPort),
          // A replica syncs at once (Redis waits 5 s for more replicas by default); until it has, it cannot take over.
          '--repl-diskless-sync-delay', '0',
          // CLUSTER SLOTS lists a replica only once its replication offset moved, which the master's pings do.
          '--repl-ping-replica-period', '1',
          ...(tls
            ? ['--tls-port', String(tlsPort), '--tls-cert-file', tls.certFile, '--tls-key-file', tls.keyFile, '--tls-ca-cert-file', tls.caFile,
               '--tls-auth-clients', 'no', '--tls-cluster', 'yes', '--tls-replication', 'yes']
            : []),
        ],
      }),
    );
  }
  const addresses = servers.map((s) => `127.0.0.1:${s.port}`);
  await run('redis-cli', ['--cluster', 'create', ...addresses, '--cluster-replicas', '1', '--cluster-yes']);
  const dead = new Set<RedisServer>();

  async function waitHealthy(): Promise<void> {
    await waitFor(
      'every Redis Cluster node to report cluster_state:ok with all 16384 slots served, and every replica in sync',
      async () => {
        for (const s of servers) {
          if (dead.has(s)) continue;
          const info = await nodeInfo(s.port);
          if (info?.cluster_state !== 'ok' || info.cluster_slots_ok !== '16384') return undefined;
          if (info.role === 'slave' && info.master_link_status !== 'up') return undefined;
        }
        // Clients find replicas (REDIS_READ_FROM=replica) in CLUSTER SLOTS: every range must list one.
        const alive = servers.find((s) => !dead.has(s))!;
        const ranges = await masterPorts(alive.port);
        if (dead.size === 0 && ranges.some((r) => r.replicas === 0)) return undefined;
        return true;
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    );
  }

  async function masterOf(key: string): Promise<RedisServer> {
    const slot = calculateSlot(key);
    const alive = servers.find((s) => !dead.has(s))!;
    const range = (await masterPorts(alive.port)).find((r) => r.from <= slot && slot <= r.to);
    const server = servers.find((s) => s.port === range?.port);
    if (!server) throw new Error(`no master serves slot ${slot}`);
    return server;
  }

  async function killMasterOf(key: string): Promise<RedisServer> {
    const master = await masterOf(key);
    await master.kill9();
    dead.add(master);
    await waitFor(
      `a replica to take over slot ${calculateSlot(key)} from the killed master on port ${master.port}`,
      async () => {
        try {
          return (await masterOf(key)) !== master ? true : undefined;
        } catch {
          return undefined;
        }
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    );
    await waitHealthy();
    return master;
  }

  await waitHealthy();
  return {
    servers,
    seeds: addresses.join(','),
    tlsSeeds: tlsPorts.map((port) => `127.0.0.1:${port}`).join(','),
    tlsPorts,
    masterOf,
    killMasterOf,
    waitHealthy,
    stop: async () => {
      await Promise.all(servers.map((s) => s.stop()));
    },
  };
}
