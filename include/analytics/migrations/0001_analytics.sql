-- The pipeline's records in the analytics database: producer runs, the stream's progress and
-- the aggregate sinks' batch log, the product catalog. (The live aggregates' tables are made
-- from their declarations in include/analytics/store.py, after the versioned files.)
-- IF NOT EXISTS: a database made before migrations existed is adopted as it is.

CREATE TABLE IF NOT EXISTS ingest_runs (
    run_id        text PRIMARY KEY,
    topic         text NOT NULL,
    produced_at   timestamptz NOT NULL DEFAULT now(),
    events        bigint NOT NULL,
    valid         bigint NOT NULL,
    by_kind       jsonb NOT NULL,
    by_partition  jsonb NOT NULL,
    purchases     bigint NOT NULL,
    units         bigint NOT NULL,
    revenue       $money NOT NULL,
    late          bigint NOT NULL DEFAULT 0,
    id_digest     text NOT NULL
);
ALTER TABLE ingest_runs ADD COLUMN IF NOT EXISTS late bigint NOT NULL DEFAULT 0;
ALTER TABLE ingest_runs ADD COLUMN IF NOT EXISTS offset_ranges jsonb NOT NULL DEFAULT '{}';

-- The last micro-batch each aggregate sink applied, per stream (checkpoint): the stream adds
-- each batch's counts to the rows, so a replayed batch must be recognised and skipped.
CREATE TABLE IF NOT EXISTS stream_sink_commits (
    sink          text PRIMARY KEY,
    batch_id      bigint NOT NULL,
    committed_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per micro-batch of every streaming query (spark_apps/progress.py).
CREATE TABLE IF NOT EXISTS stream_progress (
    query_id             uuid NOT NULL,
    run_id               uuid NOT NULL,
    query_name           text NOT NULL,
    batch_id             bigint NOT NULL,
    ts                   timestamptz NOT NULL,
    input_rows           bigint NOT NULL,
    input_rows_per_s     double precision NOT NULL,
    processed_rows_per_s double precision NOT NULL,
    batch_duration_ms    bigint NOT NULL,
    watermark            timestamptz,
    late_rows_dropped    bigint NOT NULL,
    state_rows           bigint NOT NULL,
    sources              jsonb NOT NULL,
    observed             jsonb NOT NULL,
    durations            jsonb NOT NULL,
    PRIMARY KEY (run_id, query_name, batch_id)
);
CREATE INDEX IF NOT EXISTS stream_progress_ts ON stream_progress (query_name, ts DESC);

-- A query's newest idle report (Spark's onQueryIdle: it checked its source, nothing new), so
-- that supervision tells an idle query from a stalled one (spark_apps/progress.py).
CREATE TABLE IF NOT EXISTS stream_idle (
    query_name  text PRIMARY KEY,
    run_id      uuid NOT NULL,
    reported_at timestamptz NOT NULL
);

-- The product catalog (include/events/catalog.py), for enrichment and the dashboard.
CREATE TABLE IF NOT EXISTS products (
    product_id    text PRIMARY KEY,
    category      text NOT NULL,
    price         numeric(12, 2) NOT NULL,
    currency      text NOT NULL,
    popularity_rank integer NOT NULL
);
