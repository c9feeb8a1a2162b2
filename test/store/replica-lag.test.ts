import { describe, expect, it } from 'vitest';
import { lagSampleIntervalMs, LagTracker, parseLsn } from '../../src/store/read-replica.js';

// The replica's lag, as the age of the newest primary WAL position it has replayed (src/store/read-replica.ts).

describe('parseLsn', () => {
  it('reads both halves of a WAL position, so positions compare as numbers', () => {
    expect(parseLsn('0/3000000')).toBe(0x3000000n);
    expect(parseLsn('16/B374D848')).toBe((0x16n << 32n) | 0xb374d848n);
    expect(parseLsn('1/0') > parseLsn('0/FFFFFFFF')).toBe(true);
    expect(() => parseLsn('3000000')).toThrow(/not a WAL position/);
  });
});

describe('LagTracker', () => {
  it('is unknown until the replica has replayed a sampled position', () => {
    const lag = new LagTracker();
    expect(lag.lagMs(1_000)).toBeNull();
    lag.primaryAt(1_000, 500n);
    lag.replayedUpTo(499n);
    expect(lag.lagMs(1_010)).toBeNull();
    lag.replayedUpTo(500n);
    expect(lag.lagMs(1_010)).toBe(10);
  });

  it('stays small while the primary is idle, however long ago the last transaction was (replay paused or not)', () => {
    const lag = new LagTracker();
    // Nothing written for a minute: the primary stays at 500, which the replica has.
    for (let at = 0; at <= 60_000; at += 250) {
      lag.primaryAt(at, 500n);
      lag.replayedUpTo(500n);
    }
    expect(lag.lagMs(60_010)).toBe(10);
  });

  it('grows from the newest position replayed while the replica misses what the primary wrote since', () => {
    const lag = new LagTracker();
    lag.primaryAt(0, 100n);
    lag.replayedUpTo(100n);
    for (let at = 250; at <= 5_000; at += 250) {
      lag.primaryAt(at, BigInt(100 + at));
      lag.replayedUpTo(100n);
    }
    expect(lag.lagMs(5_010)).toBe(5_010);
    // It replays up to the position the primary had at 2,500: as fresh as then.
    lag.replayedUpTo(2_600n);
    expect(lag.lagMs(5_010)).toBe(2_510);
    // Between two sampled positions: only the older counts.
    lag.replayedUpTo(2_849n);
    expect(lag.lagMs(5_010)).toBe(2_510);
    lag.replayedUpTo(5_100n);
    expect(lag.lagMs(5_010)).toBe(10);
  });

  it('keeps its memory bounded while the replica stays behind, reading the lag higher, never lower', () => {
    const lag = new LagTracker(4);
    for (let i = 0; i <= 4; i++) lag.primaryAt(i * 100, BigInt(10 * (i + 1)));
    // Five positions over a cap of four: every other one is dropped, 20 (sampled at 100) among them.
    lag.replayedUpTo(20n);
    expect(lag.lagMs(1_000)).toBe(1_000);
    lag.replayedUpTo(30n);
    expect(lag.lagMs(1_000)).toBe(800);
  });

  it('samples a quarter of the bound, between 25 and 250 ms', () => {
    expect(lagSampleIntervalMs(100)).toBe(25);
    expect(lagSampleIntervalMs(400)).toBe(100);
    expect(lagSampleIntervalMs(1_000)).toBe(250);
    expect(lagSampleIntervalMs(60_000)).toBe(250);
  });
});
