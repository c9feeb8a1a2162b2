import type { Line, ReservationRecord } from '../domain/reservation.js';

// What the group-commit writer (./writer.ts) is asked to record and answers, and what the batch statement
// (./batch-statement.ts) writes and reads back: one module both import.

export type Transition = 'confirmed' | 'released' | 'expired';

/** What one request asks PostgreSQL to record. `generation` is the Redis state generation it was decided under. */
export type RecordOp =
  | {
      kind: 'reserve';
      generation: string;
      reservation: ReservationRecord;
      idempotency: { scope: string; key: string; requestHash: string; statusCode: number; response: unknown };
    }
  | {
      kind: 'transition';
      generation: string;
      reservationId: string;
      to: Transition;
      at: Date;
      lines: readonly Line[];
      /** The version and expiry Redis decided it at (batch-statement.ts); absent: the next version, the expiry kept. */
      version?: number;
      expiresAt?: Date;
    }
  /** A pending reservation's new expiry, recorded only while it is pending at a version below `version`. */
  | { kind: 'extend'; generation: string; reservationId: string; expiresAt: Date; at: Date; version: number }
  | {
      kind: 'stock';
      generation: string;
      itemId: string;
      location: string;
      onHandDelta: number;
      /** The safety stock change (a set only; absent: 0). */
      safetyDelta?: number;
      /** 'safety': a set that changed only the safety stock. */
      movement: 'set' | 'adjust' | 'safety';
      reason: string | null;
      /** The decision's op id (its intent in Redis): the ledger row carries it, and it is recorded at most once. */
      opId: string;
    };

/**
 * - recorded: committed.
 * - conflict: not applied because PostgreSQL already had the final word (the idempotency key was taken, the
 *   reservation was no longer pending, or reconciliation had voided the stock change's op id).
 * - stale: not applied because Redis was rebuilt after the decision (the fence).
 */
export type RecordResult = 'recorded' | 'conflict' | 'stale';
