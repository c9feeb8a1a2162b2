/**
 * The CloudEvents 1.0 envelope (structured JSON mode) of an event as the outbox stores it (migrations/010): the same
 * for the feed and every transport, so a consumer deduplicates by `id` and orders by `sequence` per `subject`
 * whichever way it reads them.
 */

/** A row of `events`, as read back. */
export interface EventRow {
  id: string;
  subject: string;
  /** 1, 2, 3… per subject (bigint: read as a string). */
  sequence: string | number;
  /** The full type, `inventory.` included. */
  type: string;
  time: Date;
  data: unknown;
}

export interface CloudEvent {
  specversion: '1.0';
  id: string;
  source: string;
  type: string;
  subject: string;
  time: string;
  datacontenttype: 'application/json';
  /** The CloudEvents `sequence` extension: a string. */
  sequence: string;
  data: unknown;
}

/** Every type begins with it; a NATS subject is the type itself (`inventory.reservation.created`). */
export const EVENT_TYPE_PREFIX = 'inventory.';

export const DEFAULT_EVENT_SOURCE = '/inventory-reservation-service';

export function toCloudEvent(row: EventRow, source: string): CloudEvent {
  return {
    specversion: '1.0',
    id: row.id,
    source,
    type: row.type,
    subject: row.subject,
    time: row.time.toISOString(),
    datacontenttype: 'application/json',
    sequence: String(row.sequence),
    data: row.data,
  };
}
