import type { FastifyBaseLogger as Logger } from 'fastify';
import { ProblemError, unavailable } from '../domain/errors.js';
import { newId } from '../domain/ids.js';
import { toAvailability } from '../domain/reservation.js';
import type { AvailabilityDocument } from '../domain/schemas.js';
import type { Metrics } from '../metrics.js';
import type { Decisions, ItemStock, StockDecision } from '../redis/decisions.js';
import { emptyLocation } from '../redis/layout.js';
import type { StockApi } from './api.js';
import type { BatchWriter } from '../store/writer.js';
import { admitted } from './admission.js';
import { compensate, recordFailed } from './compensation.js';

/** Operator stock changes and availability reads. */
export class StockService implements StockApi {
  constructor(
    private readonly d: {
      decisions: Decisions;
      writer: BatchWriter;
      metrics: Metrics;
      log: Logger;
      /** This process's node id (src/jobs/node-lease.ts): each decision's intent names it. */
      nodeId: string;
    },
  ) {}

  async availability(itemId: string): Promise<AvailabilityDocument> {
    const stock = await this.d.decisions.availability(itemId);
    const document = stock && toAvailability(itemId, stock);
    if (!document) throw notFound(itemId);
    return document;
  }

  set(itemId: string, location: string, quantity: number, safetyStock?: number): Promise<AvailabilityDocument> {
    return admitted(this.d, 'stock', () => this.change(itemId, location, 'set', quantity, null, safetyStock));
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
    safetyStock?: number,
  ): Promise<AvailabilityDocument> {
    const opId = newId();
    // One decision for both figures: reservations see the on-hand and the safety stock change together or not at all.
    const decided = await this.d.decisions.changeStock(itemId, location, mode, amount, { opId, nodeId: this.d.nodeId }, safetyStock);
    if (decided.kind === 'not_found') throw notFound(itemId, location);
    if (decided.kind === 'stale') throw unavailable('Redis was rebuilt; retry');
    if (decided.kind === 'insufficient') {
      throw new ProblemError('insufficient_stock', `${itemId}@${location}: on hand ${decided.onHand}, delta ${amount}`, {
        lines: [{ itemId, location, requested: -amount, available: decided.onHand }],
      });
    }
    const decision: Decided = { ...decided, opId };
    let result;
    try {
      result = await this.d.writer.submit({
        kind: 'stock',
        generation: decision.generation,
        itemId,
        location,
        onHandDelta: decision.onHandDelta,
        safetyDelta: decision.safetyDelta,
        movement: onlySafety(decision) ? 'safety' : mode,
        reason,
        opId,
      });
    } catch (err) {
      await this.compensate(err, itemId, location, decision);
      throw recordFailed(err, { operation: 'stock', log: this.d.log });
    }
    if (result === 'stale') throw unavailable('Redis was rebuilt while the request was in flight; nothing was applied, retry');
    if (result === 'conflict') {
      // Reconciliation took this node for dead and took the decision back (a void in the ledger): never recorded.
      throw unavailable('the change was taken back before it was recorded; nothing was applied, retry');
    }
    const stock = await this.endRecorded(itemId, location, decision);
    return toAvailability(itemId, stock) ?? emptyAvailability(itemId);
  }

  /**
   * Ends a recorded decision's intent: an increase becomes available (on-hand supply; a safety stock decrease stops
   * being enforced), a decrease stands. It is durable already: if Redis fails now, the answer stays 200, and
   * reconciliation ends the intent (Redis offers fewer units until then, never more).
   */
  private async endRecorded(itemId: string, location: string, decision: Decided): Promise<ItemStock> {
    if (!decision.intent) return decision.stock;
    try {
      const ended = await this.d.decisions.endStockChange(itemId, decision.pending ? 'apply' : 'settle', decision.opId, decision);
      if (ended.kind === 'changed') return ended.stock;
      // Ended by reconciliation already, or rebuilt since: either way Redis has the recorded change.
      return awaitsEnd(decision) ? ((await this.d.decisions.availability(itemId)) ?? decision.stock) : decision.stock;
    } catch (err) {
      if (!awaitsEnd(decision)) {
        this.d.log.warn({ err, itemId, location }, 'recorded stock decrease not settled in Redis; reconciliation drops its intent');
        return decision.stock;
      }
      this.d.metrics.compensations.inc({ operation: 'stock', result: 'apply_failed' });
      this.d.log.error({ err, itemId, location }, 'recorded stock change not applied in Redis; reconciliation applies it');
      return asRecorded(decision.stock, location, decision);
    }
  }

  /**
   * Takes the unrecorded change back out of Redis (abandons an increase, undoes a decrease; drops a safety stock
   * decrease, takes a safety stock increase back), removing a location it created. A change PostgreSQL turns out to have recorded after all is ended as after a clean commit.
   */
  private async compensate(err: unknown, itemId: string, location: string, decision: Decided): Promise<void> {
    if (!decision.intent) return;
    const undo = async () => {
      const undone = await this.d.decisions.endStockChange(itemId, decision.pending ? 'abandon' : 'undo', decision.opId, decision);
      return undone.kind === 'changed'; // already: reconciliation took it back; stale: rebuilt from PostgreSQL, which never had it
    };
    const onCommittedAfterAll = () => this.endRecorded(itemId, location, decision);
    await compensate(err, undo, { operation: 'stock', metrics: this.d.metrics, log: this.d.log, onCommittedAfterAll });
  }
}

/** A stock decision and its op id. */
type Decided = Extract<StockDecision, { kind: 'changed' }> & { opId: string };

const notFound = (itemId: string, location?: string) =>
  new ProblemError('item_not_found', location ? `${itemId} is not stocked at ${location}` : `${itemId} is not stocked`);

const emptyAvailability = (itemId: string): AvailabilityDocument => ({
  itemId,
  onHand: 0,
  reserved: 0,
  safetyStock: 0,
  available: 0,
  availableHighPriority: 0,
  locations: [],
});

/** A set that changed the safety stock alone: its ledger row says so. */
const onlySafety = (d: Decided) => d.onHandDelta === 0 && d.safetyDelta !== 0 && !d.created;

/** Part of the decision waits for its end to take effect: an on-hand increase, or a safety stock decrease. */
const awaitsEnd = (d: Decided) => d.pending || d.safetyDelta < 0;

/** `stock` as it is once the decision's waiting parts take effect (the answer when Redis could not be told). */
function asRecorded(stock: ItemStock, location: string, d: Decided): ItemStock {
  const out = new Map(stock);
  const figures = { ...emptyLocation(), reserved: 0, ...out.get(location) };
  if (d.pending) figures.onHand = (figures.onHand ?? 0) + d.onHandDelta;
  if (d.safetyDelta < 0) figures.safety = Math.max(0, (figures.safety ?? 0) + d.safetyDelta);
  out.set(location, figures);
  return out;
}
