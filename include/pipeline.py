"""Names and defaults of the pipeline: topics, bucket, lake layout, stream settings.

DAG params default to these; the local stack, compose and production differ only in
connections, not in these names.
"""

from __future__ import annotations

EVENTS_TOPIC = "events"
DEAD_LETTER_TOPIC = "events.dlq"
BUCKET = "lake"
RAW_EVENTS_PREFIX = "raw/events"
DEAD_LETTER_PREFIX = "dead_letter/events"
CHECKPOINT_PREFIX = "_checkpoints/stream_events"
PG_SCHEMA = "public"

STREAM_TRIGGER = "10 seconds"
STREAM_WATERMARK = "10 minutes"
STREAM_WINDOW = "1 minute"


def s3a(bucket: str, prefix: str) -> str:
    return f"s3a://{bucket}/{prefix.strip('/')}"
