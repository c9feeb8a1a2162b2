/**
 * What one group-commit batch writes: the statement (one round trip, committed on its own), its parameters built
 * from the batch's operations, and each operation's result read from its answer. src/store/writer.ts sends it.
 */
import type { Line } from '../domain/reservation.js';
import type { RecordOp, RecordResult } from './record.js';

/** What the batch statement returns, and what `write_batches` keeps of it. */
export interface Outcome {
  /** The fence held: the batch's generation was PostgreSQL's, so its operations were applied (or refused). */
  fenced_in: boolean;
  created: string[] | null;
  moved: string[] | null;
  /** Op ids of the stock changes recorded (one reconciliation has voided is not). */
  stocked: string[] | null;
  /**
   * Events appended, per type (null: none). Only in the statement's own answer: `write_batches` does not keep it,
   * so a batch whose answer was lost and is looked up there counts none.
   */
  appended?: Record<string, number> | null;
}

interface Movement {
  /** Which operation's success lets this row into the ledger. */
  gate: 'reserve' | 'transition' | 'stock';
  itemId: string;
  location: string;
  kind: string;
  onHand: number;
  reserved: number;
  safety: number;
  reservationId: string | null;
  reason: string | null;
  opId: string | null;
}

/**
 * Per operation: stale if decided under another generation than PostgreSQL's, conflict if PostgreSQL refused it
 * (the idempotency key was taken, the reservation was no longer pending, or reconciliation voided the stock
 * change's op id first), else recorded.
 */
export function resultsOf(ops: RecordOp[], generation: string, outcome: Outcome): RecordResult[] {
  const created = new Set(outcome.created ?? []);
  const moved = new Set(outcome.moved ?? []);
  const stocked = new Set(outcome.stocked ?? []);
  return ops.map((op) => {
    if (op.generation !== generation || !outcome.fenced_in) return 'stale';
    if (op.kind === 'reserve' && !created.has(op.reservation.id)) return 'conflict';
    if ((op.kind === 'transition' || op.kind === 'extend') && !moved.has(op.reservationId)) return 'conflict';
    if (op.kind === 'stock' && !stocked.has(op.opId)) return 'conflict';
    return 'recorded';
  });
}

/**
 * A whole batch in one autocommit statement ($1 the generation it was decided under, $2 the batch id).
 *
 * The rebuild fence: `fence` share-locks the generation row only while it still holds the batch's generation, and
 * every write below is gated on it. A rebuild updates that row first (src/jobs/recovery.ts), so it waits for the
 * batches holding the lock; batches arriving meanwhile wait for the rebuild, then re-check the row, find the new
 * generation and write nothing (READ COMMITTED re-evaluates a locked row's condition against its newest version).
 *
 * A reservation's change is recorded with the version and expiry Redis decided it at, and only over an older version:
 * PostgreSQL follows Redis. Its versions then only ever grow; a change Redis decided whose record never came (its node
 * died first, e.g. an extension) is taken up by the next one, which then adds more than one (and brings its expiry). A
 * transition without them (the writer's own tests) adds one and keeps the expiry.
 * A partial confirm's lines take the units each sold (`sold`), only where its transition was recorded.
 * An extension (`extended`) moves a pending reservation's expiry; its id is reported among `moved`. An expiry
 * without a version is recorded only while the row's expiry is not after the one the sweeper read: a recorded
 * extension is never expired by a sweeper that read the reservation before it (with a version, the version says it).
 *
 * A transition names the status it leaves (`from_status`, always 'pending') as a column, not a literal: with the
 * literal, the planner may answer "pending rows with these ids" from the sweeper's partial index of every pending
 * reservation (it did, with statistics older than a flash sale: 33,000 index entries read per batch); with a
 * column it looks each reservation up by primary key. That choice is made per batch, on the tables' current
 * size (plan_cache_mode, src/store/database.ts): a plan cached while they were small would scan them whole.
 *
 * Stock rows are updated in key order, so concurrent batches (on this node or others) never deadlock on them;
 * the ledger keeps every movement while the stock row takes their sum. The sum is taken over the rows the ledger
 * accepted: a stock change whose op id is there already (voided by reconciliation, which took the decision back in
 * Redis for good: src/jobs/reconcile.ts) is skipped, changes nothing, and is answered as a conflict.
 *
 * The outbox (api.md "Events", migrations/010): every change recorded appends its events here, in the same
 * statement, so an event exists if and only if its change committed (a stale batch, a refused operation, a batch
 * that fails or an operation split out of it append nothing).
 * - A reservation's event is gated like its ledger rows (`created`, `moved`, `extended`); its sequence is the
 *   reservation's count of events (`event_sequence`: not its version, which may grow by more than one when a
 *   decision's record never came), its data's `version` the version PostgreSQL recorded (RETURNING), the rest of its
 *   data the document the operation carries (a new reservation's: its 201 answer, stored for replays anyway).
 * - An item's events come from its stock rows after the upsert (RETURNING: PostgreSQL's figures, whatever other
 *   nodes changed), the figures before being those less the batch's deltas: `stock.changed` where on-hand or
 *   safety stock moved or the location is new (the tuple's xmax is 0 only when this statement inserted it),
 *   `availability.depleted` / `restored` where `available` reached or left 0 (never for a new location).
 *   Their sequences come from `event_item_sequences`, whose rows are locked in key order and only once every stock
 *   row is (`item_sequences` waits for the whole of `stocked`): batches wait on items in one order, no deadlock,
 *   and an item's next batch numbers its events only after this one committed.
 * - They are inserted ordered by (subject, sequence), so per subject `seq` follows `sequence` (the sealer orders
 *   by `seq`: src/store/events.ts).
 */
