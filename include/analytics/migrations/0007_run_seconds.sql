-- How long each producer run took (include/events/producer.py, a monotonic clock): with the
-- time it was recorded (produced_at, Postgres's clock), when it started. The reconciliation
-- reads only the lake's and dead letters' day partitions its runs' events can be in
-- (include/supervision/reconcile.py, read_days); a run recorded without it (NULL) makes it
-- read every day.

ALTER TABLE ingest_runs ADD COLUMN IF NOT EXISTS seconds double precision;
