import { readFileSync } from 'node:fs';
import type { RedisClient } from './client.js';
import { luaLayout } from './layout.js';
import { HoldState, ScriptStatus } from './status.js';

/** The scripts in src/redis/lua (one file each): the decisions, and the relays' lease. */
export const scriptNames = [
  'reserve',
  'settle',
  'undo_reserve',
  'undo_settle',
  'extend',
  'undo_extend',
  'expire',
  'stock',
  'availability',
  'availability_read',
  'finish_rebuild',
  'generation',
  'server_check',
  'cluster_server_check',
  'drop_hold',
  'forget_claim',
  'correct',
  'survey',
  'lease',
] as const;
export type ScriptName = (typeof scriptNames)[number];

/** Flags a script declares in its first line (`#!lua flags=…`), where Redis' defaults do not fit it. */
const scriptFlags: Partial<Record<ScriptName, string>> = {
  // Writes nothing: a replica may run it.
  availability_read: 'no-writes',
  // Reads the markers of every slot of its node in one call, and runs even out of memory (server-check.ts).
  cluster_server_check: 'allow-cross-slot-keys,allow-oom',
};

const luaDir = new URL('./lua/', import.meta.url);

const luaTable = (name: string, table: Record<string, string | number>): string =>
  `local ${name} = { ${Object.entries(table)
    .map(([k, v]) => `${k} = ${typeof v === 'number' ? v : JSON.stringify(v)}`)
    .join(', ')} }`;

/**
 * A script's source as Redis runs it: its flags (`scriptFlags`) in its first line, the status codes (`S`), hold
 * states (`H`) and value layout (`L`, layout.ts) injected from TypeScript (one source for both languages), and each
 * `--@include name` line replaced by includes/name.lua.
 */
export function scriptSource(name: ScriptName): string {
  const body = readFileSync(new URL(`${name}.lua`, luaDir), 'utf8').replace(
    /^--@include (\w+)$/gm,
    (_, include: string) => readFileSync(new URL(`includes/${include}.lua`, luaDir), 'utf8'),
  );
  const flags = scriptFlags[name];
  const shebang = flags ? [`#!lua flags=${flags}`] : [];
  return [...shebang, luaTable('S', ScriptStatus), luaTable('H', HoldState), luaTable('L', luaLayout), body].join('\n');
}

export type ScriptReply = [number, ...unknown[]];

/**
 * The most keys and arguments a script call may have; the largest the service makes (a reservation of 100 lines
 * of 100 items, allocated over 32 locations) has under 800. ioredis' auto-pipelining queues a command's reply
 * callback, then spreads its arguments onto the stack: from about 50,000 arguments that overflows, the callback
 * stays queued without its command, and the pipeline's later replies go to the wrong callers until one of them
 * throws out of the process (ioredis #1931). So a list that grows with the data (a hot item's holds) goes to a
 * script as one JSON argument, and a call past this bound is refused here, before anything is queued.
 */
export const MAX_SCRIPT_ARGUMENTS = 10_000;

/** A script call past MAX_SCRIPT_ARGUMENTS, refused before anything was sent: a bug of the caller, not a Redis fault. */
export class ScriptCallRefused extends Error {
  constructor(name: ScriptName, count: number) {
    super(`script ${name}: ${count} keys and arguments, more than ${MAX_SCRIPT_ARGUMENTS}`);
    this.name = 'ScriptCallRefused';
  }
}

type ScriptCommand = (numberOfKeys: number, ...keysAndArgs: (string | number)[]) => Promise<ScriptReply>;

/**
 * Registers every script on the client: ioredis sends EVALSHA and falls back to EVAL on NOSCRIPT, so a Redis
 * that restarted empty, or a cluster master that never saw a script (a replica promoted, a node added), gets the
 * scripts by itself. On a cluster ioredis sends each call to the master of its keys' slot.
 */
export function defineScripts(redis: RedisClient): (name: ScriptName, keys: string[], args: (string | number)[]) => Promise<ScriptReply> {
  // A read-only script goes to a replica on a client that reads from replicas (REDIS_READ_FROM=replica).
  for (const name of scriptNames) redis.defineCommand(name, { lua: scriptSource(name), readOnly: scriptFlags[name] === 'no-writes' });
  const commands = redis as unknown as Record<ScriptName, ScriptCommand>;
  return (name, keys, args) =>
    keys.length + args.length > MAX_SCRIPT_ARGUMENTS
      ? Promise.reject(new ScriptCallRefused(name, keys.length + args.length))
      : commands[name](keys.length, ...keys, ...args);
}
