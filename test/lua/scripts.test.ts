import { readdirSync, readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { luaLayout } from '../../src/redis/layout.js';
import { scriptNames, scriptSource } from '../../src/redis/scripts.js';
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
