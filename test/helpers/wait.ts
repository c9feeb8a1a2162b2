import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Waiting in tests: for a state to be reached (`waitFor`, a bounded poll that fails loudly) or for a moment of the
 * wall clock (`untilTime`, when the passing of time is what a test is about: a TTL, a lease). Never a fixed
 * sleep hoping the system got somewhere.
 */

/** Thrown by a `waitFor` probe to stop waiting at once: what it waits for can no longer happen. */
export class GiveUp extends Error {
  override name = 'GiveUp';
}

/**
 * Polls `probe` until it returns a value other than undefined, and returns that value. A probe that throws is
 * asked again (its last error is named if time runs out), unless it threw `GiveUp`. Fails with `what` after
 * `timeoutMs`.
 */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  { timeoutMs = 10_000, intervalMs = 25 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      if (err instanceof GiveUp) throw new Error(`gave up waiting for ${what}: ${err.message}`);
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const reason = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${reason}`);
    }
    await sleep(intervalMs);
  }
}

/**
 * Resolves once the wall clock (the one Redis and PostgreSQL read too) reaches `at`: epoch milliseconds or an
 * ISO time such as a reservation's `expiresAt`. An event in time, for tests about time passing, not a guessed delay.
 */
export async function untilTime(at: number | string): Promise<void> {
  const epochMs = typeof at === 'string' ? Date.parse(at) : at;
  if (Number.isNaN(epochMs)) throw new Error(`untilTime: not a time: ${String(at)}`);
  for (let left = epochMs - Date.now(); left > 0; left = epochMs - Date.now()) await sleep(left);
}
