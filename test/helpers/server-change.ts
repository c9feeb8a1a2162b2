import { expect } from 'vitest';
import { availabilityOf, outcome, waitReady, type Api } from './api.js';
import type { TestApp } from './app.js';
import { checkInvariants } from './invariants.js';
import { waitFor } from './wait.js';

/**
 * After Redis came back as another server (or another process of it) that lacks a hold of `sku`'s only unit: every
 * reserve of that unit answers 503 (rebuilding) or 409, never 201; once rebuilt, the hold is there again.
 */
export async function expectNoSecondSale(t: TestApp, api: Api, sku: string): Promise<void> {
  const answers: string[] = [];
  await waitFor(
    'the rebuilt state to refuse the held unit',
    async () => {
      const a = await api.reserve({ lines: [{ itemId: sku, quantity: 1 }] });
      answers.push(outcome(a));
      return outcome(a) === '409 insufficient_stock' || undefined;
    },
    { timeoutMs: 20_000, intervalMs: 50 },
  );
  expect(answers.filter((a) => a !== '503 unavailable' && a !== '409 insufficient_stock'), answers.join(', ')).toEqual([]);
  await waitReady(t.app, 20_000);
  expect(availabilityOf(await api.availability(sku))).toMatchObject({ onHand: 1, reserved: 1, available: 0 });
  await checkInvariants(t.app, [sku]);
}
