-- Up Migration

-- The reservation's version (api.md, "Versions"): 1 when created, +1 on every change (each recorded transition adds
-- one: src/store/batch-statement.ts). Existing rows had creation and at most one transition: a row that ended has 2.
ALTER TABLE reservations ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version >= 1);
UPDATE reservations SET version = 2 WHERE status <> 'pending';
