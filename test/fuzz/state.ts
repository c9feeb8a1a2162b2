import type { Redis } from 'ioredis';
import type pg from 'pg';

/**
 * Everything a request could change: every Redis key under the app's prefix (by type: strings, hashes, sorted
 * sets, sets, lists; TTLs left out, they tick) and every row of the PostgreSQL tables the service writes. Small
 * enough here (a handful of seeded items and reservations) to keep whole and diff row by row.
 */
export interface State {
  redis: Map<string, string>;
  postgres: Map<string, string[]>;
}

export const TABLES = ['stock', 'reservations', 'reservation_lines', 'idempotency_keys', 'stock_movements', 'write_batches', 'state_generation'];

async function dumpKey(redis: Redis, key: string): Promise<string> {
  const type = await redis.type(key);
  switch (type) {
    case 'string':
      return `string ${JSON.stringify(await redis.get(key))}`;
    case 'hash': {
      const h = await redis.hgetall(key);
      return `hash ${JSON.stringify(Object.keys(h).sort().map((k) => [k, h[k]]))}`;
    }
    case 'zset':
      return `zset ${JSON.stringify(await redis.zrange(key, 0, -1, 'WITHSCORES'))}`;
    case 'set':
      return `set ${JSON.stringify((await redis.smembers(key)).sort())}`;
    case 'list':
      return `list ${JSON.stringify(await redis.lrange(key, 0, -1))}`;
    case 'none':
      return 'none';
    default:
      return `${type} (not dumped)`;
  }
}

export async function snapshot(redis: Redis, prefix: string, db: pg.Client): Promise<State> {
  const keys: string[] = [];
  const pattern = `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
  for await (const batch of redis.scanStream({ match: pattern, count: 1000 }) as AsyncIterable<string[]>) keys.push(...batch);
  const redisState = new Map<string, string>();
  for (const key of keys.sort()) {
    const value = await dumpKey(redis, key);
    if (value !== 'none') redisState.set(key, value);
  }
  const postgres = new Map<string, string[]>();
  await db.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    for (const table of TABLES) {
      const { rows } = await db.query<{ row: string }>(`SELECT to_jsonb(t)::text AS row FROM ${table} t ORDER BY 1`);
      postgres.set(table, rows.map((r) => r.row));
    }
  } finally {
    await db.query('COMMIT');
  }
  return { redis: redisState, postgres };
}

const clip = (s: string, n = 400) => (s.length > n ? `${s.slice(0, n)}…` : s);

/** What changed from `before` to `after`, one line per key or row; empty when nothing did. */
export function diff(before: State, after: State): string[] {
  const out: string[] = [];
  for (const key of new Set([...before.redis.keys(), ...after.redis.keys()])) {
    const a = before.redis.get(key);
    const b = after.redis.get(key);
    if (a === b) continue;
    if (a === undefined) out.push(`redis + ${key} = ${clip(b!)}`);
    else if (b === undefined) out.push(`redis - ${key} (was ${clip(a)})`);
    else out.push(`redis ~ ${key}: ${clip(a)} → ${clip(b)}`);
  }
  for (const table of TABLES) {
    const a = new Set(before.postgres.get(table) ?? []);
    const b = new Set(after.postgres.get(table) ?? []);
    for (const row of b) if (!a.has(row)) out.push(`postgres + ${table} ${clip(row)}`);
    for (const row of a) if (!b.has(row)) out.push(`postgres - ${table} ${clip(row)}`);
  }
  return out;
}
