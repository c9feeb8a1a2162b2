import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, outcome, startHttpApp } from '../helpers/api.js';
import { newItem, newKey, startTestApp } from '../helpers/app.js';
import { migrate } from '../../src/store/database.js';
import { ApiProcess } from '../drills/api-process.js';
import { freePort } from '../helpers/ports.js';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres.js';
import { startRedisCluster, type RedisClusterServer } from '../helpers/redis-cluster.js';

const run = promisify(execFile);

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

/**
 * A Redis Cluster over TLS (`rediss://` in REDIS_CLUSTER_NODES), signed by a private certificate authority that the
 * service's process trusts through NODE_EXTRA_CA_CERTS, as an operator would set it: a real process, since Node
 * reads that variable only as it starts.
 */
describe('Redis Cluster over TLS', () => {
  let dir: string;
  let cluster: RedisClusterServer;
  let database: TestDatabase;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'irs-tls-'));
    const openssl = (...args: string[]) => run('openssl', args, { cwd: dir });
    await openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=irs-test-ca');
    await openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'node.key', '-out', 'node.csr', '-subj', '/CN=127.0.0.1');
    writeFileSync(path.join(dir, 'san.cnf'), 'subjectAltName=IP:127.0.0.1\n');
    await openssl('x509', '-req', '-in', 'node.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'node.pem', '-days', '1', '-extfile', 'san.cnf');
    const file = (name: string) => path.join(dir, name);
    cluster = await startRedisCluster(3, { tls: { certFile: file('node.pem'), keyFile: file('node.key'), caFile: file('ca.pem') } });
    database = await createTestDatabase();
    await migrate(database.url, pino({ level: 'silent' }));
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
    await database?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves on TLS connections to every master, the ones it found by itself included', async () => {
    const server = new ApiProcess(
      'api-tls',
      await freePort(),
      {
        DATABASE_URL: database.url,
        // One seed: the client finds the other nodes, and must reach them over TLS too.
        REDIS_CLUSTER_NODES: `rediss://${cluster.tlsSeeds.split(',')[0]}`,
        REDIS_KEY_PREFIX: `tls-${randomBytes(4).toString('hex')}:`,
        NODE_EXTRA_CA_CERTS: path.join(dir, 'ca.pem'),
        LOG_LEVEL: 'warn',
      },
      path.join(dir, 'api.log'),
    );
    try {
      await server.start();
      const api = Api.at(server.url);
      const item = newItem('tls');
      await api.stock(item, 5);
      expect(outcome(await api.reserve({ lines: [{ itemId: item, quantity: 2 }] }, newKey()))).toBe('201');
      // Every master has connections on its TLS port (a connection's laddr is the node's end of it).
      const onTls = await Promise.all(
        cluster.servers.map(async (s, n) => {
          const node = new Redis({ host: '127.0.0.1', port: s.port });
          try {
            const [role] = (await node.call('ROLE')) as [string];
            const clients = (await node.call('CLIENT', 'LIST')) as string;
            return role === 'master' && clients.includes(`laddr=127.0.0.1:${cluster.tlsPorts[n]}`);
          } finally {
            node.disconnect();
          }
        }),
      );
      expect(onTls.filter(Boolean)).toHaveLength(3);
    } finally {
      await server.stop();
    }
  });
});
