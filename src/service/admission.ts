import { ProblemError } from '../domain/errors.js';
import type { Metrics } from '../metrics.js';
import type { BatchWriter } from '../store/writer.js';

/**
 * What a shed request is told to wait before retrying. A whole second (the header's unit) is about a hundred
 * group-commit batches at saturation: long enough for the backlog to drain, short enough not to idle the node.
 */
export const SHED_RETRY_AFTER_SECONDS = 1;

/**
 * One refusal for every shed request: its answer is always the same, and capturing a stack trace per request was
 * the largest cost of a refusal that must stay far cheaper than the writes it protects (bench/README.md).
 */
const SHED = new ProblemError(
  'unavailable',
  'this node has as many writes in progress as it admits (WRITER_MAX_QUEUE); nothing was applied, retry after Retry-After seconds with the same Idempotency-Key',
  {},
  { retryAfterSeconds: SHED_RETRY_AFTER_SECONDS },
);

/**
 * Runs a write request's `work` (decide, record, answer) if the writer admits one more (a reservation opens new
 * work, and is refused first: BatchWriter.admit); else answers 503 with Retry-After at once, before anything was
 * decided, so the refused request changed nothing and cost almost nothing.
 */
export async function admitted<T>(
  d: { writer: BatchWriter; metrics: Metrics },
  operation: 'reserve' | 'confirm' | 'release' | 'extend' | 'stock',
  work: () => Promise<T>,
): Promise<T> {
  const finish = d.writer.admit(operation === 'reserve' ? 'new' : 'other');
  if (!finish) {
    d.metrics.shed.inc({ operation });
    throw SHED;
  }
  try {
    return await work();
  } finally {
    finish();
  }
}
