import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

// A module that imports, directly or around a loop, a module importing it back is half-initialised when the loop
// closes, and the two cannot be understood (or moved) apart. src/ has no such loop; type-only imports count too,
// since the types are part of what ties the modules together.

/** Every relative import of every .ts file under `dir`, as a graph of absolute paths (TypeScript's own scanner). */
function importGraph(dir: string): Map<string, string[]> {
  const files = (readdirSync(dir, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts')).map((f) => path.join(dir, f));
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const { importedFiles } = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
    graph.set(
      file,
      importedFiles
        .map((i) => i.fileName)
        .filter((name) => name.startsWith('.'))
        .map((name) => path.resolve(path.dirname(file), name).replace(/\.js$/, '.ts')),
    );
  }
  return graph;
}

/** Each import cycle once, as `a.ts -> b.ts -> a.ts` relative to `root`. */
function cyclesOf(graph: Map<string, string[]>, root: string): string[] {
  const cycles: string[] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (file: string) => {
    state.set(file, 'open');
    stack.push(file);
    for (const next of graph.get(file) ?? []) {
      if (state.get(next) === 'open') {
        cycles.push([...stack.slice(stack.indexOf(next)), next].map((f) => path.relative(root, f)).join(' -> '));
      } else if (!state.has(next)) {
        visit(next);
      }
    }
    stack.pop();
    state.set(file, 'done');
  };
  for (const file of [...graph.keys()].sort()) if (!state.has(file)) visit(file);
  return cycles;
}

describe('imports', () => {
  it('src/ has no import cycle', () => {
    const src = fileURLToPath(new URL('../../src/', import.meta.url));
    const graph = importGraph(src);
    expect(graph.size).toBeGreaterThan(20);
    expect(cyclesOf(graph, src)).toEqual([]);
  });

  it('finds a cycle closed by a type-only import, and says where it is', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'cycles-'));
    try {
      writeFileSync(path.join(dir, 'app.ts'), "import { routes } from './routes/admin.js';\nexport interface Runtime { a: 1 }\n");
      writeFileSync(path.join(dir, 'leaf.ts'), 'export const leaf = 1;\n');
      mkdirSync(path.join(dir, 'routes'));
      writeFileSync(path.join(dir, 'routes', 'admin.ts'), "import type { Runtime } from '../app.js';\nimport { leaf } from '../leaf.js';\n");
      expect(cyclesOf(importGraph(dir), dir)).toEqual(['app.ts -> routes/admin.ts -> app.ts']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
