import { pino } from 'pino';
import { defaultServices } from '../../src/app.js';
import { describe, expect, it } from 'vitest';
import { ProblemError } from '../../src/domain/errors.js';
import { ANONYMOUS_CALLER as anonymous } from '../../src/http/access.js';
import { newItem, newKey } from '../helpers/app.js';
import { useHttpApp } from '../helpers/api.js';
import { checkInvariants } from '../helpers/invariants.js';

// HTTP validation refuses a NUL before the services see it; the services do not validate again, so these tests
// call them directly, as a value validation let through would reach them: PostgreSQL rejects the record.
const { t, api } = useHttpApp();
const log = pino({ level: 'silent' });

const services = () => defaultServices(t.app.runtime, log);

async function problemOf(call: Promise<unknown>): Promise<ProblemError> {
  const err = await call.then(
    () => new Error('expected a problem'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ProblemError);
  return err as ProblemError;
}

const cannotBeStored = { field: 'body', message: 'contains a value that cannot be stored' };

describe('a record PostgreSQL rejects for the operation\'s own values', () => {
  it('answers a reservation 400 validation_failed, holds nothing, frees its key, and fails no other request', async () => {
    const { reservations } = services();
    const item = newItem();
    await api.stock(item, 10);
    const key = newKey();
    const [bad, ...good] = await Promise.allSettled([
      reservations.reserve(anonymous, key, { lines: [{ itemId: item, quantity: 3 }], reference: 'order\u00001' }),
      ...Array.from({ length: 4 }, () => reservations.reserve(anonymous, newKey(), { lines: [{ itemId: item, quantity: 1 }] })),
    ]);
    expect(bad!.status).toBe('rejected');
    const problem = (bad as PromiseRejectedResult).reason as ProblemError;
    expect(problem).toBeInstanceOf(ProblemError);
    expect(problem).toMatchObject({ code: 'validation_failed', status: 400, extras: { errors: [cannotBeStored] } });
    expect(good.map((g) => (g.status === 'fulfilled' ? g.value.statusCode : g.reason))).toEqual([201, 201, 201, 201]);
    expect(await api.figures(item)).toMatchObject({ onHand: 10, reserved: 4, available: 6 });
    // The key was freed: the same key with a storable body is a new request, not "in use" or "reused".
    const retry = await reservations.reserve(anonymous, key, { lines: [{ itemId: item, quantity: 3 }], reference: 'order-1' });
    expect(retry.statusCode).toBe(201);
    await checkInvariants(t.app, [item]);
  });

  it('answers a reservation with metadata PostgreSQL cannot store 400 validation_failed', async () => {
    const { reservations } = services();
    const item = newItem();
    await api.stock(item, 10);
    const problem = await problemOf(
      reservations.reserve(anonymous, newKey(), { lines: [{ itemId: item, quantity: 2 }], metadata: { note: 'a\u0000b' } }),
    );
    expect(problem).toMatchObject({ code: 'validation_failed', status: 400, extras: { errors: [cannotBeStored] } });
    expect(await api.figures(item)).toMatchObject({ onHand: 10, reserved: 0, available: 10 });
    await checkInvariants(t.app, [item]);
  });

  it('answers a stock adjustment 400 validation_failed and leaves on-hand as it was, both ways', async () => {
    const { stock } = services();
    const item = newItem();
    await api.stock(item, 10);
    for (const delta of [-4, 5]) {
      const problem = await problemOf(stock.adjust(item, 'default', delta, 'recount\u0000'));
      expect(problem).toMatchObject({ code: 'validation_failed', status: 400, extras: { errors: [cannotBeStored] } });
      expect(problem.detail).not.toMatch(/UTF8|0x00|byte sequence/);
      expect(await api.figures(item)).toMatchObject({ onHand: 10, reserved: 0, available: 10 });
    }
    await checkInvariants(t.app, [item]);
    const { values } = await t.app.runtime.metrics.pgRejectedOperations.get();
    expect(values.find((v) => v.labels.sqlstate === '22P05')?.value).toBeGreaterThanOrEqual(2);
  });
});
