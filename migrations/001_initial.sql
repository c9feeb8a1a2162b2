-- Up Migration

-- The generation of state Redis must have been rebuilt from; bumped by every rebuild (the fence in
-- architecture.md, "Fencing the rebuild").
CREATE TABLE state_generation (
  singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  generation bigint NOT NULL
);
INSERT INTO state_generation (generation) VALUES (0);

-- On-hand and reserved units per item and location (reserved: units of pending reservations, recorded).
CREATE TABLE stock (
  item_id    text NOT NULL,
  location   text NOT NULL,
  on_hand    bigint NOT NULL,
  reserved   bigint NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (item_id, location)
);

CREATE TABLE reservations (
  id          uuid PRIMARY KEY,
  status      text NOT NULL CHECK (status IN ('pending', 'confirmed', 'released', 'expired')),
  reference   text,
  metadata    jsonb NOT NULL DEFAULT '{}',
  expires_at  timestamptz NOT NULL,
  created_at  timestamptz NOT NULL,
  updated_at  timestamptz NOT NULL
);
-- The sweeper's query: pending reservations by expiry.
CREATE INDEX reservations_pending_expiry ON reservations (expires_at) WHERE status = 'pending';

CREATE TABLE reservation_lines (
  reservation_id uuid NOT NULL REFERENCES reservations (id),
  line_no        smallint NOT NULL,
  item_id        text NOT NULL,
  location       text NOT NULL,
  quantity       integer NOT NULL CHECK (quantity > 0),
  PRIMARY KEY (reservation_id, line_no)
);

-- The last word on idempotency (Redis may have lost its record): one key, one reservation, one first answer.
CREATE TABLE idempotency_keys (
  scope          text NOT NULL,
  key            text NOT NULL,
  request_hash   text NOT NULL,
  reservation_id uuid NOT NULL,
  status_code    smallint NOT NULL,
  response       text NOT NULL, -- the first answer's exact text (jsonb would reorder its keys)
  created_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Append-only ledger: every change of on-hand or reserved, with what caused it.
CREATE TABLE stock_movements (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  item_id        text NOT NULL,
  location       text NOT NULL,
  kind           text NOT NULL CHECK (kind IN ('set', 'adjust', 'reserve', 'confirm', 'release', 'expire')),
  on_hand_delta  bigint NOT NULL,
  reserved_delta bigint NOT NULL,
  reservation_id uuid,
  reason         text,
  created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stock_movements_item ON stock_movements (item_id, location, id);