function recordBatch({ events }: { events: boolean }): string {
  return `
WITH fence AS (
  SELECT generation FROM state_generation WHERE generation = $1::bigint FOR SHARE
), idem AS (
  INSERT INTO idempotency_keys (scope, key, request_hash, reservation_id, status_code, response)
  SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::uuid[], $7::smallint[], $8::text[])
  WHERE EXISTS (SELECT FROM fence)
  ON CONFLICT DO NOTHING
  RETURNING reservation_id, response
), created AS (
  INSERT INTO reservations (id, status, reference, metadata, expires_at, created_at, updated_at, tenant, priority, allocation,
    event_sequence)
  SELECT t.id, 'pending', t.reference, t.metadata, t.expires_at, t.created_at, t.created_at, t.tenant, t.priority, t.allocation, 1
  FROM unnest($6::uuid[], $9::text[], $10::jsonb[], $11::timestamptz[], $12::timestamptz[], $30::text[], $33::text[], $34::jsonb[])
    AS t(id, reference, metadata, expires_at, created_at, tenant, priority, allocation)
  WHERE t.id IN (SELECT reservation_id FROM idem)
  RETURNING id, version, event_sequence, created_at
), lines AS (
  INSERT INTO reservation_lines (reservation_id, line_no, item_id, location, quantity)
  SELECT l.id, l.n, l.item_id, l.location, l.quantity
  FROM unnest($13::uuid[], $14::smallint[], $15::text[], $16::text[], $17::int[]) AS l(id, n, item_id, location, quantity)
  WHERE l.id IN (SELECT id FROM created)
), moved AS (
  UPDATE reservations r SET status = t.status, updated_at = t.at, version = coalesce(t.version, r.version + 1),
    expires_at = coalesce(t.expires_at, r.expires_at), event_sequence = r.event_sequence + 1
  FROM unnest($18::uuid[], $19::text[], $20::timestamptz[], $21::text[], $43::int[], $44::timestamptz[], $45::jsonb[])
    AS t(id, status, at, from_status, version, expires_at, document)
  WHERE r.id = t.id AND r.status = t.from_status AND EXISTS (SELECT FROM fence)
    AND (t.version IS NULL OR r.version < t.version)
    AND (t.status <> 'expired' OR t.version IS NOT NULL OR r.expires_at <= t.at)
  RETURNING r.id, r.version, r.event_sequence, t.status, t.at, t.document
), sold AS (
  UPDATE reservation_lines l SET confirmed_quantity = t.confirmed
  FROM unnest($40::uuid[], $41::smallint[], $42::int[]) AS t(id, line_no, confirmed)
  WHERE l.reservation_id = t.id AND l.line_no = t.line_no AND t.id IN (SELECT id FROM moved)
), extended AS (
  UPDATE reservations r SET expires_at = t.expires_at, updated_at = t.at, version = t.version, event_sequence = r.event_sequence + 1
  FROM unnest($35::uuid[], $36::timestamptz[], $37::timestamptz[], $38::int[], $39::text[], $46::jsonb[])
    AS t(id, expires_at, at, version, from_status, document)
  WHERE r.id = t.id AND r.status = t.from_status AND r.version < t.version AND EXISTS (SELECT FROM fence)
  RETURNING r.id, r.version, r.event_sequence, t.at, t.document
), movements AS (
  SELECT m.item_id, m.location, m.kind, m.on_hand_delta, m.reserved_delta, m.reservation_id, m.reason, m.op_id, m.safety_delta
  FROM unnest($22::text[], $23::text[], $24::text[], $25::bigint[], $26::bigint[], $27::uuid[], $28::text[], $29::text[], $31::uuid[],
              $32::bigint[])
    AS m(item_id, location, kind, on_hand_delta, reserved_delta, reservation_id, reason, gate, op_id, safety_delta)
  WHERE (m.gate = 'stock' AND EXISTS (SELECT FROM fence))
     OR (m.gate = 'reserve' AND m.reservation_id IN (SELECT reservation_id FROM idem))
     OR (m.gate = 'transition' AND m.reservation_id IN (SELECT id FROM moved))
), ledger AS (
  INSERT INTO stock_movements (item_id, location, kind, on_hand_delta, reserved_delta, reservation_id, reason, op_id, safety_delta)
  SELECT * FROM movements
  ON CONFLICT (op_id) WHERE op_id IS NOT NULL DO NOTHING
  RETURNING item_id, location, on_hand_delta, reserved_delta, op_id, safety_delta
), deltas AS (
  SELECT item_id, location, sum(on_hand_delta) AS on_hand, sum(reserved_delta) AS reserved, sum(safety_delta) AS safety
  FROM ledger GROUP BY item_id, location
), stocked AS (
  INSERT INTO stock AS s (item_id, location, on_hand, reserved, safety_stock)
  SELECT item_id, location, on_hand, reserved, safety FROM deltas ORDER BY item_id, location
  ON CONFLICT (item_id, location) DO UPDATE
    SET on_hand = s.on_hand + excluded.on_hand, reserved = s.reserved + excluded.reserved,
        safety_stock = s.safety_stock + excluded.safety_stock, updated_at = now()
  RETURNING s.item_id, s.location, s.on_hand, s.reserved, s.safety_stock, s.xmax = 0 AS inserted
${events ? OUTBOX_CTES : ''})
INSERT INTO write_batches (id, fenced_in, created, moved, stocked)
SELECT $2::uuid, EXISTS (SELECT FROM fence), (SELECT array_agg(reservation_id) FROM idem), (SELECT array_agg(id) FROM (SELECT id FROM moved UNION ALL SELECT id FROM extended) AS m),
  (SELECT array_agg(op_id) FROM ledger WHERE op_id IS NOT NULL)
RETURNING fenced_in, created::text[], moved::text[], stocked::text[],
  ${events ? '(SELECT json_object_agg(type, n) FROM (SELECT type, count(*) AS n FROM appended GROUP BY type) AS a)' : 'NULL::json'} AS appended`;
}

