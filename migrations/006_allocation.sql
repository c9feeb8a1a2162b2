-- Up Migration

-- The request's `allocation` (api.md, "Allocation across locations"), as the reservation document echoes it; NULL
-- for a reservation made without one (every existing row). The lines already say where each unit is held.
ALTER TABLE reservations ADD COLUMN allocation jsonb;
