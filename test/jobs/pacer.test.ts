import { describe, expect, it } from 'vitest';
import { Pacer } from '../../src/jobs/pacer.js';

// The pacer that spreads a periodic reconciliation pass (src/jobs/pacer.ts): work is at most its share of the time.

/** Keeps the thread busy for `ms`: work, as the pacer sees it. */
function work(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}

async function timed(f: () => Promise<void>): Promise<number> {
  const started = performance.now();
  await f();
  return performance.now() - started;
}

describe('Pacer', () => {
  it('sleeps after a stretch of work so that the work is its percent of the time, then counts afresh', async () => {
    const pacer = new Pacer(25);
    work(20);
    // 20 ms of work at 25 %: 60 ms asleep (a timer may fire a little early against performance.now()).
    expect(await timed(() => pacer.pause())).toBeGreaterThanOrEqual(55);
    // The next stretch starts where that pause ended: no work since, so next to no sleep (counted from the start,
    // 80 ms of "work" would mean 240 ms).
    expect(await timed(() => pacer.pause())).toBeLessThan(60);
  });

  it('at 100 % never sleeps', async () => {
    const pacer = new Pacer(100);
    work(50);
    expect(await timed(() => pacer.pause())).toBeLessThan(25);
  });

  it('stopping cuts a sleep short: the pause throws an AbortError', async () => {
    const stopping = new AbortController();
    const pacer = new Pacer(1, stopping.signal);
    work(50); // 4.95 s asleep at 1 %
    const pause = pacer.pause();
    setTimeout(() => stopping.abort(), 20);
    const started = performance.now();
    await expect(pause).rejects.toMatchObject({ name: 'AbortError' });
    expect(performance.now() - started).toBeLessThan(2_000);
  });
});
