"""
### Rebuild the marts from the Iceberg events table (on demand)

`spark_apps/rebuild_marts.py` builds every mart of the registry
(`include/warehouse/marts.py`), or those named in `marts`, from the verified events of the
days `since`..`until` (empty: the table's first / last day) and replaces those days in each
mart, one commit per mart. For a new mart (it then covers the days whose raw files expired) or
a changed one, without compacting again. The nightly compaction keeps building the marts of
the day it compacts.

Trigger it from the UI with params, or `airflow dags trigger rebuild_marts -c
'{"since": "2026-11-01"}'`.

Connections: `spark_default`, `warehouse_s3`, `analytics_db`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from include import dag_params
from include.spark.jobs import RebuildMartsJob
from include.spark.submit import LakeSparkSubmitOperator
from include.supervision.notify import PlatformNotifier
from include.warehouse import catalog, marts

DAG_ID = "rebuild_marts"

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["warehouse", "batch"],
    doc_md=__doc__,
    default_args={
        "owner": "platform",
        "on_failure_callback": PlatformNotifier(),
        **dag_params.idempotent_retries(),
    },
    params={
        **dag_params.shared(
            "bucket", "warehouse_prefix", "namespace", "marts_namespace", "pg_schema"
        ),
        "since": Param(None, type=["null", "string"], format="date", description="YYYY-MM-DD"),
        "until": Param(None, type=["null", "string"], format="date", description="YYYY-MM-DD"),
        "marts": Param(
            [],
            type="array",
            items={"type": "string", "enum": [m.name for m in marts.MARTS]},
            description="the marts to rebuild (empty: every mart)",
        ),
    },
) as dag:
    LakeSparkSubmitOperator(
        task_id="rebuild",
        report=True,
        application=RebuildMartsJob.application(),
        name="rebuild_marts",
        application_args=RebuildMartsJob.templated(
            **catalog.WAREHOUSE_TEMPLATES,
            since="{{ params.since or '' }}",
            until="{{ params.until or '' }}",
            marts="{{ params.marts | join(',') }}",
        ),
    )
