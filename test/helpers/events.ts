import type pg from 'pg';
import { Errors } from 'typebox/schema';
import { expect } from 'vitest';
import { asyncApiDocument } from '../../src/events/asyncapi.js';
import { EVENT_TYPES } from '../../src/events/types.js';

/**
 * The outbox as the tests read and write it: straight from the `events` table (each event's position from `event_feed`), with this module's own SQL (never through
 * src/store, which is what is being checked), and the checks every events test applies.
 */

export interface StoredEvent {
  seq: number;
  id: string;
  subject: string;
  sequence: number;
  type: string;
  time: Date;
  data: Record<string, unknown>;
  position: number | null;
}

/** A subject's events, in sequence order. */
export async function eventsOf(db: pg.Pool, subject: string): Promise<StoredEvent[]> {
  const { rows } = await db.query<StoredEvent>(
    `SELECT e.seq, e.id, e.subject, e.sequence, e.type, e.time, e.data, f.position
     FROM events e LEFT JOIN event_feed f USING (seq) WHERE e.subject = $1 ORDER BY e.sequence`,
    [subject],
  );
  return rows;
}

/** The types of a subject's events, in sequence order (short: without the `inventory.` prefix). */
export async function typesOf(db: pg.Pool, subject: string): Promise<string[]> {
  return (await eventsOf(db, subject)).map((e) => e.type.replace(/^inventory\./, ''));
}

export async function allEvents(db: pg.Pool): Promise<StoredEvent[]> {
  const { rows } = await db.query<StoredEvent>(
    `SELECT e.seq, e.id, e.subject, e.sequence, e.type, e.time, e.data, f.position
     FROM events e LEFT JOIN event_feed f USING (seq) ORDER BY e.seq`,
  );
  return rows;
}

/** Each message's payload schema in the served AsyncAPI document, its references resolved, by event type. */
function payloadSchemas(): Map<string, unknown> {
  const document = asyncApiDocument({ source: 'test' }) as {
    components: { messages: Record<string, { name: string; payload: unknown }> };
  };
  const resolve = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(resolve);
    if (node === null || typeof node !== 'object') return node;
    const { $ref } = node as { $ref?: string };
    if (typeof $ref === 'string') {
      const target = $ref.slice(2).split('/').reduce<unknown>((at, key) => (at as Record<string, unknown>)[key], document);
      return resolve(target);
    }
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, resolve(v)]));
  };
  return new Map(Object.values(document.components.messages).map((m) => [m.name, resolve(m.payload)]));
}
const payloads = payloadSchemas();

/** The envelope's members, in the order CloudEvents' structured mode lists them here (src/events/envelope.ts). */
export const ENVELOPE_MEMBERS = ['specversion', 'id', 'source', 'type', 'subject', 'time', 'datacontenttype', 'sequence', 'data'];

/** An event, as a consumer receives it, is valid against the AsyncAPI document's schema of its type. */
export function expectDocumented(event: { type: string } & Record<string, unknown>): void {
  const schema = payloads.get(event.type);
  expect(schema, `${event.type} is in the AsyncAPI document`).toBeDefined();
  const [valid, errors] = Errors(schema as never, event);
  expect(valid, `${event.type}: ${JSON.stringify(errors.map((e) => `${e.instancePath} ${e.message}`))}`).toBe(true);
}

/**
 * What holds of the whole outbox at any time: each reservation's events are numbered 1..its version, one per
 * version, the first a creation; each item's are numbered 1..n without a gap, n being its `event_item_sequences`
 * row; per subject, insertion order (`seq`) follows `sequence`, and so does the feed's order (`position`) among
 * sealed events; every type is a documented one.
 */
