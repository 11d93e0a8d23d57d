-- The retention gaps operators accepted, as offset ranges (include/supervision/tasks.py,
-- retention_guard): the records in them were deleted by Kafka's retention before the stream
-- read them. The reconciliation counts a run's records there in their own column
-- (include/supervision/reconcile.py) instead of as missing; stream_restarts keeps the
-- human-readable audit line (action gap_accepted) beside it.

CREATE TABLE IF NOT EXISTS stream_accepted_gaps (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL,
    topic        text NOT NULL,
    lake_path    text NOT NULL,
    partition    integer NOT NULL CHECK (partition >= 0),
    from_offset  bigint NOT NULL CHECK (from_offset >= 0),
    to_offset    bigint NOT NULL,
    accepted_by  text NOT NULL,
    accepted_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (to_offset >= from_offset)
);
CREATE INDEX IF NOT EXISTS stream_accepted_gaps_topic ON stream_accepted_gaps (topic, lake_path);
