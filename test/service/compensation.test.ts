import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { createMetrics, type Metrics } from '../../src/metrics.js';
import { compensate, recordFailed } from '../../src/service/compensation.js';
import { RecordError, RecordRejected } from '../../src/store/writer.js';
import { waitFor } from '../helpers/wait.js';

const log = pino({ level: 'silent' });

async function results(metrics: Metrics): Promise<Record<string, number>> {
  const { values } = await metrics.compensations.get();
  return Object.fromEntries(values.map((v) => [String(v.labels.result), v.value]));
}

/** A fate the test settles by hand, as the writer's lookup would once PostgreSQL answers. */
function pendingFate() {
  let settle!: (committed: boolean | 'unknown') => void;
  const fate = new Promise<boolean | 'unknown'>((resolve) => (settle = resolve));
  return { fate, settle };
}

/**
 * A settled fate is acted on off the caller's path (nobody awaits that chain): these wait for what it does last,
 * as the rest of the service would see it (a counted result, a call of the caller's hook).
 */
const counted = (metrics: Metrics, result: string) =>
  waitFor(`a compensation counted ${result}`, async () => ((await results(metrics))[result] ? true : undefined), {
    timeoutMs: 2_000,
    intervalMs: 1,
  });

/** A hook for `compensate` (`fn`), and a wait for its first call. */
function hook<T>(run: () => Promise<T>) {
  let calls = 0;
  const called = () => waitFor('the hook to be called', async () => (calls > 0 ? true : undefined), { timeoutMs: 2_000, intervalMs: 1 });
  return { called, fn: () => (calls++, run()) };
}

describe('compensate', () => {
  it('undoes at once when the batch did not commit', async () => {
    const metrics = createMetrics();
    let undone = 0;
    await compensate(new RecordError(false, new Error('x')), async () => (++undone, true), { operation: 'reserve', metrics, log });
    expect(undone).toBe(1);
    expect(await results(metrics)).toEqual({ undone: 1 });
  });

  it('waits while the fate is unknown, then undoes when PostgreSQL says the batch never committed', async () => {
    const metrics = createMetrics();
    const { fate, settle } = pendingFate();
    let undone = 0;
    await compensate(new RecordError('unknown', new Error('x'), fate), async () => (++undone, true), { operation: 'reserve', metrics, log });
    expect(undone).toBe(0);
    expect(await results(metrics)).toEqual({ deferred: 1 });
    settle(false);
    await counted(metrics, 'undone');
    expect(undone).toBe(1);
    expect(await results(metrics)).toEqual({ deferred: 1, undone: 1 });
  });

  it('leaves the decision standing when the batch committed after all', async () => {
    const metrics = createMetrics();
    const { fate, settle } = pendingFate();
    let undone = 0;
    const after = hook(async () => undefined);
    await compensate(new RecordError('unknown', new Error('x'), fate), async () => (++undone, true), {
      operation: 'confirm',
      metrics,
      log,
      onCommittedAfterAll: after.fn,
    });
    settle(true);
    await after.called(); // the last thing a late commit leads to
    expect(undone).toBe(0);
    expect(await results(metrics)).toEqual({ deferred: 1, committed_after_all: 1 });
  });

  it('finishes the decision when the batch committed after all and the caller has more to do (a pending increase)', async () => {
    const metrics = createMetrics();
    const { fate, settle } = pendingFate();
    let applied = 0;
    const after = hook(async () => ++applied);
    await compensate(new RecordError('unknown', new Error('x'), fate), async () => true, {
      operation: 'stock',
      metrics,
      log,
      onCommittedAfterAll: after.fn,
    });
    expect(applied).toBe(0);
    settle(true);
    await after.called();
    expect(applied).toBe(1);
  });

  it('logs, and does not leave unhandled, a failure of what the caller does after a late commit', async () => {
    const metrics = createMetrics();
    const { fate, settle } = pendingFate();
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    const logged: string[] = [];
    const recorded = pino({ level: 'error' }, { write: (line: string) => void logged.push(line) });
    process.on('unhandledRejection', onUnhandled);
    try {
      await compensate(new RecordError('unknown', new Error('x'), fate), async () => true, {
        operation: 'stock',
        metrics,
        log: recorded,
        onCommittedAfterAll: async () => Promise.reject(new Error('Redis down')),
      });
      settle(true);
      // Whichever comes of the failure: its log line, or Node reporting it unhandled.
      await waitFor('the failure to be logged or reported unhandled', async () =>
        logged.length > 0 || unhandled.length > 0 ? true : undefined,
      { timeoutMs: 2_000, intervalMs: 1 });
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    expect(unhandled).toEqual([]);
    expect(logged).toHaveLength(1);
    expect(JSON.parse(logged[0]!)).toMatchObject({ level: 50, operation: 'stock', err: { message: 'Redis down' } });
  });

  it('leaves the decision to reconciliation when the fate is never learned', async () => {
    const metrics = createMetrics();
    const { fate, settle } = pendingFate();
    let undone = 0;
    const never = hook(async () => undefined);
    await compensate(new RecordError('unknown', new Error('x'), fate), async () => (++undone, true), {
      operation: 'stock',
      metrics,
      log,
      onNeverLearned: never.fn,
    });
    settle('unknown');
    await never.called(); // the last thing a fate never learned leads to
    expect(undone).toBe(0);
    expect(await results(metrics)).toEqual({ deferred: 1, skipped_unknown_commit: 1 });
  });

  it('counts an undo that throws as failed', async () => {
    const metrics = createMetrics();
    await compensate(new Error('not a record error'), async () => Promise.reject(new Error('Redis down')), { operation: 'release', metrics, log });
    expect(await results(metrics)).toEqual({ failed: 1 });
  });
});

describe('recordFailed', () => {
  const context = { operation: 'reserve', log };

  it('says nothing was applied only when that is known', () => {
    expect(recordFailed(new RecordError(false, new Error('x')), context).detail).toMatch(/nothing was applied/);
    expect(recordFailed(new RecordError('unknown', new Error('x')), context).detail).toMatch(/could not be asked/);
    expect(recordFailed(new RecordError('unknown', new Error('x')), context).detail).not.toMatch(/nothing was applied/);
  });

  /** What PostgreSQL says of a value it cannot store: words the client must never see. */
  const pgError = (code: string) => Object.assign(new Error('unsupported Unicode escape sequence'), { code, severity: 'ERROR' });

  it('answers 400, without PostgreSQL\'s words, for an operation PostgreSQL rejected for a value it cannot store', () => {
    for (const code of ['22P05', '22021']) {
      const problem = recordFailed(new RecordRejected(code, pgError(code)), context);
      expect(problem).toMatchObject({ code: 'validation_failed', status: 400 });
      expect(problem.extras.errors).toEqual([{ field: 'body', message: 'contains a value that cannot be stored' }]);
      expect(JSON.stringify([problem.detail, problem.extras])).not.toMatch(/Unicode|escape|22P05|22021/);
    }
  });

  it('answers 500 for an operation PostgreSQL rejected for a constraint or a limit (our bug), with no detail', () => {
    for (const code of ['23514', '54000']) {
      const problem = recordFailed(new RecordRejected(code, pgError(code)), context);
      expect(problem).toMatchObject({ code: 'internal', status: 500, detail: undefined, extras: {} });
    }
  });
});
