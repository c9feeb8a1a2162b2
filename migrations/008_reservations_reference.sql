-- Up Migration

-- Listing and releasing by reference (api.md, "Saga operations"): every reservation of one reference, newest first,
-- paged by (created_at, id). The equality on `reference` and the keyset bound on (created_at, id) are both index
-- conditions, so a page reads `limit` rows however many the reference has; tenant and status are filters on them
-- (a reference is one order's or one saga's: a handful of rows, and with authentication off no tenant filter at all).
-- Rows without a reference are never asked for and stay out of it.
CREATE INDEX reservations_reference ON reservations (reference, created_at DESC, id DESC) WHERE reference IS NOT NULL;
