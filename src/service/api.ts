import type { AvailabilityDocument, ReservationDocument, ReservationRequest } from '../domain/schemas.js';

/** What the HTTP routes need from the reservation logic (the benchmark's baseline designs implement it too). */
export interface ReservationApi {
  reserve(scope: string, key: string, request: ReservationRequest): Promise<ReserveAnswer>;
  get(id: string): Promise<ReservationDocument>;
  confirm(id: string): Promise<ReservationDocument>;
  release(id: string): Promise<ReservationDocument>;
}

export interface ReserveAnswer {
  statusCode: number;
  body: ReservationDocument;
  replayed?: boolean;
}

export interface StockApi {
  availability(itemId: string): Promise<AvailabilityDocument>;
  set(itemId: string, location: string, quantity: number): Promise<AvailabilityDocument>;
  adjust(itemId: string, location: string, delta: number, reason: string | null): Promise<AvailabilityDocument>;
}
