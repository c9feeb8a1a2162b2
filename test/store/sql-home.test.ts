import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * SQL lives in src/store/ only: jobs, routes and the app call functions whose names say what they ask, so every
 * query the service sends can be found, read and changed in one place.
 */
const src = fileURLToPath(new URL('../../src/', import.meta.url));
const store = path.join(src, 'store');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) return full === store ? [] : sources(full);
    return e.name.endsWith('.ts') ? [full] : [];
  });
}

/** A query sent, or SQL spelled out (keywords in capitals, as the store writes them). */
const SQL = /\.query\s*[<(]|\b(SELECT|INSERT INTO|DELETE FROM|UPDATE \w+ SET|BEGIN|COMMIT|ROLLBACK)\b/;

describe('SQL', () => {
  it.each(sources(src).map((f) => path.relative(src, f)))('src/%s sends no SQL of its own', (file) => {
    const lines = readFileSync(path.join(src, file), 'utf8').split('\n');
    const found = lines.flatMap((line, i) => (SQL.test(line) ? [`${i + 1}: ${line.trim()}`] : []));
    expect(found, 'move the query into a src/store/ module and call it').toEqual([]);
  });
});
