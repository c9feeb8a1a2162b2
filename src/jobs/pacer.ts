import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Spreads a background pass over time: at each pause it sleeps long enough that its work (the wall time between
 * pauses, round trips included) is at most `percent` of the time. Live requests then keep the rest of the event
 * loop, Redis and PostgreSQL, instead of queueing behind a burst. 100 never sleeps; `signal` cuts a sleep short
 * (the pause then throws its AbortError), so that stopping does not wait out a long pass.
 */
export class Pacer {
  private workingSince = performance.now();

  constructor(
    private readonly percent: number,
    private readonly signal?: AbortSignal,
  ) {}

  async pause(): Promise<void> {
    if (this.percent >= 100) return;
    const worked = performance.now() - this.workingSince;
    await sleep((worked * (100 - this.percent)) / this.percent, undefined, { signal: this.signal });
    this.workingSince = performance.now();
  }
}
