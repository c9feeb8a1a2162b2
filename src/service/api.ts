import type {
  AvailabilityDocument,
  ConfirmRequest,
  ReferenceListQuery,
  ReleasedByReference,
  ReservationDocument,
  ReservationPage,
  ReservationRequest,
} from '../domain/schemas.js';
import type { Caller } from '../domain/tenancy.js';

/**
 * What the HTTP routes need from the reservation logic (the benchmark's baseline designs implement it too).
 * `caller` scopes idempotency keys (its name) and tenancy: a reservation is created under the caller's tenant,
 * and one the caller may not see (src/domain/tenancy.ts) answers `reservation_not_found`, changing nothing.
 */
export interface ReservationApi {
  reserve(caller: Caller, key: string, request: ReservationRequest): Promise<ReserveAnswer>;
  get(caller: Caller, id: string): Promise<ReservationDocument>;
  /** `ifMatch`: the version an `If-Match` named (api.md, "Versions"); absent or null, the call is unconditional. */
  /** With `request.lines`, a partial confirm: those units are sold, the rest released (api.md, "Partial confirm"). */
  confirm(caller: Caller, id: string, ifMatch?: number | null, request?: ConfirmRequest): Promise<ReservationDocument>;
  release(caller: Caller, id: string, ifMatch?: number | null): Promise<ReservationDocument>;
  /** A pending, unexpired reservation now expires `ttlSeconds` from now. */
  extend(caller: Caller, id: string, ttlSeconds: number, ifMatch?: number | null): Promise<ReservationDocument>;
  /** The caller's reservations of one reference, newest first, a page at a time. */
  listByReference(caller: Caller, query: ReferenceListQuery): Promise<ReservationPage>;
  /** Releases every pending reservation of the caller's with this reference; answers all of them as they are after. */
  releaseByReference(caller: Caller, reference: string): Promise<ReleasedByReference>;
}

export interface ReserveAnswer {
  statusCode: number;
  body: ReservationDocument;
  replayed?: boolean;
}

export interface StockApi {
  availability(itemId: string): Promise<AvailabilityDocument>;
  /** `safetyStock` undefined: the location keeps its safety stock. */
  set(itemId: string, location: string, quantity: number, safetyStock?: number): Promise<AvailabilityDocument>;
  adjust(itemId: string, location: string, delta: number, reason: string | null): Promise<AvailabilityDocument>;
}
