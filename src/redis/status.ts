/**
 * Status codes the Lua scripts return as the first element of their reply. The loader injects this table into
 * every script as `S`, so Lua and TypeScript read the same numbers; a test fails if a script uses a name that
 * is missing here.
 */
export const ScriptStatus = {
  OK: 0,
  /** The generation marker is missing: Redis lost its state and must be rebuilt from PostgreSQL. */
  NO_STATE: 1,
  /** The item, or the item at that location, was never stocked. */
  NOT_FOUND: 2,
  INSUFFICIENT: 3,
  /** An idempotency record exists for this key; its value follows. */
  IDEMPOTENT: 4,
  /** Every hold is already in the requested final state (a retry or a racing duplicate). */
  ALREADY: 5,
  RELEASED: 6,
  CONFIRMED: 7,
  EXPIRED: 8,
  /** A hold the reservation should have is not in Redis (never recorded, or cleaned up). */
  MISSING: 9,
  /** A compensation was skipped because Redis was rebuilt since the decision (the rebuild already undid it). */
  STALE: 10,
  /** An `If-Match` named another version than the reservation's (api.md, "Versions"); its version follows. */
  PRECONDITION: 11,
} as const;

export type ScriptStatusName = keyof typeof ScriptStatus;
export type ScriptStatusCode = (typeof ScriptStatus)[ScriptStatusName];

/** Hold states as stored in the holds hash. */
export const HoldState = { pending: 'p', confirmed: 'c', released: 'r', expired: 'x' } as const;
