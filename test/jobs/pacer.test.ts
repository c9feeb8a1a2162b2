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
  it('sleeps after each stretch of work so that the work is its percent of the time', async () => {
    const pacer = new Pacer(25);
    work(20);
    // 20 ms of work at 25 %: 60 ms asleep. A second stretch counts from the end of the first pause.
    expect(await timed(() => pacer.pause())).toBeGreaterThanOrEqual(59);
    work(10);
    const slept = await timed(() => pacer.pause());
    expect(slept).toBeGreaterThanOrEqual(29);
    expect(slept).toBeLessThan(59);
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
