"""Names and defaults of the pipeline: topics, bucket, lake layout, stream settings.

DAG params default to these; the local stack, compose and production differ only in
connections, not in these names.
"""

from __future__ import annotations

EVENTS_TOPIC = "events"
BUCKET = "lake"
RAW_EVENTS_PREFIX = "raw/events"
# The raw lake's Hive-style partitions (event day, then hour): the stream writes them, the
# compaction and retention find a day's files by the first.
LAKE_PARTITIONS = ("event_date", "event_hour")
DAY_PARTITION = LAKE_PARTITIONS[0]
DEAD_LETTER_PREFIX = "dead_letter/events"
# The dead letters' partition: the day the stream detected them (its processing time's date).
DEAD_LETTER_DAY_PARTITION = "detected_date"
CHECKPOINT_PREFIX = "_checkpoints/stream_events"
WAREHOUSE_PREFIX = "warehouse"
WAREHOUSE_NAMESPACE = "analytics"
MARTS_NAMESPACE = "marts"
TARGET_FILE_MB = 128  # compaction's target file size
# Compacted bytes per event row of a new table (zstd, sorted; measured, see docs/warehouse.md).
FIRST_BYTES_PER_ROW = 64.0
# Compaction: a day whose committed raw files hold at most this many MiB goes through Arrow in
# the driver (fast; the day's rows in its memory, ~3.6x the raw bytes at the peak); a larger one
# through Spark's executors (distributed). docs/warehouse.md.
COMPACTION_ARROW_MAX_MB = 1024
PG_SCHEMA = "public"

# The streaming app's query (one: each record is read, checked and deduplicated once, then
# fans out to the lake, the dead letters and the live aggregates); it checkpoints under
# <checkpoint prefix>/<query>.
STREAM_QUERY = "lake"
STREAM_QUERIES = (STREAM_QUERY,)

STREAM_TRIGGER = "10 seconds"

# Supervision: a driver that has not heart-beaten (or a query with data waiting and no sign of
# life) for this long is stalled; after MAX_RESTARTS failed runs within RESTART_WINDOW_MIN, stop
# restarting. A failed driver is relaunched after STREAM_RETRY_DELAY_S (RTAP_STREAM_RETRY_DELAY_S
# overrides it; the integration tests shorten it).
STALL_AFTER_S = 120
# A relaunched driver's first batch replays the state's changelogs since its last snapshot
# before it runs; the health check allows it this replay rate on top of its batch limit (on 2
# shared cores the replay ran at ~5 MiB/s: docs/benchmarks.md, restart). Assuming less only
# delays calling that one batch wedged; assuming more restarts a driver mid-replay, in a loop.
REPLAY_MIB_PER_S = 2.0
STREAM_RETRY_DELAY_S = 30
MAX_RESTARTS = 3
RESTART_WINDOW_MIN = 30
HEALTH_SCHEDULE = "*/5 * * * *"
# Airflow's scheduler settings the stream's supervision relies on (local stack and compose).
# With the LocalExecutor a running task's supervisor is a child of the scheduler: after a
# scheduler crash the new scheduler resets its orphaned task instances (every
# orphaned_tasks_check_interval; Airflow's default, 300 s, left the stream unsupervised five
# minutes), and fails a task whose supervisor stopped heart-beating (default 300 s as well).
SCHEDULER_SETTINGS = {
    "orphaned_tasks_check_interval": "30",
    "task_instance_heartbeat_timeout": "90",
}
# The stream drops repeats of an event_id first seen within this much processing time.
STREAM_DEDUPE_HORIZON = "10 minutes"
# How long a file sink's _spark_metadata keeps an entry before it moves to the log's archive
# (spark_apps/sink_log.py): what each log compaction rewrites, and every reader reads.
SINK_LOG_RETENTION = "7 days"
# The shortest: a batch must commit within a quarter of it (spark_apps/sink_log.py).
SINK_LOG_MIN_RETENTION_MS = 60_000
# How often, in processing time, the deduplication's state is snapshotted (each snapshot
# uploads the whole state: spark_apps/stream_events.py, batch_conf).
STREAM_STATE_SNAPSHOT_INTERVAL_S = 300
STREAM_WINDOW = "1 minute"


def s3a(bucket: str, prefix: str) -> str:
    return f"s3a://{bucket}/{prefix.strip('/')}"
