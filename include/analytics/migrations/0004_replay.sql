-- Dead letters re-injected by spark_apps/replay_dead_letters.py, each once (keyed by the
-- content digest), with the state of each send and where its scan began.

CREATE TABLE IF NOT EXISTS dlq_replays (
    digest            text PRIMARY KEY,
    source_topic      text NOT NULL,
    source_partition  integer NOT NULL,
    source_offset     bigint NOT NULL,
    reason            text NOT NULL,
    replayed_to       text NOT NULL,
    replayed_at       timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE dlq_replays ADD COLUMN IF NOT EXISTS state text NOT NULL DEFAULT 'sent';
ALTER TABLE dlq_replays ADD COLUMN IF NOT EXISTS scan_from jsonb;
