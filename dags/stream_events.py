"""
### Stream events: Kafka -> lake (Parquet on S3) + Postgres aggregates

Runs `spark_apps/stream_events.py` through `SparkSubmitOperator` (client mode; the master comes
from the `spark_default` connection). Params:

* `mode` — `continuous` runs until stopped; `bounded` drains what is in the topic and exits
  (used by `airflow dags test`, the demo and the tests);
* `topic`, `bucket`, `lake_prefix`, `dead_letter_prefix`, `checkpoint_prefix`, `pg_schema` —
  where to read and write (tests use their own).

Connections: `kafka_default`, `spark_default`, `lake_s3`, `analytics_db`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from include import connections, pipeline
from include.spark.submit import SPARK_APPS, LakeSparkSubmitOperator

DAG_ID = "stream_events"
BOOTSTRAP = f"{{{{ conn.{connections.KAFKA}.extra_dejson['bootstrap.servers'] }}}}"

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["streaming", "spark"],
    doc_md=__doc__,
    default_args={"owner": "platform"},
    params={
        "mode": Param(
            "bounded", enum=["bounded", "continuous"], description="bounded drains and exits"
        ),
        "topic": Param(pipeline.EVENTS_TOPIC, type="string"),
        "bucket": Param(pipeline.BUCKET, type="string"),
        "lake_prefix": Param(pipeline.RAW_EVENTS_PREFIX, type="string"),
        "dead_letter_prefix": Param(pipeline.DEAD_LETTER_PREFIX, type="string"),
        "checkpoint_prefix": Param(pipeline.CHECKPOINT_PREFIX, type="string"),
        "pg_schema": Param(pipeline.PG_SCHEMA, type="string", pattern="^[a-z_][a-z0-9_]*$"),
        "trigger": Param(pipeline.STREAM_TRIGGER, type="string"),
    },
) as dag:
    stream_events = LakeSparkSubmitOperator(
        task_id="stream_events",
        application=str(SPARK_APPS / "stream_events.py"),
        name="stream_events",
        application_args=[
            "--bootstrap-servers",
            BOOTSTRAP,
            "--topic",
            "{{ params.topic }}",
            "--lake-path",
            "s3a://{{ params.bucket }}/{{ params.lake_prefix }}",
            "--dead-letter-path",
            "s3a://{{ params.bucket }}/{{ params.dead_letter_prefix }}",
            "--checkpoint-root",
            "s3a://{{ params.bucket }}/{{ params.checkpoint_prefix }}",
            "--mode",
            "{{ params.mode }}",
            "--trigger",
            "{{ params.trigger }}",
            "--watermark",
            pipeline.STREAM_WATERMARK,
            "--window",
            pipeline.STREAM_WINDOW,
            "--pg-schema",
            "{{ params.pg_schema }}",
        ],
    )
