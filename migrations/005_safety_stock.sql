-- Up Migration

-- Safety stock per (item, location): units only high-priority reservations may take. Its changes go through the
-- ledger like on-hand's: a movement's safety_delta, summed into the stock row by the batch statement. A constant
-- default adds each column without a rewrite; every existing row has no safety stock.
ALTER TABLE stock ADD COLUMN safety_stock bigint NOT NULL DEFAULT 0;
ALTER TABLE stock_movements ADD COLUMN safety_delta bigint NOT NULL DEFAULT 0;
-- 'safety': a stock set that changed only the safety stock. NOT VALID: every existing row has one of the older kinds.
ALTER TABLE stock_movements DROP CONSTRAINT stock_movements_kind_check;
ALTER TABLE stock_movements ADD CONSTRAINT stock_movements_kind_check
  CHECK (kind IN ('set', 'adjust', 'reserve', 'confirm', 'release', 'expire', 'void', 'safety')) NOT VALID;

-- A reservation's priority: 'high' may take a location's safety stock, 'normal' (every existing row) may not.
ALTER TABLE reservations ADD COLUMN priority text NOT NULL DEFAULT 'normal' CHECK (priority IN ('normal', 'high'));

-- Reconciliation's corrections compare and correct safety stock too: Redis' enforced safety stock and its decreases
-- not yet recorded, before and after, and PostgreSQL's safety stock.
ALTER TABLE stock_corrections
  ADD COLUMN redis_safety_before         bigint NOT NULL DEFAULT 0,
  ADD COLUMN redis_safety_pending_before bigint NOT NULL DEFAULT 0,
  ADD COLUMN redis_safety_after          bigint NOT NULL DEFAULT 0,
  ADD COLUMN redis_safety_pending_after  bigint NOT NULL DEFAULT 0,
  ADD COLUMN pg_safety_stock             bigint NOT NULL DEFAULT 0;
