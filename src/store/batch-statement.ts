/**
 * What one group-commit batch writes: the statement (one round trip, committed on its own), its parameters built
 * from the batch's operations, and each operation's result read from its answer. src/store/writer.ts sends it.
 */
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

/** A ledger row as the batch statement reads it ($6), keys named as its columns. */
interface Movement {
  /** Which operation's success lets this row into the ledger. */
  gate: 'reserve' | 'transition' | 'stock';
  item_id: string;
  location: string;
  kind: string;
  on_hand_delta: number;
  reserved_delta: number;
  safety_delta: number;
  reservation_id: string | null;
  reason: string | null;
  op_id: string | null;
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
 * Stock rows are locked last (`recorded` makes `stocked` wait for every other write but the item events): their locks
 * are held until the commit, and a batch on the same SKU waits for them, so the less comes after them the less
 * batches queue (a flash sale: every batch updates one row). They are updated in key order, so concurrent batches
 * (on this node or others) never deadlock on them;
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
 * - A reservation's events are inserted before the stock rows are locked, an item's after; each insert is ordered by
 *   (subject, sequence) and no subject is in both, so per subject `seq` follows `sequence` (the sealer orders by
 *   `seq`: src/store/events.ts).
 * - Every event appended is queued for the sealer (`queued`, migrations/011), which gives it its feed position.
 *
 * A new reservation's rows (the reservation, its lines, its event) are gated on the rows written before them with
 * `(id IN (SELECT …)) IS TRUE`, which PostgreSQL keeps as a hashed subplan, linear in the batch. A plain `IN` becomes
 * a semi-join, and on the writer's sessions, which may not hash-join (src/store/database.ts), a nested loop: three of
 * them, quadratic in a batch's reservations (a batch of 300: 90,000 comparisons each). A new reservation is at
 * version 1 and its event at sequence 1, written so here rather than read back from the insert.
 */
function recordBatch({ events }: { events: boolean }): string {
  return `
WITH fence AS (
  SELECT generation FROM state_generation WHERE generation = $1::bigint FOR SHARE
), reserves AS MATERIALIZED (
  SELECT * FROM json_to_recordset($3::json) AS t(scope text, key text, request_hash text, id uuid, status_code smallint,
    response json, reference text, metadata jsonb, expires_at timestamptz, created_at timestamptz, tenant text, priority text,
    allocation jsonb)
), idem AS (
  INSERT INTO idempotency_keys (scope, key, request_hash, reservation_id, status_code, response)
  SELECT scope, key, request_hash, id, status_code, response::text FROM reserves
  WHERE EXISTS (SELECT FROM fence)
  ON CONFLICT DO NOTHING
  RETURNING reservation_id
), created AS (
  INSERT INTO reservations (id, status, reference, metadata, expires_at, created_at, updated_at, tenant, priority, allocation,
    version, event_sequence)
  SELECT t.id, 'pending', t.reference, t.metadata, t.expires_at, t.created_at, t.created_at, t.tenant, t.priority, t.allocation, 1, 1
  FROM reserves t
  WHERE (t.id IN (SELECT reservation_id FROM idem)) IS TRUE -- a hashed subplan, not a join (recordBatch says why)
  RETURNING id
), lines AS (
  INSERT INTO reservation_lines (reservation_id, line_no, item_id, location, quantity)
  SELECT l.id, l.n, l.item_id, l.location, l.quantity
  FROM json_to_recordset($4::json) AS l(id uuid, n smallint, item_id text, location text, quantity int)
  WHERE (l.id IN (SELECT id FROM created)) IS TRUE
  RETURNING reservation_id
), moved AS (
  UPDATE reservations r SET status = t.status, updated_at = t.at, version = coalesce(t.version, r.version + 1),
    expires_at = coalesce(t.expires_at, r.expires_at), event_sequence = r.event_sequence + 1
  FROM json_to_recordset($5::json)
    AS t(id uuid, status text, at timestamptz, from_status text, version int, expires_at timestamptz, document jsonb)
  WHERE r.id = t.id AND r.status = t.from_status AND EXISTS (SELECT FROM fence)
    AND (t.version IS NULL OR r.version < t.version)
    AND (t.status <> 'expired' OR t.version IS NOT NULL OR r.expires_at <= t.at)
  RETURNING r.id, r.version, r.event_sequence, t.status, t.at, t.document
), sold AS (
  UPDATE reservation_lines l SET confirmed_quantity = t.confirmed
  FROM json_to_recordset($8::json) AS t(id uuid, line_no smallint, confirmed int)
  WHERE l.reservation_id = t.id AND l.line_no = t.line_no AND t.id IN (SELECT id FROM moved)
  RETURNING l.reservation_id
), extended AS (
  UPDATE reservations r SET expires_at = t.expires_at, updated_at = t.at, version = t.version, event_sequence = r.event_sequence + 1
  FROM json_to_recordset($7::json)
    AS t(id uuid, expires_at timestamptz, at timestamptz, version int, from_status text, document jsonb)
  WHERE r.id = t.id AND r.status = t.from_status AND r.version < t.version AND EXISTS (SELECT FROM fence)
  RETURNING r.id, r.version, r.event_sequence, t.at, t.document
), movements AS (
  SELECT m.item_id, m.location, m.kind, m.on_hand_delta, m.reserved_delta, m.reservation_id, m.reason, m.op_id, m.safety_delta
  FROM json_to_recordset($6::json)
    AS m(item_id text, location text, kind text, on_hand_delta bigint, reserved_delta bigint, reservation_id uuid, reason text,
         gate text, op_id uuid, safety_delta bigint)
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
${events ? RESERVATION_EVENTS : ''}), recorded AS MATERIALIZED (
  SELECT (SELECT count(*) FROM lines) + (SELECT count(*) FROM sold)${events ? ' + (SELECT count(*) FROM reservation_events)' : ''} AS n
), stocked AS (
  INSERT INTO stock AS s (item_id, location, on_hand, reserved, safety_stock)
  SELECT item_id, location, on_hand, reserved, safety FROM deltas
  WHERE (SELECT n FROM recorded) IS NOT NULL -- read (so written) before the first stock row: a condition, never false
  ORDER BY item_id, location
  ON CONFLICT (item_id, location) DO UPDATE
    SET on_hand = s.on_hand + excluded.on_hand, reserved = s.reserved + excluded.reserved,
        safety_stock = s.safety_stock + excluded.safety_stock, updated_at = now()
  RETURNING s.item_id, s.location, s.on_hand, s.reserved, s.safety_stock, s.xmax = 0 AS inserted
${events ? ITEM_EVENTS : ''})
INSERT INTO write_batches (id, fenced_in, created, moved, stocked)
SELECT $2::uuid, EXISTS (SELECT FROM fence), (SELECT array_agg(reservation_id) FROM idem), (SELECT array_agg(id) FROM (SELECT id FROM moved UNION ALL SELECT id FROM extended) AS m),
  (SELECT array_agg(op_id) FROM ledger WHERE op_id IS NOT NULL)
RETURNING fenced_in, created::text[], moved::text[], stocked::text[],
  ${events ? '(SELECT json_object_agg(type, n) FROM (SELECT type, count(*) AS n FROM appended GROUP BY type) AS a)' : 'NULL::json'} AS appended`;
}

/** The outbox's reservation events, before `stocked` (recordBatch's comment says what they append, and why there). */
const RESERVATION_EVENTS = `
), reservation_events AS (
  INSERT INTO events (subject, sequence, type, time, data)
  SELECT * FROM (
    SELECT t.id::text, 1, 'inventory.reservation.created', t.created_at, t.response::jsonb || jsonb_build_object('version', 1)
    FROM reserves t
    WHERE (t.id IN (SELECT id FROM created)) IS TRUE
    UNION ALL
    SELECT m.id::text, m.event_sequence, 'inventory.reservation.' || m.status, m.at, m.document || jsonb_build_object('version', m.version)
    FROM moved m
    UNION ALL
    SELECT x.id::text, x.event_sequence, 'inventory.reservation.extended', x.at, x.document || jsonb_build_object('version', x.version)
    FROM extended x
  ) AS e(subject, sequence, type, time, data)
  ORDER BY subject, sequence
  RETURNING seq, type
`;

/** The outbox's item events, after `stocked` (recordBatch's comment says what they append). */
const ITEM_EVENTS = `
), paired AS (
  -- Each stock row after the upsert beside its deltas, paired by grouping, not a join: the writer's sessions may
  -- not hash-join (src/store/database.ts), and a nested loop over two CTEs grew with the square of a batch's
  -- locations (a batch of 300 carts: 1,121 locations, 1.3 million comparisons, 145 of its 230 ms).
  SELECT item_id, location, max(on_hand) AS on_hand, max(reserved) AS reserved, max(safety_stock) AS safety_stock,
    bool_or(inserted) AS inserted, max(d_on_hand) AS d_on_hand, max(d_reserved) AS d_reserved, max(d_safety) AS d_safety
  FROM (
    SELECT item_id, location, on_hand, reserved, safety_stock, inserted, NULL::bigint, NULL::bigint, NULL::bigint FROM stocked
    UNION ALL
    SELECT item_id, location, NULL, NULL, NULL, NULL, on_hand, reserved, safety FROM deltas
  ) AS u (item_id, location, on_hand, reserved, safety_stock, inserted, d_on_hand, d_reserved, d_safety)
  GROUP BY item_id, location
), locations AS (
  SELECT item_id, location, on_hand, reserved, safety_stock, inserted,
    d_on_hand <> 0 OR d_safety <> 0 OR inserted AS changed,
    greatest(0, on_hand - reserved - safety_stock) AS available,
    greatest(0, (on_hand - d_on_hand) - (reserved - d_reserved) - (safety_stock - d_safety)) AS available_before
  FROM paired
  WHERE inserted IS NOT NULL -- a location stocked wrote: each location of deltas is
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
), item_events_appended AS (
  INSERT INTO events (subject, sequence, type, time, data)
  SELECT e.item_id, q.sequence - e.total + e.n, e.type, now(), e.data
  FROM item_events e JOIN item_sequences q USING (item_id)
  ORDER BY 1, 2
  RETURNING seq, type
), appended AS (
  SELECT seq, type FROM reservation_events UNION ALL SELECT seq, type FROM item_events_appended
), queued AS (
  INSERT INTO unsealed_events (seq) SELECT seq FROM appended
`;

/** The batch statement: `recordBatch` says what it writes. */
export const RECORD_BATCH = recordBatch({ events: true });

/**
 * RECORD_BATCH without the outbox: the same statement less the CTEs that append events and number items' sequences
 * (`reservation_events`, and `locations` to `appended`; the documents it is sent are null), its `appended` always null. It exists only so that
 * `npm run bench` can measure what the outbox costs against the same service in the same run (bench/server.ts,
 * design `durable-no-outbox`, through BuildOptions.appendEvents). Never a setting: an event exists if and only if
 * its change committed.
 */
export const RECORD_BATCH_WITHOUT_EVENTS = recordBatch({ events: false });

/**
 * RECORD_BATCH's parameters from $3 on: each kind of row as one JSON array of objects ($3 reservations, $4 their
 * lines, $5 transitions, $6 ledger rows, $7 extensions, $8 partial confirms' lines), read by json_to_recordset. One
 * JSON.stringify each: arrays of text, one per column, cost the service about 10 µs and 10 KiB a request to encode
 * (issue 15). A new reservation's answer goes in as it is (a json value keeps its text exactly: the replay's bytes).
 * Without events (RECORD_BATCH_WITHOUT_EVENTS) the documents, which only events carry, are not sent.
 */
export function batchValues(ops: RecordOp[], { events }: { events: boolean } = { events: true }): string[] {
  const reserves: object[] = [];
  const lines: object[] = [];
  const transitions: Extract<RecordOp, { kind: 'transition' }>[] = [];
  const extensions: Extract<RecordOp, { kind: 'extend' }>[] = [];
  const movements: Movement[] = [];
  for (const op of ops) {
    if (op.kind === 'reserve') {
      const { reservation: r, idempotency: i } = op;
      reserves.push({
        scope: i.scope,
        key: i.key,
        request_hash: i.requestHash,
        id: r.id,
        status_code: i.statusCode,
        response: i.response,
        reference: r.reference,
        metadata: r.metadata,
        expires_at: r.expiresAt,
        created_at: r.createdAt,
        tenant: r.tenant,
        priority: r.priority,
        allocation: r.allocation,
      });
      r.lines.forEach((l, n) => lines.push({ id: r.id, n, item_id: l.itemId, location: l.location, quantity: l.quantity }));
    } else if (op.kind === 'transition') transitions.push(op);
    else if (op.kind === 'extend') extensions.push(op);
    movementsOf(op, movements);
  }
  // Reservations in id order: concurrent batches lock their rows in one order.
  const byId = (a: { reservationId: string }, b: { reservationId: string }) =>
    a.reservationId < b.reservationId ? -1 : a.reservationId > b.reservationId ? 1 : 0;
  transitions.sort(byId);
  extensions.sort(byId);
  // A partial confirm's lines: what each sold (a line's number is its index, as created).
  const partialLines = transitions.flatMap((t) =>
    t.lines.flatMap((l, n) => (l.confirmedQuantity === undefined ? [] : [{ id: t.reservationId, line_no: n, confirmed: l.confirmedQuantity }])),
  );
  return [
    JSON.stringify(reserves),
    JSON.stringify(lines),
    JSON.stringify(
      transitions.map((t) => ({
        id: t.reservationId,
        status: t.to,
        at: t.at,
        from_status: 'pending',
        version: t.version ?? null,
        expires_at: t.expiresAt ?? null,
        document: events ? t.document : null,
      })),
    ),
    JSON.stringify(movements),
    JSON.stringify(
      extensions.map((e) => ({
        id: e.reservationId,
        expires_at: e.expiresAt,
        at: e.at,
        version: e.version,
        from_status: 'pending',
        document: events ? e.document : null,
      })),
    ),
    JSON.stringify(partialLines),
  ];
}

/** Adds the ledger rows of `op` to `into`: what PostgreSQL's on-hand and reserved change by. */
function movementsOf(op: RecordOp, into: Movement[]): void {
  const row = (gate: Movement['gate'], l: { itemId: string; location: string }, kind: string, onHand: number, reserved: number, reservationId: string) =>
    into.push({
      gate,
      item_id: l.itemId,
      location: l.location,
      kind,
      on_hand_delta: onHand,
      reserved_delta: reserved,
      safety_delta: 0,
      reservation_id: reservationId,
      reason: null,
      op_id: null,
    });
  switch (op.kind) {
    case 'stock':
      into.push({
        gate: 'stock',
        item_id: op.itemId,
        location: op.location,
        kind: op.movement,
        on_hand_delta: op.onHandDelta,
        reserved_delta: 0,
        safety_delta: op.safetyDelta ?? 0,
        reservation_id: null,
        reason: op.reason,
        op_id: op.opId,
      });
      return;
    case 'reserve':
      for (const l of op.reservation.lines) row('reserve', l, 'reserve', 0, l.quantity, op.reservation.id);
      return;
    case 'extend':
      return;
    case 'transition':
      for (const l of op.lines) {
        if (op.to !== 'confirmed') {
          row('transition', l, op.to === 'released' ? 'release' : 'expire', 0, -l.quantity, op.reservationId);
          continue;
        }
        // A confirm sells `confirmedQuantity` of a line (a partial confirm) or all of it; the rest is a release.
        const sold = l.confirmedQuantity ?? l.quantity;
        if (sold > 0) row('transition', l, 'confirm', -sold, -sold, op.reservationId);
        if (sold < l.quantity) row('transition', l, 'release', 0, sold - l.quantity, op.reservationId);
      }
      return;
  }
}
