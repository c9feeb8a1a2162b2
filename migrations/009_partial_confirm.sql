-- Up Migration

-- Partial confirm (api.md, "Saga operations"): the units of a line that its confirm sold; the rest of the line was
-- released in the same step. NULL on every line a partial confirm did not end (a whole confirm sells `quantity`).
ALTER TABLE reservation_lines
  ADD COLUMN confirmed_quantity integer CHECK (confirmed_quantity BETWEEN 0 AND quantity);
