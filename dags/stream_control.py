"""
### Stream control: stop or restart the streaming app from the UI

* `stop` — the running driver finishes its current batch and exits cleanly; the launcher
  (`stream_events`) then waits at its gate until a `restart`;
* `restart` — the running driver stops the same way and the launcher starts a new one from
  the checkpoints; a stopped or halted (crash loop) stream resumes;
* `accept_retention_gap` — after the launch's retention guard stopped it: the next launch
  drains once past the offsets retention deleted (the guard logs them), then runs normally;
* `quarantine` — the way out when a record nobody foresaw stops the stream: the offsets
  `from_offset`..`to_offset` (inclusive) of `topic`/`partition` go to the dead letters with
  reason `quarantined` (bytes and coordinates kept, replayable) instead of being processed,
  from the stream's next batch (it re-reads the quarantine every batch; a stream supervision
  halted resumes). Overlapping ranges are refused. Reconcile counts them.

Every action is recorded in Postgres `stream_control` with who asked and why (`reason`). The task
waits until the old driver has exited (`wait_s`).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, task

from include import dag_params

DAG_ID = "stream_control"


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["streaming", "supervision", "operations"],
    doc_md=__doc__,
    default_args={"owner": "platform"},
    params={
        "action": Param("restart", enum=["stop", "restart", "quarantine", "accept_retention_gap"]),
        "reason": Param("", type="string", description="why (recorded)"),
        "wait_s": Param(600, type="integer", minimum=0),
        "partition": Param(None, type=["null", "integer"], description="quarantine: partition"),
        "from_offset": Param(None, type=["null", "integer"], description="quarantine: first"),
        "to_offset": Param(None, type=["null", "integer"], description="quarantine: last"),
        **dag_params.shared("topic", "bucket", "checkpoint_prefix", "pg_schema"),
    },
)
def stream_control():
    @task
    def operate(params: dict, dag_run=None) -> str:
        from include.supervision import tasks

        return tasks.operate(params, dag_run)

    operate()


stream_control()
