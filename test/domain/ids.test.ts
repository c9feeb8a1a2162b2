import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { newId } from '../../src/domain/ids.js';

describe('newId', () => {
  it('makes distinct UUIDv7s that carry their creation time, across many refills of its random pool', () => {
    const before = Date.now();
    const ids = Array.from({ length: 10_000 }, () => newId());
    const after = Date.now();
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) {
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      const ms = parseInt(id.replace(/-/g, '').slice(0, 12), 16);
      expect(ms).toBeGreaterThanOrEqual(before);
      expect(ms).toBeLessThanOrEqual(after);
    }
  });

  it('draws fresh random bits for every id (no two ids share their random tail)', () => {
    const tails = Array.from({ length: 5_000 }, () => newId().slice(19));
    expect(new Set(tails).size).toBe(tails.length);
  });

  it('is the only way src/ makes a UUID: uuid alone asks the CSPRNG for every id (3 µs a call here, 6 times a pooled one)', () => {
    const src = fileURLToPath(new URL('../../src/', import.meta.url));
    const importers = (readdirSync(src, { recursive: true }) as string[])
      .filter((file) => file.endsWith('.ts'))
      .filter((file) => ts.preProcessFile(readFileSync(src + file, 'utf8'), true, true).importedFiles.some((i) => i.fileName === 'uuid'));
    expect(importers).toEqual(['domain/ids.ts']);
  });
});
