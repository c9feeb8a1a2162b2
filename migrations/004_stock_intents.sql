-- Up Migration

-- Each stock decision carries an op id (a UUIDv7, made when Redis decided it, kept there with its intent until the
-- decision ends): its ledger row says the decision was recorded. Unique, so that reconciliation can take back a
-- decision its process left behind for good: it inserts a 'void' row with that op id, and the decision's own row,
-- should its batch still arrive, is then never inserted (the batch statement skips an op id already present, and
-- answers the op as not recorded). Rows of reservations carry none.
ALTER TABLE stock_movements ADD COLUMN op_id uuid;
CREATE UNIQUE INDEX stock_movements_op ON stock_movements (op_id) WHERE op_id IS NOT NULL;
-- 'void': no units, only the op id taken back. NOT VALID: every existing row has one of the older kinds.
ALTER TABLE stock_movements DROP CONSTRAINT stock_movements_kind_check;
ALTER TABLE stock_movements ADD CONSTRAINT stock_movements_kind_check
  CHECK (kind IN ('set', 'adjust', 'reserve', 'confirm', 'release', 'expire', 'void')) NOT VALID;

-- The op ids of the stock changes a batch recorded, for the writer's lookup after a lost answer.
ALTER TABLE write_batches ADD COLUMN stocked uuid[];

-- Reconciliation's corrections of Redis (src/jobs/reconcile.ts): what Redis held at one (item, location), what
-- PostgreSQL held, what Redis was set to, and why. PostgreSQL itself is never changed by a correction.
CREATE TABLE stock_corrections (
  id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  item_id               text NOT NULL,
  location              text NOT NULL,
  generation            bigint NOT NULL,
  redis_on_hand_before  bigint NOT NULL,
  redis_reserved_before bigint NOT NULL,
  redis_pending_before  bigint NOT NULL,
  redis_on_hand_after   bigint NOT NULL,
  redis_reserved_after  bigint NOT NULL,
  redis_pending_after   bigint NOT NULL,
  pg_on_hand            bigint NOT NULL,
  pg_reserved           bigint NOT NULL,
  -- In-flight units the target accounted for, intents ended, holds settled or added again.
  details               jsonb NOT NULL,
  reason                text NOT NULL,
  corrected_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stock_corrections_item ON stock_corrections (item_id, location, id);
