"""
### Weekly warehouse maintenance (Iceberg)

Sundays at 04:00 UTC, for every table of the warehouse and marts namespaces,
`spark_apps/maintain_warehouse.py` removes the audit branches of killed compaction runs
(opened more than `audit_grace_hours` ago: a younger one may be a run in progress),
rewrites manifests, expires snapshots older than `snapshot_days` (keeping `retain_last`) and
removes orphan files older than `orphan_days` (left by killed writes; at least a day). The log has per-table figures.

Connections: `spark_default`, `warehouse_s3`, `analytics_db`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from include import dag_params
from include.spark.jobs import MaintainJob
from include.spark.submit import LakeSparkSubmitOperator
from include.supervision.notify import PlatformNotifier
from include.warehouse import catalog

DAG_ID = "maintain_warehouse"

with DAG(
    dag_id=DAG_ID,
    schedule="0 4 * * 0",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["warehouse", "maintenance"],
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
        "snapshot_days": Param(MaintainJob.default("snapshot_days"), type="number", minimum=0),
        "retain_last": Param(MaintainJob.default("retain_last"), type="integer", minimum=1),
        "orphan_days": Param(MaintainJob.default("orphan_days"), type="number", minimum=1),
        "audit_grace_hours": Param(
            MaintainJob.default("audit_grace_hours"), type="number", minimum=0
        ),
    },
) as dag:
    LakeSparkSubmitOperator(
        task_id="maintain",
        report=True,
        application=MaintainJob.application(),
        name="maintain_warehouse",
        application_args=MaintainJob.templated(
            **catalog.WAREHOUSE_TEMPLATES,
            snapshot_days="{{ params.snapshot_days }}",
            retain_last="{{ params.retain_last }}",
            orphan_days="{{ params.orphan_days }}",
            audit_grace_hours="{{ params.audit_grace_hours }}",
        ),
    )