/** The outbox's CTEs, after `stocked` (recordBatch's comment says what they append). */
const OUTBOX_CTES = `
), locations AS (
  SELECT s.item_id, s.location, s.on_hand, s.reserved, s.safety_stock, s.inserted,
    d.on_hand <> 0 OR d.safety <> 0 OR s.inserted AS changed,
    greatest(0, s.on_hand - s.reserved - s.safety_stock) AS available,
    greatest(0, (s.on_hand - d.on_hand) - (s.reserved - d.reserved) - (s.safety_stock - d.safety)) AS available_before
  FROM stocked s JOIN deltas d USING (item_id, location)
), item_events AS (
  SELECT l.item_id, e.type,
    row_number() OVER (PARTITION BY l.item_id ORDER BY l.location, e.rank) AS n,
    count(*) OVER (PARTITION BY l.item_id) AS total,
    jsonb_build_object('itemId', l.item_id, 'location', l.location, 'onHand', l.on_hand, 'reserved', l.reserved,
      'safetyStock', l.safety_stock, 'available', l.available, 'availableHighPriority', greatest(0, l.on_hand - l.reserved)) AS data
  FROM locations l CROSS JOIN LATERAL (VALUES
    (0, 'inventory.stock.changed', l.changed),
    (1, 'inventory.availability.depleted', NOT l.inserted AND l.available_before > 0 AND l.available = 0),
    (2, 'inventory.availability.restored', NOT l.inserted AND l.available_before = 0 AND l.available > 0)
  ) AS e(rank, type, due)
  WHERE e.due
), item_sequences AS (
  INSERT INTO event_item_sequences AS q (item_id, sequence)
  SELECT item_id, count(*) FROM item_events
  WHERE (SELECT count(*) FROM stocked) > 0
  GROUP BY item_id ORDER BY item_id
  ON CONFLICT (item_id) DO UPDATE SET sequence = q.sequence + excluded.sequence
  RETURNING item_id, sequence
), appended AS (
  INSERT INTO events (subject, sequence, type, time, data)
  SELECT * FROM (
    SELECT c.id::text, c.event_sequence, 'inventory.reservation.created', c.created_at,
      i.response::jsonb || jsonb_build_object('version', c.version)
    FROM created c JOIN idem i ON i.reservation_id = c.id
    UNION ALL
    SELECT m.id::text, m.event_sequence, 'inventory.reservation.' || m.status, m.at, m.document || jsonb_build_object('version', m.version)
    FROM moved m
    UNION ALL
    SELECT x.id::text, x.event_sequence, 'inventory.reservation.extended', x.at, x.document || jsonb_build_object('version', x.version)
    FROM extended x
    UNION ALL
    SELECT e.item_id, q.sequence - e.total + e.n, e.type, now(), e.data
    FROM item_events e JOIN item_sequences q USING (item_id)
  ) AS e(subject, sequence, type, time, data)
  ORDER BY subject, sequence
  RETURNING type
`;

