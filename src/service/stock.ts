import type { FastifyBaseLogger as Logger } from 'fastify';
import { ProblemError, unavailable } from '../domain/errors.js';
import { toAvailability } from '../domain/reservation.js';
import type { AvailabilityDocument } from '../domain/schemas.js';
import type { Metrics } from '../metrics.js';
import type { Decisions, ItemStock } from '../redis/decisions.js';
import type { StockApi } from './api.js';
import type { BatchWriter } from '../store/writer.js';
import { admitted } from './admission.js';
import { compensate, recordFailed } from './compensation.js';

/** Operator stock changes and availability reads. */
export class StockService implements StockApi {
  constructor(
    private readonly d: { decisions: Decisions; writer: BatchWriter; metrics: Metrics; log: Logger },
  ) {}

  async availability(itemId: string): Promise<AvailabilityDocument> {
    const stock = await this.d.decisions.availability(itemId);
    const document = stock && toAvailability(itemId, stock);
    if (!document) throw notFound(itemId);
    return document;
  }

  set(itemId: string, location: string, quantity: number): Promise<AvailabilityDocument> {
    return admitted(this.d, 'stock', () => this.change(itemId, location, 'set', quantity, null));
  }

  adjust(itemId: string, location: string, delta: number, reason: string | null): Promise<AvailabilityDocument> {
    return admitted(this.d, 'stock', () => this.change(itemId, location, 'adjust', delta, reason));
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
      throw recordFailed(err, { operation: 'stock', log: this.d.log });
    }
    if (result === 'stale') throw unavailable('Redis was rebuilt while the request was in flight; nothing was applied, retry');
    const stock = decision.pending ? await this.applyRecorded(itemId, location, decision) : decision.stock;
    return toAvailability(itemId, stock) ?? emptyAvailability(itemId);
  }

  /**
   * Makes a recorded increase available. It is durable already: if Redis fails now, the answer stays 200 and the
   * units are missing from Redis (never extra) until reconciliation repairs it.
   */
  private async applyRecorded(
    itemId: string,
    location: string,
    decision: { generation: string; onHandDelta: number; created: boolean; stock: ItemStock },
  ): Promise<ItemStock> {
    try {
      const applied = await this.d.decisions.changeStock(itemId, location, 'apply', decision.onHandDelta, decision);
      if (applied.kind === 'changed') return applied.stock;
      // Rebuilt since the decision: the rebuild read the committed increase from PostgreSQL.
      return (await this.d.decisions.availability(itemId)) ?? decision.stock;
    } catch (err) {
      this.d.metrics.compensations.inc({ operation: 'stock', result: 'apply_failed' });
      this.d.log.error({ err, itemId, location }, 'recorded stock increase not applied in Redis; reconcile --repair restores it');
      return withOnHand(decision.stock, location, decision.onHandDelta);
    }
  }

  /**
   * Takes the unrecorded change back out of Redis, removing a location it created; where units since sold make
   * that impossible, reconciliation repairs.
   */
  private async compensate(
    err: unknown,
    itemId: string,
    location: string,
    change: { generation: string; onHandDelta: number; created: boolean; pending: boolean; stock: ItemStock },
  ): Promise<void> {
    if (change.onHandDelta === 0 && !change.created) return;
    const mode = change.pending ? 'abandon' : 'undo';
    const undo = async () => {
      const undone = await this.d.decisions.changeStock(itemId, location, mode, change.onHandDelta, change);
      if (undone.kind === 'insufficient' || undone.kind === 'not_found') throw new Error(`stock undo: ${undone.kind} (units since sold)`);
      return undone.kind === 'changed'; // stale: rebuilt from PostgreSQL, which never had the change
    };
    // A pending increase that PostgreSQL turns out to have recorded is made available, as after a clean commit.
    const onCommittedAfterAll = change.pending ? () => this.applyRecorded(itemId, location, change) : undefined;
    await compensate(err, undo, { operation: 'stock', metrics: this.d.metrics, log: this.d.log, onCommittedAfterAll });
  }
}

const notFound = (itemId: string, location?: string) =>
  new ProblemError('item_not_found', location ? `${itemId} is not stocked at ${location}` : `${itemId} is not stocked`);

const emptyAvailability = (itemId: string): AvailabilityDocument => ({ itemId, onHand: 0, reserved: 0, available: 0, locations: [] });

/** `stock` with `delta` added to the location's on-hand (the answer when Redis could not be told). */
function withOnHand(stock: ItemStock, location: string, delta: number): ItemStock {
  const out = new Map(stock);
  const figures = out.get(location);
  if (figures?.onHand != null) out.set(location, { ...figures, onHand: figures.onHand + delta });
  else out.set(location, { pending: null, ...figures, onHand: delta, reserved: 0 });
  return out;
}
