import { toDocument, type Line } from '../../src/domain/reservation.js';
import type { ReservationDocument, ReservationStatus } from '../../src/domain/schemas.js';

/**
 * The document of a reservation after a change, for tests that submit record operations to the writer directly
 * (every reservation operation carries it: its event's data). Fields the test does not name take plain defaults.
 */
export function documentAfter(change: {
  id: string;
  lines: readonly Line[];
  status: ReservationStatus;
  at: Date;
  version: number;
  expiresAt?: Date;
  createdAt?: Date;
}): ReservationDocument {
  const createdAt = change.createdAt ?? change.at;
  return toDocument(
    {
      id: change.id,
      status: change.status,
      reference: null,
      metadata: {},
      priority: 'normal',
      lines: [...change.lines],
      expiresAt: change.expiresAt ?? new Date(change.at.getTime() + 60_000),
      createdAt,
      updatedAt: change.at,
      allocation: null,
      tenant: 'default',
      version: change.version,
    },
    change.at,
  );
}
