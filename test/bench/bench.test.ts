import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultOptions, runBench } from '../../bench/harness.js';
import { writeResults } from '../../bench/report.js';

/**
 * Proves the benchmark still runs: the harness starts the durable service in its own process, drives a one-second
 * flash sale from a separate generator process, and checks the invariants. Speed is never asserted here.
 */
describe('benchmark harness (smoke)', () => {
  const out = mkdtempSync(path.join(os.tmpdir(), 'irs-bench-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it('runs a short flash sale against the durable design and the invariants hold', async () => {
    const report = await runBench({
      ...defaultOptions(),
      designs: ['durable'],
      scenarios: ['flash64'],
      durationSeconds: 1,
      warmupSeconds: 0,
      passes: 1,
      outDir: out,
      tag: `t${randomBytes(4).toString('hex')}`,
      waitQuietSeconds: 0,
      log: () => {},
    });

    expect(report.runs).toHaveLength(1);
    const run = report.runs[0]!;
    expect(run.load.responses).toBeGreaterThan(0);
    expect(run.load.outcomes.created).toBeGreaterThan(0);
    expect(run.load.outcomes.other, run.load.otherSamples.join('\n')).toBe(0);
    expect(run.invariants.failures).toEqual([]);
    expect(run.invariants.postgresEqualsRedis).toBe(true);
    expect(report.invariantsOk).toBe(true);

    const files = await writeResults(out, report);
    expect(JSON.parse(readFileSync(files.json, 'utf8')).summary).toHaveLength(1);
    expect(existsSync(files.svg)).toBe(true);

    // A smoke run (--quick) writes quick.*, and leaves the published latest.* as they were.
    const published = readFileSync(files.json, 'utf8');
    const quick = await writeResults(out, { ...report, startedAt: 'quick' }, 'quick');
    expect([path.basename(quick.json), path.basename(quick.svg)]).toEqual(['quick.json', 'quick.svg']);
    expect(JSON.parse(readFileSync(quick.json, 'utf8')).startedAt).toBe('quick');
    expect(readFileSync(files.json, 'utf8')).toBe(published);
  }, 120_000);
});