export async function expectOutboxConsistent(db: pg.Pool): Promise<void> {
  const events = await allEvents(db);
  const known = new Set(EVENT_TYPES.map((t) => t.type));
  const unknown = events.filter((e) => !known.has(e.type)).map((e) => e.type);
  expect(unknown, 'types not in EVENT_TYPES').toEqual([]);
  const bySubject = new Map<string, StoredEvent[]>();
  for (const e of events) bySubject.set(e.subject, [...(bySubject.get(e.subject) ?? []), e]);
  const problems: string[] = [];
  for (const [subject, list] of bySubject) {
    const sequences = list.map((e) => e.sequence); // in seq order
    const expected = list.map((_, i) => i + 1);
    if (JSON.stringify(sequences) !== JSON.stringify(expected)) problems.push(`${subject}: sequences in seq order ${sequences.join(',')}`);
    const sealed = list.filter((e) => e.position !== null);
    if (sealed.some((e, i) => i > 0 && e.position! <= sealed[i - 1]!.position!)) problems.push(`${subject}: positions out of sequence order`);
  }
  const { rows: reservations } = await db.query<{ id: string; version: number; event_sequence: string }>(
    'SELECT id, version, event_sequence FROM reservations',
  );
  for (const r of reservations) {
    const list = bySubject.get(r.id) ?? [];
    // One event per recorded change (the version may grow by more: a decision whose record never came).
    if (list.length !== Number(r.event_sequence)) problems.push(`reservation ${r.id}: ${list.length} events, event_sequence ${r.event_sequence}`);
    if (list.length > r.version) problems.push(`reservation ${r.id}: ${list.length} events, more than its version ${r.version}`);
    if (list[0] && list[0].type !== 'inventory.reservation.created') problems.push(`reservation ${r.id}: first event ${list[0].type}`);
    const last = list.at(-1);
    if (last && last.data.version !== r.version) problems.push(`reservation ${r.id}: last event's data.version ${String(last.data.version)}`);
  }
  const { rows: items } = await db.query<{ item_id: string; sequence: number }>('SELECT item_id, sequence FROM event_item_sequences');
  for (const item of items) {
    const n = bySubject.get(item.item_id)?.length ?? 0;
    if (n !== item.sequence) problems.push(`item ${item.item_id}: ${n} events, last sequence handed out ${item.sequence}`);
  }
  expect(problems).toEqual([]);
}

/** An item event's `data` for a location's figures: what stock.changed and availability.* carry. */
export const figures = (itemId: string, location: string, onHand: number, reserved: number, safetyStock = 0) => ({
  itemId,
  location,
  onHand,
  reserved,
  safetyStock,
  available: Math.max(0, onHand - reserved - safetyStock),
  availableHighPriority: Math.max(0, onHand - reserved),
});

export interface Appended {
  position: number;
  id: string;
  subject: string;
  sequence: number;
  type: string;
}

/**
 * Appends events straight into the outbox, one per entry (`subject` and `type`), in order: each subject's sequence
 * continues from its last. Sealed, they take the next positions (as the sealer leaves them); with `sealed: false`
 * they are queued for the sealer (as the batch statement leaves them). `hoursAgo` backdates them (for pruning).
 */
export async function appendEvents(
  db: Pick<pg.Pool, 'query'> | Pick<pg.PoolClient, 'query'>,
  entries: readonly { subject: string; type?: string }[],
  { hoursAgo = 0, sealed = true }: { hoursAgo?: number; sealed?: boolean } = {},
): Promise<Appended[]> {
  const { rows } = await db.query<Appended>(
    `WITH x AS (SELECT s, t, ord FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS x(s, t, ord)),
     e AS (
       INSERT INTO events (subject, sequence, type, time, data)
       SELECT s,
              coalesce((SELECT max(sequence) FROM events e WHERE e.subject = s), 0) + row_number() OVER (PARTITION BY s ORDER BY ord),
              t, now() - make_interval(hours => $3), jsonb_build_object('n', ord)
         FROM x ORDER BY ord
       RETURNING seq, id, subject, sequence, type, (data->>'n')::int AS ord
     ), fed AS (
       INSERT INTO event_feed (position, seq)
       SELECT coalesce((SELECT max(position) FROM event_feed), 0) + ord, seq FROM e WHERE $4
       RETURNING position, seq
     ), queued AS (
       INSERT INTO unsealed_events (seq) SELECT seq FROM e WHERE NOT $4
     )
     SELECT fed.position, e.id, e.subject, e.sequence, e.type FROM e LEFT JOIN fed USING (seq)`,
    [entries.map((e) => e.subject), entries.map((e) => e.type ?? 'inventory.reservation.created'), hoursAgo, sealed],
  );
  return rows.sort((a, b) => (a.position ?? 0) - (b.position ?? 0));
}
