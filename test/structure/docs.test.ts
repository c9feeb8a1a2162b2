import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { errorCatalogue } from '../../src/domain/errors.js';

// The project's own docs stand alone: a clone has every file they link to, and the API reference names every code
// the service can answer.

const root = fileURLToPath(new URL('../../', import.meta.url));

/** The repository's Markdown files (not its dependencies'). */
function markdownFiles(dir = root): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    if (entry.name === 'node_modules' || entry.name.startsWith('.')) return [];
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return markdownFiles(full);
    return entry.name.endsWith('.md') ? [full] : [];
  });
}

/** Relative link targets of a Markdown text: `[text](target)` and `![alt](target)`, without their #fragment. */
function relativeLinks(markdown: string): string[] {
  return [...markdown.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)]
    .map((m) => m[1]!)
    .filter((target) => !/^[a-z][a-z0-9+.-]*:/i.test(target) && !target.startsWith('#') && !target.startsWith('/'))
    .map((target) => decodeURIComponent(target.split('#')[0]!));
}

describe('the docs', () => {
  it('link only to files inside the repository, which exist', () => {
    const files = markdownFiles();
    expect(files.map((f) => path.relative(root, f))).toEqual(expect.arrayContaining(['README.md', 'docs/api.md']));
    const broken: string[] = [];
    for (const file of files) {
      for (const target of relativeLinks(readFileSync(file, 'utf8'))) {
        const resolved = path.resolve(path.dirname(file), target);
        const inside = !path.relative(root, resolved).startsWith('..');
        if (!inside || !existsSync(resolved)) broken.push(`${path.relative(root, file)} → ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });

  it('docs/api.md lists every error code with its status', () => {
    const api = readFileSync(path.join(root, 'docs/api.md'), 'utf8');
    const missing = Object.entries(errorCatalogue)
      .filter(([code, { status }]) => !api.includes(`| \`${code}\` | ${status} |`))
      .map(([code]) => code);
    expect(missing).toEqual([]);
  });
});
