-- Up Migration

-- Feed positions move out of the event rows (issue 15). Sealing set `events.position`, an indexed column, so every
-- seal rewrote the whole ~600-byte row, with a new entry in four of its indexes, to record one number: about 40 µs
-- of PostgreSQL's CPU and 1 KB of WAL per event, a fifth of what a durable reservation cost it. Now an event is
-- inserted once and never updated; its position is a narrow row of its own.
--
-- `unsealed_events` holds the committed events still waiting for a position: the batch statement that inserts an
-- event queues its `seq` in the same statement (src/store/batch-statement.ts), and the sealer takes the oldest out as
-- it gives them positions (src/store/events.ts). The order and the guarantees are 010's: positions are handed out
-- by one sealer at a time, to committed events only, in `seq` order, each above every one handed out before.
--
-- Every node must run this version together: an older node's events would not be queued, so never sealed.
CREATE TABLE unsealed_events (
  seq bigint PRIMARY KEY
);

-- The feed's order: one row per sealed event, read by position and joined to `events` by its primary key. No foreign
-- key (it would cost a look-up per sealed event): the sealer only positions queued events, and the pruner deletes
-- an event and its position together (src/store/event-cursors.ts).
CREATE TABLE event_feed (
  position bigint PRIMARY KEY,
  seq      bigint NOT NULL
);

INSERT INTO event_feed (position, seq) SELECT position, seq FROM events WHERE position IS NOT NULL;
INSERT INTO unsealed_events (seq) SELECT seq FROM events WHERE position IS NULL;
DROP INDEX events_unsealed;
ALTER TABLE events DROP COLUMN position;
