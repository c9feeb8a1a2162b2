import type { FastifyBaseLogger as Logger } from 'fastify';
import { ProblemError, unavailable } from '../domain/errors.js';
import type { Metrics } from '../metrics.js';
import { RecordError, RecordRejected } from '../store/writer.js';

/**
 * After a failed record, takes the Redis decision back (`undo` resolves true if it changed Redis). When PostgreSQL
 * may have committed it after all, the writer's lookup decides first: a decision PostgreSQL committed stands; one it
 * did not is undone as soon as the writer knows (PostgreSQL unreachable: when it answers again), and one it
 * committed after all gets `onCommittedAfterAll` (what the caller does after a commit). If it never learns,
 * reconciliation and the sweeper settle the decision, as after a crash, and `onNeverLearned` runs.
 */
export async function compensate(
  err: unknown,
  undo: () => Promise<boolean>,
  context: {
    operation: string;
    metrics: Metrics;
    log: Logger;
    onCommittedAfterAll?: () => Promise<unknown>;
    onNeverLearned?: () => Promise<unknown>;
  },
): Promise<void> {
  const { operation, metrics, log } = context;
  const settle = async (): Promise<void> => {
    try {
      metrics.compensations.inc({ operation, result: (await undo()) ? 'undone' : 'not_needed' });
    } catch (undoErr) {
      metrics.compensations.inc({ operation, result: 'failed' });
      log.error({ err: undoErr, operation }, 'compensation failed; reconciliation will repair Redis');
    }
  };
  if (!(err instanceof RecordError) || err.committed === false) return settle();

  metrics.compensations.inc({ operation, result: 'deferred' });
  log.warn({ err, operation }, 'commit outcome unknown; the decision is undone if PostgreSQL turns out not to have it');
  void err.fate.then((committed) => {
    if (committed === false) return settle();
    if (committed === true) {
      metrics.compensations.inc({ operation, result: 'committed_after_all' });
      return context.onCommittedAfterAll?.();
    }
    metrics.compensations.inc({ operation, result: 'skipped_unknown_commit' });
    log.error({ operation }, 'commit outcome never learned; Redis decision left for the sweeper and reconciliation');
    return context.onNeverLearned?.();
  }).catch((lateErr: unknown) => {
    // Nobody awaits this chain: a rejection here must be logged, not left to crash the process.
    log.error({ err: lateErr, operation }, 'settling a decision after its commit was learned failed; reconciliation will repair Redis');
  });
}

/**
 * The answer for a failed record (after `compensate`): for an operation PostgreSQL rejected for its own values,
 * 400 when the value was one it cannot store (class 22: validation let it through) and 500 otherwise (a violated
 * constraint or limit is our bug), never with PostgreSQL's words; else 503, saying nothing was applied only when
 * that is known.
 */
export function recordFailed(err: unknown, context: { operation: string; log: Logger }): ProblemError {
  if (err instanceof RecordRejected) {
    const { operation, log } = context;
    if (err.sqlState.startsWith('22')) {
      log.warn({ err, operation }, 'PostgreSQL rejected a value validation let through; answered 400, nothing applied');
      const message = 'contains a value that cannot be stored';
      return new ProblemError('validation_failed', `the request ${message}`, { errors: [{ field: 'body', message }] });
    }
    log.error({ err, operation }, 'PostgreSQL rejected an operation (a bug: validation should have refused it); nothing applied');
    return new ProblemError('internal', undefined, {}, { cause: err });
  }
  return err instanceof RecordError && err.committed === 'unknown'
    ? unavailable(
        'PostgreSQL could not be asked whether the change was recorded; it is taken back if it was not. Retry a ' +
          'reservation with the same Idempotency-Key; check availability before repeating a stock change',
        err,
      )
    : unavailable('PostgreSQL did not record the change; nothing was applied, retry', err);
}
