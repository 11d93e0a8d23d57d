-- The raw files each verified compaction of a day read (spark_apps/compact_events.py), so
-- that late files (committed to the sink's log after the day's run) are found and compacted,
-- and raw retention deletes only files the warehouse holds (include/warehouse/runs.py).

CREATE TABLE IF NOT EXISTS compaction_inputs (
    day         date NOT NULL,
    path        text NOT NULL,              -- as the sink's log lists it (s3a://bucket/key)
    recorded_at timestamptz NOT NULL DEFAULT now(),
    expired_at  timestamptz,                -- retention deleted the file
    PRIMARY KEY (day, path)
);
CREATE INDEX IF NOT EXISTS compaction_inputs_expired ON compaction_inputs (expired_at)
    WHERE expired_at IS NOT NULL;
