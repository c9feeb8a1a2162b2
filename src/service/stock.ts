import type { FastifyBaseLogger as Logger } from 'fastify';
import { ProblemError, unavailable } from '../domain/errors.js';
import { toAvailability } from '../domain/reservation.js';
import type { AvailabilityDocument } from '../domain/schemas.js';
import type { Metrics } from '../metrics.js';
import type { Decisions } from '../redis/decisions.js';
import type { StockApi } from './api.js';
import { RecordError, type BatchWriter } from '../store/writer.js';

/** Operator stock changes and availability reads. */
export class StockService implements StockApi {
  constructor(
    private readonly d: { decisions: Decisions; writer: BatchWriter; metrics: Metrics; log: Logger },
  ) {}

  async availability(itemId: string): Promise<AvailabilityDocument> {
    const fields = await this.d.decisions.availability(itemId);
    if (!fields) throw notFound(itemId);
    return toAvailability(itemId, fields);
  }

  set(itemId: string, location: string, quantity: number): Promise<AvailabilityDocument> {
    return this.change(itemId, location, 'set', quantity, null);
  }

  adjust(itemId: string, location: string, delta: number, reason: string | null): Promise<AvailabilityDocument> {
    return this.change(itemId, location, 'adjust', delta, reason);
  }

  private async change(
    itemId: string,
    location: string,
    mode: 'set' | 'adjust',
    amount: number,
    reason: string | null,
  ): Promise<AvailabilityDocument> {
    const decision = await this.d.decisions.changeStock(itemId, location, mode, amount);
    if (decision.kind === 'not_found') throw notFound(itemId, location);
    if (decision.kind === 'stale') throw unavailable('Redis was rebuilt; retry');
    if (decision.kind === 'insufficient') {
      throw new ProblemError('insufficient_stock', `${itemId}@${location}: on hand ${decision.onHand}, delta ${amount}`, {
        lines: [{ itemId, location, requested: -amount, available: decision.onHand }],
      });
    }
    let result;
    try {
      result = await this.d.writer.submit({
        kind: 'stock',
        generation: decision.generation,
        itemId,
        location,
        onHandDelta: decision.onHandDelta,
        movement: mode,
        reason,
      });
    } catch (err) {
      await this.compensate(err, itemId, location, decision);
      throw unavailable('PostgreSQL did not record the change; nothing was applied, retry', err);
    }
    if (result === 'stale') throw unavailable('Redis was rebuilt while the request was in flight; nothing was applied, retry');
    return toAvailability(itemId, decision.fields);
  }

  /**
   * Takes the unrecorded change back out of Redis, removing a location it created; where units since sold make
   * that impossible, reconciliation repairs.
   */
  private async compensate(
    err: unknown,
    itemId: string,
    location: string,
    change: { generation: string; onHandDelta: number; created: boolean },
  ): Promise<void> {
    if (err instanceof RecordError && err.committed === 'unknown') {
      this.d.metrics.compensations.inc({ operation: 'stock', result: 'skipped_unknown_commit' });
      return;
    }
    if (change.onHandDelta === 0 && !change.created) return;
    try {
      const undo = await this.d.decisions.changeStock(itemId, location, 'undo', change.onHandDelta, change);
      this.d.metrics.compensations.inc({ operation: 'stock', result: undo.kind === 'changed' ? 'undone' : 'failed' });
    } catch (undoErr) {
      this.d.metrics.compensations.inc({ operation: 'stock', result: 'failed' });
      this.d.log.error({ err: undoErr, itemId, location }, 'stock compensation failed; reconciliation will repair Redis');
    }
  }
}

const notFound = (itemId: string, location?: string) =>
  new ProblemError('item_not_found', location ? `${itemId} is not stocked at ${location}` : `${itemId} is not stocked`);
