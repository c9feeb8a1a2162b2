-- Up Migration

-- One row per group-commit batch, written by the batch's own statement: when the answer to that statement is
-- lost (the connection died), the writer looks here to learn whether it committed and what it changed.
-- A row is needed for seconds; the sweeper deletes rows older than ten minutes.
CREATE TABLE write_batches (
  id           uuid PRIMARY KEY,
  fenced_in    boolean NOT NULL,
  created      uuid[],
  moved        uuid[],
  committed_at timestamptz NOT NULL DEFAULT now()
);