/** The batch statement: `recordBatch` says what it writes. */
export const RECORD_BATCH = recordBatch({ events: true });

/**
 * RECORD_BATCH without the outbox: the same statement less the CTEs that append events and number items' sequences
 * (`locations` to `appended`; the documents it is sent are null), its `appended` always null. It exists only so that
 * `npm run bench` can measure what the outbox costs against the same service in the same run (bench/server.ts,
 * design `durable-no-outbox`, through BuildOptions.appendEvents). Never a setting: an event exists if and only if
 * its change committed.
 */
export const RECORD_BATCH_WITHOUT_EVENTS = recordBatch({ events: false });

/**
 * RECORD_BATCH's parameters from $3 on: the operations as column arrays. Without events (RECORD_BATCH_WITHOUT_EVENTS)
 * the documents, which only events carry, are not sent.
 */
export function batchValues(ops: RecordOp[], { events }: { events: boolean } = { events: true }): unknown[] {
  const reserves = ops.filter((op) => op.kind === 'reserve');
  const transitions = ops
    .filter((op) => op.kind === 'transition')
    .sort((a, b) => (a.reservationId < b.reservationId ? -1 : a.reservationId > b.reservationId ? 1 : 0));
  const extensions = ops
    .filter((op) => op.kind === 'extend')
    .sort((a, b) => (a.reservationId < b.reservationId ? -1 : a.reservationId > b.reservationId ? 1 : 0));
  const lines = reserves.flatMap((r) => r.reservation.lines.map((l, n) => ({ id: r.reservation.id, n, ...l })));
  // A partial confirm's lines: what each sold (a line's number is its index, as created).
  const partialLines = transitions.flatMap((t) =>
    t.lines.flatMap((l, n) => (l.confirmedQuantity === undefined ? [] : [{ id: t.reservationId, n, confirmedQuantity: l.confirmedQuantity }])),
  );
  const movements = ops.flatMap(movementsOf);
  return [
    reserves.map((r) => r.idempotency.scope),
    reserves.map((r) => r.idempotency.key),
    reserves.map((r) => r.idempotency.requestHash),
    reserves.map((r) => r.reservation.id),
    reserves.map((r) => r.idempotency.statusCode),
    reserves.map((r) => JSON.stringify(r.idempotency.response)),
    reserves.map((r) => r.reservation.reference),
    reserves.map((r) => JSON.stringify(r.reservation.metadata)),
    reserves.map((r) => r.reservation.expiresAt),
    reserves.map((r) => r.reservation.createdAt),
    lines.map((l) => l.id),
    lines.map((l) => l.n),
    lines.map((l) => l.itemId),
    lines.map((l) => l.location),
    lines.map((l) => l.quantity),
    transitions.map((t) => t.reservationId),
    transitions.map((t) => t.to),
    transitions.map((t) => t.at),
    transitions.map(() => 'pending'),
    movements.map((m) => m.itemId),
    movements.map((m) => m.location),
    movements.map((m) => m.kind),
    movements.map((m) => m.onHand),
    movements.map((m) => m.reserved),
    movements.map((m) => m.reservationId),
    movements.map((m) => m.reason),
    movements.map((m) => m.gate),
    // $30 on, last so the earlier parameters keep their numbers.
    reserves.map((r) => r.reservation.tenant),
    movements.map((m) => m.opId),
    movements.map((m) => m.safety),
    reserves.map((r) => r.reservation.priority),
    reserves.map((r) => (r.reservation.allocation ? JSON.stringify(r.reservation.allocation) : null)),
    extensions.map((e) => e.reservationId),
    extensions.map((e) => e.expiresAt),
    extensions.map((e) => e.at),
    extensions.map((e) => e.version),
    extensions.map(() => 'pending'),
    partialLines.map((l) => l.id),
    partialLines.map((l) => l.n),
    partialLines.map((l) => l.confirmedQuantity),
    transitions.map((t) => t.version ?? null),
    transitions.map((t) => t.expiresAt ?? null),
    transitions.map((t) => (events ? JSON.stringify(t.document) : null)),
    extensions.map((e) => (events ? JSON.stringify(e.document) : null)),
  ];
}

