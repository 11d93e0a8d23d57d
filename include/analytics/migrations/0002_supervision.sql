-- Supervision of the stream (include/supervision/): control state and its audit, driver runs,
-- health verdicts, restarts, quarantined offsets, the single-writer lease.

CREATE TABLE IF NOT EXISTS stream_control (
    name                  text PRIMARY KEY,
    state                 text NOT NULL CHECK (state IN ('running', 'stopped', 'halted')),
    reason                text NOT NULL DEFAULT '',
    set_by                text NOT NULL DEFAULT '',
    restart_requested_at  timestamptz,
    accept_gap_requested_at timestamptz,
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS stream_runs (
    owner        text PRIMARY KEY,
    name         text NOT NULL,
    host         text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    ended_at     timestamptz,
    exit_code    integer,
    exit_reason  text
);
CREATE INDEX IF NOT EXISTS stream_runs_started ON stream_runs (name, started_at DESC);
CREATE TABLE IF NOT EXISTS stream_health (
    id       bigserial PRIMARY KEY,
    name     text NOT NULL,
    ts       timestamptz NOT NULL DEFAULT now(),
    status   text NOT NULL,
    reasons  jsonb NOT NULL,
    metrics  jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS stream_health_ts ON stream_health (name, ts DESC);
CREATE TABLE IF NOT EXISTS stream_restarts (
    id      bigserial PRIMARY KEY,
    name    text NOT NULL,
    ts      timestamptz NOT NULL DEFAULT now(),
    pid     integer,
    host    text,
    action  text NOT NULL,
    reason  text NOT NULL
);
CREATE TABLE IF NOT EXISTS stream_quarantine (
    id           bigserial PRIMARY KEY,
    topic        text NOT NULL,
    partition    integer NOT NULL CHECK (partition >= 0),
    from_offset  bigint NOT NULL CHECK (from_offset >= 0),
    to_offset    bigint NOT NULL,
    reason       text NOT NULL,
    set_by       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (to_offset >= from_offset)
);
CREATE TABLE IF NOT EXISTS stream_leases (
    name          text PRIMARY KEY,
    owner         text NOT NULL,
    host          text NOT NULL,
    pid           integer NOT NULL,
    acquired_at   timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL
);
