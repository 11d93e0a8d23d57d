"""The params DAGs share: where the pipeline reads and writes, and the supervision limits.

One definition, so every DAG names and validates them the same way; tests override them to
keep a run inside a sandbox (its own topic, prefixes and Postgres schema).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param

from include import pipeline
from include.spark import jobs

MEMORY_PATTERN = jobs.MEMORY_PATTERN  # a JVM size, as spark.driver.memory takes one

_LOCATIONS = {
    "topic": lambda: Param(pipeline.EVENTS_TOPIC, type="string"),
    "bucket": lambda: Param(pipeline.BUCKET, type="string"),
    "lake_prefix": lambda: Param(pipeline.RAW_EVENTS_PREFIX, type="string"),
    "dead_letter_prefix": lambda: Param(pipeline.DEAD_LETTER_PREFIX, type="string"),
    "checkpoint_prefix": lambda: Param(pipeline.CHECKPOINT_PREFIX, type="string"),
    "pg_schema": lambda: Param(pipeline.PG_SCHEMA, type="string", pattern="^[a-z_][a-z0-9_]*$"),
    "warehouse_prefix": lambda: Param(pipeline.WAREHOUSE_PREFIX, type="string"),
    "namespace": lambda: Param(
        pipeline.WAREHOUSE_NAMESPACE, type="string", pattern="^[a-z_][a-z0-9_]*$"
    ),
    "marts_namespace": lambda: Param(
        pipeline.MARTS_NAMESPACE, type="string", pattern="^[a-z_][a-z0-9_]*$"
    ),
    "max_restarts": lambda: Param(pipeline.MAX_RESTARTS, type="integer", minimum=1),
    "restart_window_min": lambda: Param(pipeline.RESTART_WINDOW_MIN, type="number", minimum=1),
}


def shared(*names: str) -> dict[str, Param]:
    """Fresh ``Param`` objects for ``names`` (keys of this module's table)."""
    unknown = set(names) - set(_LOCATIONS)
    if unknown:
        raise KeyError(f"no shared param {sorted(unknown)}; known: {sorted(_LOCATIONS)}")
    return {name: _LOCATIONS[name]() for name in names}


def idempotent_retries() -> dict[str, Any]:
    """``default_args`` of a DAG whose tasks can run again without harm (a re-run converges to
    the same result): two retries, one minute apart then doubling (tests/dags enforces it, and
    names the tasks that must not retry)."""
    return {
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    }
