"""
### Replay dead letters after a fix

Re-injects dead-lettered events into the events topic (`spark_apps/replay_dead_letters.py`):
the original key and value bytes, with headers naming where each came from. Select them by
`reason_prefix` (e.g. `missing_field:`, `out_of_range:price`) and detection time (`since`,
`until`); `dry_run` only counts. Idempotent: every replayed record is remembered in Postgres
`dlq_replays` by the digest of its bytes, so a second run sends nothing twice and a record that
fails again is not replayed in a loop. The stream validates replayed events like any other.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from include import connections, dag_params
from include.spark.jobs import ReplayJob
from include.spark.submit import LakeSparkSubmitOperator

DAG_ID = "replay_dead_letters"
BOOTSTRAP = f"{{{{ conn.{connections.KAFKA}.extra_dejson['bootstrap.servers'] }}}}"

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["streaming", "operations"],
    doc_md=__doc__,
    default_args={"owner": "platform", **dag_params.idempotent_retries()},
    params={
        "reason_prefix": Param(
            "",
            type="string",
            description="empty: every reason (conflicting_duplicate only when named)",
        ),
        "since": Param(None, type=["null", "string"], description="ISO time"),
        "until": Param(None, type=["null", "string"], description="ISO time"),
        "dry_run": Param(True, type="boolean", description="only count"),
        **dag_params.shared("topic", "bucket", "dead_letter_prefix", "pg_schema"),
    },
) as dag:
    LakeSparkSubmitOperator(
        task_id="replay",
        report=True,
        application=ReplayJob.application(),
        name="replay_dead_letters",
        kafka_conn_id=connections.KAFKA,
        application_args=ReplayJob.templated(
            dead_letter_path="s3a://{{ params.bucket }}/{{ params.dead_letter_prefix }}",
            bootstrap_servers=BOOTSTRAP,
            topic="{{ params.topic }}",
            reason_prefix="{{ params.reason_prefix }}",
            pg_schema="{{ params.pg_schema }}",
            since="{{ params.since or '' }}",
            until="{{ params.until or '' }}",
            dry_run="{{ 'true' if params.dry_run else 'false' }}",
        ),
    )
