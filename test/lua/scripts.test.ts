import { randomBytes, randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import type { Line } from '../../src/domain/reservation.js';
import { createMetrics } from '../../src/metrics.js';
import { Decisions } from '../../src/redis/decisions.js';
import { Keys } from '../../src/redis/keys.js';
import { holdField, luaLayout, parseHold, recordPrefix, recordSuffix } from '../../src/redis/layout.js';
import { defineScripts, MAX_SCRIPT_ARGUMENTS, ScriptCallRefused, scriptNames, scriptSource } from '../../src/redis/scripts.js';
import { HoldState, ScriptStatus } from '../../src/redis/status.js';
import { testRedisUrl } from '../helpers/servers.js';

const luaDir = new URL('../../src/redis/lua/', import.meta.url);
const luaFiles = [
  ...readdirSync(luaDir).filter((f) => f.endsWith('.lua')),
  ...readdirSync(new URL('includes/', luaDir)).map((f) => `includes/${f}`),
];

describe('Lua scripts', () => {
  const redis = new Redis(testRedisUrl(), { lazyConnect: true });
  afterAll(() => redis.quit());

  it('every script file is registered, and every registered script has a file', () => {
    const files = luaFiles.filter((f) => !f.startsWith('includes/')).map((f) => f.replace(/\.lua$/, ''));
    expect([...files].sort()).toEqual([...scriptNames].sort());
  });

  it.each(luaFiles)('%s uses only status codes, hold states and layout names defined in TypeScript', (file) => {
    const source = readFileSync(new URL(file, luaDir), 'utf8');
    for (const [, name] of source.matchAll(/\bS\.([A-Z_]+)/g)) expect(Object.keys(ScriptStatus), `S.${name}`).toContain(name);
    for (const [, name] of source.matchAll(/\bH\.([a-z]+)/g)) expect(Object.keys(HoldState), `H.${name}`).toContain(name);
    for (const [, name] of source.matchAll(/\bL\.(\w+)/g)) expect(Object.keys(luaLayout), `L.${name}`).toContain(name);
  });

  it.each(luaFiles)('%s spells no field name or separator of the layout itself (it builds them through L)', (file) => {
    // Comments may describe the format; code may not restate it.
    const code = readFileSync(new URL(file, luaDir), 'utf8')
      .replace(/--\[\[[\s\S]*?\]\]/g, '')
      .replace(/--.*$/gm, '');
    const literals = [...code.matchAll(/'([^']*)'|"([^"]*)"/g)].map((m) => m[1] ?? m[2]!);
    const layoutStrings = new Set(Object.values(luaLayout));
    expect(literals.filter((l) => layoutStrings.has(l as never))).toEqual([]);
  });

  it.each(luaFiles.filter((f) => !f.startsWith('includes/')))('%s opens with a header naming its KEYS, ARGV and returns', (file) => {
    const header = readFileSync(new URL(file, luaDir), 'utf8').split(']]')[0]!;
    expect(header).toMatch(/^--\[\[/);
    expect(header).toContain('KEYS[1]');
    expect(header).toContain('ARGV[1]');
    expect(header).toMatch(/Returns/);
  });

  it.each(scriptNames)('%s compiles in Redis', async (name) => {
    const sha = await redis.script('LOAD', scriptSource(name));
    expect(sha).toMatch(/^[0-9a-f]{40}$/);
  });
});

describe('a script call of too many arguments', () => {
  // On an auto-pipelining client, as the service's (src/plugins/redis.ts).
  const redis = new Redis(testRedisUrl(), { enableAutoPipelining: true, keyPrefix: `irs-test-args-${randomUUID()}:` });
  afterAll(() => redis.quit());

  it('is refused before anything is queued: the replies of the calls beside it stay with their callers', async () => {
    const run = defineScripts(redis);
    const key = 'k';
    const args = Array.from({ length: 60_000 }, (_, i) => i); // ioredis overflows its stack on this many
    const before = redis.set(key, 'v');
    const tooMany = run('generation', [key], args);
    const after = [redis.get(key), redis.get(key), redis.del(key)];
    await expect(tooMany).rejects.toThrow(`more than ${MAX_SCRIPT_ARGUMENTS}`);
    expect(await before).toBe('OK');
    expect(await Promise.all(after)).toEqual(['v', 'v', 1]);
  });

  it("surfaces from Decisions as the caller's bug, not as Redis unreachable (a 503 would send operators to Redis)", async () => {
    const decisions = new Decisions(redis, new Keys('t:'), createMetrics(), 60_000, () => {});
    const call = (decisions as unknown as { call(name: string, keys: string[], args: number[]): Promise<unknown> }).call.bind(decisions);
    const refused = await call('generation', ['k'], Array.from({ length: MAX_SCRIPT_ARGUMENTS }, (_, i) => i)).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(ScriptCallRefused);
  });
});

/**
 * Decisions on a key prefix of their own (removed after the enclosing describe), and items and reservations made
 * through them, in a Redis of generation 0.
 */
function ownDecisions(node: string) {
  const redis = new Redis(testRedisUrl(), { lazyConnect: true });
  const keys = new Keys(`t${randomBytes(4).toString('hex')}:`);
  const decisions = new Decisions(redis, keys, createMetrics(), 60_000, () => {
    throw new Error('the generation marker is set by the test');
  });
  afterAll(async () => {
    const stream = redis.scanStream({ match: `${keys.prefix}*`, count: 1000 });
    for await (const batch of stream as AsyncIterable<string[]>) if (batch.length) await redis.unlink(...batch);
    await redis.quit();
  });

  /** An item with `onHand` units on hand at the default location. */
  async function stocked(onHand: number): Promise<string> {
    await redis.set(keys.marker, '0');
    const itemId = `item-${randomUUID()}`;
    const opId = randomUUID();
    const decided = await decisions.changeStock(itemId, 'default', 'set', onHand, { opId, nodeId: node });
    if (decided.kind !== 'changed') throw new Error(`stock: ${decided.kind}`);
    await decisions.endStockChange(itemId, 'apply', opId, decided);
    return itemId;
  }

  async function reserve(lines: Line[], ttlMs = 60_000): Promise<string> {
    const id = randomUUID();
    const decision = await decisions.reserve({
      reservationId: id,
      lines,
      ttlMs,
      idempotencyKey: keys.idempotency('_', randomUUID()),
      recordPrefix: recordPrefix('h', id),
      recordSuffix: recordSuffix(node),
      recordTtlMs: 60_000,
      header: { reference: null, metadata: {}, tenant: 'default', allocation: null },
      lease: { key: keys.node(node), ttlMs: 3_000 },
    });
    expect(decision.kind).toBe('held');
    return id;
  }

  return { redis, keys, decisions, stocked, reserve };
}

describe('undo_settle', () => {
  const { redis, keys, decisions, stocked, reserve } = ownDecisions('aaaaaaaaaaaa');

  async function stockOf(itemId: string): Promise<{ onHand: number; reserved: number }> {
    const at = (await decisions.availability(itemId))!.get('default')!;
    return { onHand: at.onHand ?? 0, reserved: at.reserved ?? 0 };
  }

  it('undoes a release whose units are still free: the hold is pending again', async () => {
    const itemId = await stocked(2);
    const lines = [{ itemId, location: 'default', quantity: 2 }];
    const id = await reserve(lines);
    const released = await decisions.settle('release', id, lines);
    if (released.kind !== 'settled') throw new Error(`settle: ${released.kind}`);
    expect(await stockOf(itemId)).toEqual({ onHand: 2, reserved: 0 });

    expect(await decisions.undoSettle('release', released.generation, id, lines)).toBe(true);
    expect(await stockOf(itemId)).toEqual({ onHand: 2, reserved: 2 });
    expect(await decisions.expire(id, lines, 'inspect')).toMatchObject({ pending: 1, released: 0 });
  });

  it('reads a hold written before versions (three parts) as version 1 while pending, and writes the version on', async () => {
    const itemId = await stocked(4);
    const lines = [{ itemId, location: 'default', quantity: 2 }];
    const [stale, current] = [await reserve(lines), await reserve(lines)];
    for (const id of [stale, current]) {
      const field = holdField(id, 'default');
      const hold = parseHold((await redis.hget(keys.item(itemId).holds, field))!)!;
      await redis.hset(keys.item(itemId).holds, field, `${hold.state}:${hold.quantity}:${hold.expiresAtMs}`);
    }
    expect(await decisions.settle('confirm', stale, lines, 2)).toEqual({ kind: 'precondition', version: 1 });
    expect(await decisions.settle('confirm', current, lines, 1)).toMatchObject({ kind: 'settled', version: 2 });
    expect(await redis.hget(keys.item(itemId).holds, holdField(current, 'default'))).toMatch(/^c:2:\d+:2$/);
  });

  it('gives an undone confirm or release back the version before it, so a retry with If-Match "1" is decided anew', async () => {
    for (const action of ['confirm', 'release'] as const) {
      const itemId = await stocked(2);
      const lines = [{ itemId, location: 'default', quantity: 2 }];
      const id = await reserve(lines);
      const settled = await decisions.settle(action, id, lines, 1);
      expect(settled).toMatchObject({ kind: 'settled', version: 2 });
      if (settled.kind !== 'settled') return;
      expect(await decisions.settle(action === 'confirm' ? 'release' : 'confirm', id, lines, 1)).toEqual({ kind: 'precondition', version: 2 });

      expect(await decisions.undoSettle(action, settled.generation, id, lines)).toBe(true);
      expect(parseHold((await redis.hget(keys.item(itemId).holds, holdField(id, 'default')))!)).toMatchObject({ state: HoldState.pending, version: 1 });
      expect(await decisions.settle(action, id, lines, 2)).toEqual({ kind: 'precondition', version: 1 });
      expect(await decisions.settle(action, id, lines, 1)).toMatchObject({ kind: 'settled', version: 2 });
    }
  });

  it('extend moves every hold, its expiry score and the header; undo_extend takes back only its own state', async () => {
    const itemId = await stocked(4);
    const lines = [{ itemId, location: 'default', quantity: 2 }];
    const id = await reserve(lines);
    const field = holdField(id, 'default');
    const before = parseHold((await redis.hget(keys.item(itemId).holds, field))!)!;
    const extended = await decisions.extend(id, lines, 5_000);
    if (extended.kind !== 'extended') throw new Error(`extend: ${extended.kind}`);
    expect(extended).toMatchObject({ version: 2, expiresMs: extended.nowMs + 5_000, previousExpiresMs: before.expiresAtMs });
    expect(parseHold((await redis.hget(keys.item(itemId).holds, field))!)).toMatchObject({ expiresAtMs: extended.expiresMs, version: 2 });
    expect(Number(await redis.zscore(keys.item(itemId).exp, field))).toBe(extended.expiresMs);
    expect(Number(await redis.hget(keys.reservation(id), 'expires'))).toBe(extended.expiresMs);

    // Redis rebuilt since: nothing to undo.
    expect(await decisions.undoExtend(String(Number(extended.generation) + 1), id, lines, extended)).toBe('stale');
    expect(await decisions.undoExtend(extended.generation, id, lines, extended)).toBe('undone');
    expect(parseHold((await redis.hget(keys.item(itemId).holds, field))!)).toEqual(before);
    expect(Number(await redis.zscore(keys.item(itemId).exp, field))).toBe(before.expiresAtMs);
    expect(Number(await redis.hget(keys.reservation(id), 'expires'))).toBe(before.expiresAtMs);

    // A later decision on the holds (a confirm after the extension) stands.
    const again = await decisions.extend(id, lines, 5_000, 1);
    if (again.kind !== 'extended') throw new Error(`extend: ${again.kind}`);
    expect(await decisions.settle('confirm', id, lines, 2)).toMatchObject({ kind: 'settled', version: 3, expiresMs: again.expiresMs });
    expect(await decisions.undoExtend(again.generation, id, lines, { ...again, version: 2 })).toBe('undone');
    expect(parseHold((await redis.hget(keys.item(itemId).holds, field))!)).toMatchObject({ state: HoldState.confirmed, version: 3 });
    expect(await decisions.extend(id, lines, 5_000)).toEqual({ kind: 'confirmed', version: 3 });
  });

  it('undo_extend holds again what a shortening extension let expire, while its units are free and its old expiry ahead', async () => {
    const itemId = await stocked(3);
    const lines = [{ itemId, location: 'default', quantity: 2 }];
    const id = await reserve(lines);
    const field = holdField(id, 'default');
    const before = parseHold((await redis.hget(keys.item(itemId).holds, field))!)!;
    const shortened = await decisions.extend(id, lines, 50);
    if (shortened.kind !== 'extended') throw new Error(`extend: ${shortened.kind}`);
    await new Promise((resolve) => setTimeout(resolve, 80));
    expect(await decisions.extend(id, lines, 5_000)).toMatchObject({ kind: 'expired', version: 3 }); // expired at its new time
    expect(await decisions.undoExtend(shortened.generation, id, lines, shortened)).toBe('undone');
    expect(parseHold((await redis.hget(keys.item(itemId).holds, field))!)).toEqual(before);
    expect(await redis.hget(keys.item(itemId).stock, 'r:default')).toBe('2');

    // Its units taken meanwhile: it stays expired (holding them again would hold 4 of 3).
    const again = await decisions.extend(id, lines, 50);
    if (again.kind !== 'extended') throw new Error(`extend: ${again.kind}`);
    await new Promise((resolve) => setTimeout(resolve, 80));
    await reserve(lines);
    expect(await decisions.undoExtend(again.generation, id, lines, again)).toBe('expired');
    expect(parseHold((await redis.hget(keys.item(itemId).holds, field))!)).toMatchObject({ state: HoldState.expired, version: 3 });
    expect(await redis.hget(keys.item(itemId).stock, 'r:default')).toBe('2');
  });

  it('does not undo a release whose units another reservation took since (that would oversell)', async () => {
    const itemId = await stocked(2);
    const lines = [{ itemId, location: 'default', quantity: 2 }];
    const first = await reserve(lines);
    const released = await decisions.settle('release', first, lines);
    if (released.kind !== 'settled') throw new Error(`settle: ${released.kind}`);
    const second = await reserve(lines); // the freed units, taken

    expect(await decisions.undoSettle('release', released.generation, first, lines)).toBe(false);
    expect(await stockOf(itemId)).toEqual({ onHand: 2, reserved: 2 }); // the second reservation's, once
    expect(await decisions.expire(first, lines, 'inspect')).toMatchObject({ pending: 0, released: 1 });
    expect(await decisions.expire(second, lines, 'inspect')).toMatchObject({ pending: 1 });
  });

  it('undoes no line of a release when one of its lines lost its units', async () => {
    const free = await stocked(5);
    const taken = await stocked(1);
    const lines = [
      { itemId: free, location: 'default', quantity: 1 },
      { itemId: taken, location: 'default', quantity: 1 },
    ];
    const first = await reserve(lines);
    const released = await decisions.settle('release', first, lines);
    if (released.kind !== 'settled') throw new Error(`settle: ${released.kind}`);
    await reserve([lines[1]!]);

    expect(await decisions.undoSettle('release', released.generation, first, lines)).toBe(false);
    expect(await stockOf(free)).toEqual({ onHand: 5, reserved: 0 });
    expect(await stockOf(taken)).toEqual({ onHand: 1, reserved: 1 });
    expect(await decisions.expire(first, lines, 'inspect')).toMatchObject({ pending: 0, released: 2 });
  });
});

describe('survey (reconciliation reads many items a call)', () => {
  const { decisions, stocked, reserve } = ownDecisions('bbbbbbbbbbbb');
  const line = (itemId: string, quantity: number): Line[] => [{ itemId, location: 'default', quantity }];

  it("lists each item's stock and pending holds, after releasing the due ones; an item of many holds is only counted", async () => {
    const few = await stocked(10);
    const pending = await reserve(line(few, 2));
    const released = await reserve(line(few, 1));
    expect((await decisions.settle('release', released, [{ itemId: few, location: 'default', quantity: 1 }])).kind).toBe('settled');
    const due = await reserve(line(few, 3), 1);
    const many = await stocked(10);
    for (let i = 0; i < 3; i++) await reserve(line(many, 1));
    await new Promise((resolve) => setTimeout(resolve, 5)); // `due`'s TTL passes

    const surveyed = await decisions.survey([few, many, 'never-stocked'], 3);
    expect(surveyed.get(few)).toEqual({
      stock: new Map([['default', expect.objectContaining({ onHand: 10, reserved: 2 })]]),
      intents: new Map(),
      holdCount: 3, // the pending one and two tombstones: the release's and the expiry's
      pendingHolds: [holdField(pending, 'default')],
    });
    expect(await decisions.survey([many], 2)).toEqual(
      new Map([[many, { stock: expect.any(Map), intents: new Map(), holdCount: 3, pendingHolds: null }]]),
    );
    expect(surveyed.get(many)!.pendingHolds).toHaveLength(3);
    expect(surveyed.get('never-stocked')).toEqual({ stock: new Map(), intents: new Map(), holdCount: 0, pendingHolds: [] });
  });

  it('reads the open stock decisions alone when asked for no holds (-1), and many items over several calls', async () => {
    const items = await Promise.all(Array.from({ length: 60 }, () => stocked(1)));
    const opId = randomUUID();
    const open = await decisions.changeStock(items[42]!, 'default', 'adjust', 5, { opId, nodeId: 'bbbbbbbbbbbb' });
    expect(open.kind).toBe('changed');
    const surveyed = await decisions.survey(items, -1);
    expect(surveyed.size).toBe(60);
    expect([...surveyed.get(items[42]!)!.intents.keys()]).toEqual([opId]);
    expect(surveyed.get(items[0]!)).toEqual({ stock: new Map(), intents: new Map(), holdCount: 0, pendingHolds: null });
  });
});
