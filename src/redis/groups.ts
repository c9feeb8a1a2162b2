import { createHash } from 'node:crypto';
import type { ChainableCommander, Redis } from 'ioredis';
import { isCluster, type RedisClient } from './client.js';
import type { Keys } from './keys.js';
import { scriptSource, type ScriptName, type ScriptReply } from './scripts.js';

/**
 * One command per slot group (keys.ts), sent as one pipeline per master: a cluster's 16,384 slots cost a round trip
 * per master instead of 16,384 routed calls. `command(p, group)` adds the group's command to its master's pipeline.
 * Resolves to the replies in `keys.groups` order; the first failed command rejects (a slot that moved meanwhile
 * answers MOVED: the caller tries again).
 */
export async function onEveryGroup(
  redis: RedisClient,
  keys: Keys,
  command: (p: ChainableCommander, group: number, server: Redis) => void,
): Promise<unknown[]> {
  const byServer = new Map<Redis, number[]>();
  if (!isCluster(redis)) {
    byServer.set(redis, [...keys.groups]);
  } else {
    const masters = new Map(redis.nodes('master').map((node) => [`${node.options.host}:${node.options.port}`, node]));
    for (const group of keys.groups) {
      const server = masters.get(redis.slots[group]?.[0] ?? '');
      if (!server) throw new Error(`no master is known for slot ${group}`);
      const groups = byServer.get(server) ?? [];
      if (groups.length === 0) byServer.set(server, groups);
      groups.push(group);
    }
  }
  const replies = new Map<number, unknown>();
  await Promise.all(
    [...byServer].map(async ([server, groups]) => {
      const p = server.pipeline();
      for (const group of groups) command(p, group, server);
      const results = (await p.exec()) ?? [];
      results.forEach(([err, value], i) => {
        if (err) throw err;
        replies.set(groups[i]!, value);
      });
    }),
  );
  return keys.groups.map((group) => replies.get(group));
}

const shas = new Map<ScriptName, { source: string; sha: string }>();

/** A script called once per group by onEveryGroup: loaded on each master first, then called by its SHA. */
export async function scriptOnEveryGroup(
  redis: RedisClient,
  keys: Keys,
  name: ScriptName,
  call: (group: number, server: Redis) => { keys: string[]; args: (string | number)[] },
): Promise<ScriptReply[]> {
  let script = shas.get(name);
  if (!script) {
    const source = scriptSource(name);
    shas.set(name, (script = { source, sha: createHash('sha1').update(source).digest('hex') }));
  }
  const { source, sha } = script;
  const servers = isCluster(redis) ? redis.nodes('master') : [redis];
  await Promise.all(servers.map((server) => server.script('LOAD', source)));
  return (await onEveryGroup(redis, keys, (p, group, server) => {
    const { keys: scriptKeys, args } = call(group, server);
    p.evalsha(sha, scriptKeys.length, ...scriptKeys, ...args);
  })) as ScriptReply[];
}
