-- Up Migration

-- The transactional outbox (api.md "Events"; architecture.md "Events: a transactional outbox"). The batch statement
-- that records a change inserts its events in the same statement, so an event exists if and only if its change
-- was committed.
--
-- `sequence` counts 1, 2, 3… per subject: a reservation's from `reservations.event_sequence` (its events so far;
-- not its version, which grows by more than one when a decision's record never came), an item's from
-- `event_item_sequences`, each taken under that row's lock. Either way a subject's next event is inserted only after
-- the transaction holding its previous one committed, so per subject `seq` (insertion order) follows `sequence`.
--
-- `position` is the order of the feed and of every transport: assigned by one sealer at a time (an advisory lock)
-- to events already committed, in `seq` order. A position is never handed out below one a reader may have seen,
-- which an order fixed at insertion cannot promise (a transaction may commit after a later-numbered one).
CREATE TABLE events (
  seq      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id       uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
  subject  text NOT NULL,
  sequence bigint NOT NULL CHECK (sequence > 0),
  type     text NOT NULL,
  time     timestamptz NOT NULL,
  data     jsonb NOT NULL,
  position bigint UNIQUE,
  UNIQUE (subject, sequence)
);
-- The sealer's work: committed events without a position yet, oldest first.
CREATE INDEX events_unsealed ON events (seq) WHERE position IS NULL;

-- The highest position the sealer handed out. Kept apart from `events`, whose delivered rows are pruned: with the
-- newest pruned too, `max(position)` would start again below the cursors consumers hold, and they would skip what
-- follows.
CREATE TABLE event_positions (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  position  bigint NOT NULL
);
INSERT INTO event_positions (position) VALUES (0);

-- The last sequence handed out per item (the subject of stock.changed and availability.*).
CREATE TABLE event_item_sequences (
  item_id  text PRIMARY KEY,
  sequence bigint NOT NULL
);

-- How far each transport has delivered, by position (at least once: a crash between a send and this update
-- sends again, under the same event id).
CREATE TABLE event_cursors (
  transport  text PRIMARY KEY,
  position   bigint NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- A reservation's events so far (the sequence of its last one). Reservations made before the outbox have none.
ALTER TABLE reservations ADD COLUMN event_sequence bigint NOT NULL DEFAULT 0;