/** The ledger rows an operation adds: what PostgreSQL's on-hand and reserved change by. */
function movementsOf(op: RecordOp): Movement[] {
  switch (op.kind) {
    case 'stock':
      return [
        {
          gate: 'stock',
          itemId: op.itemId,
          location: op.location,
          kind: op.movement,
          onHand: op.onHandDelta,
          reserved: 0,
          safety: op.safetyDelta ?? 0,
          reservationId: null,
          reason: op.reason,
          opId: op.opId,
        },
      ];
    case 'reserve':
      return op.reservation.lines.map((l) => ({
        gate: 'reserve' as const,
        itemId: l.itemId,
        location: l.location,
        kind: 'reserve',
        onHand: 0,
        reserved: l.quantity,
        safety: 0,
        reservationId: op.reservation.id,
        reason: null,
        opId: null,
      }));
    case 'extend':
      return [];
    case 'transition': {
      const row = (l: Line, kind: string, onHand: number, reserved: number): Movement => ({
        gate: 'transition',
        itemId: l.itemId,
        location: l.location,
        kind,
        onHand,
        reserved,
        safety: 0,
        reservationId: op.reservationId,
        reason: null,
        opId: null,
      });
      if (op.to !== 'confirmed') return op.lines.map((l) => row(l, op.to === 'released' ? 'release' : 'expire', 0, -l.quantity));
      // A confirm sells `confirmedQuantity` of a line (a partial confirm) or all of it; the rest is a release.
      return op.lines.flatMap((l) => {
        const sold = l.confirmedQuantity ?? l.quantity;
        const rows: Movement[] = [];
        if (sold > 0) rows.push(row(l, 'confirm', -sold, -sold));
        if (sold < l.quantity) rows.push(row(l, 'release', 0, sold - l.quantity));
        return rows;
      });
    }
  }
}
