/**
 * The error catalogue: every `code` a client can switch on, with its HTTP status and title (api.md, "Errors").
 * One place; the problem+json handler and the OpenAPI document both read it.
 */
export const errorCatalogue = {
  validation_failed: { status: 400, title: 'Validation failed' },
  /** The bytes are not a valid HTTP/1.1 request (Node's parser refused them); the connection is closed. */
  malformed_request: { status: 400, title: 'Malformed request' },
  unauthorized: { status: 401, title: 'Unauthorized' },
  forbidden: { status: 403, title: 'Forbidden' },
  item_not_found: { status: 404, title: 'Item not found' },
  reservation_not_found: { status: 404, title: 'Reservation not found' },
  not_found: { status: 404, title: 'Not found' },
  method_not_allowed: { status: 405, title: 'Method not allowed' },
  request_timeout: { status: 408, title: 'Request timeout' },
  insufficient_stock: { status: 409, title: 'Insufficient stock' },
  reservation_expired: { status: 409, title: 'Reservation expired' },
  reservation_released: { status: 409, title: 'Reservation released' },
  reservation_confirmed: { status: 409, title: 'Reservation confirmed' },
  idempotency_key_in_use: { status: 409, title: 'Idempotency key in use' },
  precondition_failed: { status: 412, title: 'Precondition failed' },
  too_many_reservations: { status: 409, title: 'Too many reservations' },
  unsupported_media_type: { status: 415, title: 'Unsupported media type' },
  expectation_failed: { status: 417, title: 'Expectation failed' },
  idempotency_key_reused: { status: 422, title: 'Idempotency key reused' },
  rate_limited: { status: 429, title: 'Too many requests' },
  request_header_too_large: { status: 431, title: 'Request header too large' },
  internal: { status: 500, title: 'Internal server error' },
  unavailable: { status: 503, title: 'Service unavailable' },
} as const;

export type ErrorCode = keyof typeof errorCatalogue;

export interface FieldError {
  field: string;
  message: string;
}

export interface ShortLine {
  itemId: string;
  /** null for an allocated line: the service chose where, and no choice could hold it. */
  location: string | null;
  requested: number;
  available: number;
}

/** Extra members of a problem document, beside type/title/status/code/detail. */
export interface ProblemExtras {
  errors?: FieldError[];
  lines?: ShortLine[];
  /** Readiness: the state of each dependency. */
  checks?: Record<string, string>;
}

/** A failure the client is told about; rendered as RFC 9457 problem+json by the HTTP error handler. */
export class ProblemError extends Error {
  readonly status: number;
  readonly title: string;
  /** Sent as `Retry-After` (seconds): the refusal is expected and passes (a shed write), so it is not logged. */
  readonly retryAfterSeconds: number | undefined;

  constructor(
    readonly code: ErrorCode,
    readonly detail?: string,
    readonly extras: ProblemExtras = {},
    options?: { cause?: unknown; retryAfterSeconds?: number },
  ) {
    super(detail ?? errorCatalogue[code].title, options);
    this.name = 'ProblemError';
    this.status = errorCatalogue[code].status;
    this.title = errorCatalogue[code].title;
    this.retryAfterSeconds = options?.retryAfterSeconds;
  }
}

export const unavailable = (detail: string, cause?: unknown): ProblemError =>
  new ProblemError('unavailable', detail, {}, { cause });
