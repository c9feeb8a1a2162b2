import type { TSchema } from 'typebox';
import { LocationFigures, ReservationDocument } from '../domain/schemas.js';
import { EVENT_TYPE_PREFIX } from './envelope.js';

/**
 * Every event type the outbox appends (src/store/batch-statement.ts writes them), what its subject is, and the
 * schema of its `data`: the AsyncAPI document (src/events/asyncapi.ts) is made from this table.
 */
export interface EventType {
  /** The full type, `inventory.` included (also the NATS subject). */
  type: string;
  subject: 'reservation' | 'item';
  data: TSchema;
  /** The name of `data`'s schema in the AsyncAPI document's components. */
  dataName: 'ReservationDocument' | 'LocationFigures';
  summary: string;
}

const reservation = (change: string, summary: string): EventType => ({
  type: `${EVENT_TYPE_PREFIX}reservation.${change}`,
  subject: 'reservation',
  data: ReservationDocument,
  dataName: 'ReservationDocument',
  summary,
});

const item = (name: string, summary: string): EventType => ({
  type: `${EVENT_TYPE_PREFIX}${name}`,
  subject: 'item',
  data: LocationFigures,
  dataName: 'LocationFigures',
  summary,
});

export const EVENT_TYPES: readonly EventType[] = [
  reservation('created', 'A reservation was created: its units are held until `expiresAt`. `data`: the reservation, version 1.'),
  reservation('confirmed', 'A reservation was confirmed (its units sold; with a partial confirm, the rest released). `data`: the reservation after.'),
  reservation('released', 'A reservation was released: its units are available again. `data`: the reservation after.'),
  reservation('expired', 'A reservation passed its `expiresAt` and its expiry was recorded: its units are available again. `data`: the reservation after.'),
  reservation('extended', 'A pending reservation now expires at another time. `data`: the reservation after.'),
  item(
    'stock.changed',
    'A location\'s on-hand or safety stock changed (a stock set or adjustment, a confirm), or a location was stocked. ' +
      '`data`: the location\'s figures after. Holds alone change `reserved` without it: the reservation events say it.',
  ),
  item('availability.depleted', 'A location\'s `available` reached 0 (it was above). `data`: the location\'s figures after.'),
  item(
    'availability.restored',
    'A location\'s `available` left 0 (a location stocked for the first time is not restored). `data`: the location\'s figures after.',
  ),
];
