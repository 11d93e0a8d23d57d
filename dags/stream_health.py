"""
### Stream health: classify the streaming app and restart it when it stalls

Every few minutes (`RTAP_HEALTH_SCHEDULE`, default every 5 minutes) this DAG reads what the
stream records (its checkpoint, `stream_progress`, `stream_idle`, its lease, `stream_runs`) and
what the broker holds (log-end offsets), and classifies the stream
(`include/supervision/health.py`):

* **healthy** (**idle** when nothing waits, however long ago the last batch ran);
  **degraded** — lag growing while processing is slower than input, batches much longer than
  before, a high dead-letter rate, failed runs recently (alert: warning);
* **stalled** — the driver stopped heart-beating, a query's planned batch is not committed
  past its limit (wedged), or data waits for a query that neither ran a batch nor reported
  itself idle for `stall_after_s` (a relaunched driver's first batch also gets the time to
  replay its state's changelogs at `replay_mib_per_s`): its driver is killed so the launcher
  (`stream_events`) restarts it from its checkpoints. After `max_restarts` failed runs within
  `restart_window_min` it stops restarting, halts the stream (the launcher's gate waits) and
  fails with an alert;
* **down** (no driver; the launcher relaunches it) and **stopped** (by an operator).

Every result goes to Postgres `stream_health`; restarts to `stream_restarts`. Lag per
partition is the broker's log-end offset minus the offset the query's checkpoint committed
(never a consumer group). Alerts: the task log and the `alerts_webhook` connection if it exists.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from include import dag_params, pipeline
from include.supervision.notify import PlatformNotifier

DAG_ID = "stream_health"


@dag(
    dag_id=DAG_ID,
    schedule=os.environ.get("RTAP_HEALTH_SCHEDULE", pipeline.HEALTH_SCHEDULE),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=10),
    tags=["streaming", "supervision"],
    doc_md=__doc__,
    default_args={"owner": "platform", "on_failure_callback": PlatformNotifier()},
    params={
        **dag_params.shared(
            "topic",
            "bucket",
            "checkpoint_prefix",
            "pg_schema",
            "max_restarts",
            "restart_window_min",
        ),
        "stall_after_s": Param(pipeline.STALL_AFTER_S, type="integer", minimum=5),
        "replay_mib_per_s": Param(
            pipeline.REPLAY_MIB_PER_S,
            type="number",
            exclusiveMinimum=0,
            description="state replay rate assumed for a relaunched driver's first batch",
        ),
        "restart": Param(True, type="boolean", description="restart a stalled driver"),
    },
)
def stream_health():
    @task
    def assess(params: dict) -> dict:
        from include.supervision import tasks

        return tasks.assess_health(params)

    @task
    def act(report: dict, params: dict) -> str:
        from include.supervision import tasks

        return tasks.act_on_health(report, params)

    act(assess())


stream_health()
