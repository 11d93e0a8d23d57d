"""
### Demo traffic: send realistic e-commerce events to Kafka

Runs the event generator (`include/events/generator.py`) with the params below, produces with an
idempotent producer (`acks=all`, lz4, batching) through the `kafka_default` connection, publishes
the product catalog and records the run (counts per kind and partition, purchase totals, id
digest) in the analytics database (`analytics_db`), so the reconciliation can account for every
event.

Shares are fractions of the events: `bad_share` (every bad kind in turn), `irrelevant_share`
(heartbeats, bots, internal users), `duplicate_share` (the same event sent again),
`late_share` (event time 15-60 min back) and `out_of_order_share` (a few seconds back).
`start` and `span_hours` place the events in event time (e.g. a past day, with `rhythm`: the
demo's history).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, task

from include import connections, pipeline

DAG_ID = "demo_traffic"


def _share(default: float) -> Param:
    return Param(default, type="number", minimum=0, maximum=0.99)


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["kafka", "demo"],
    doc_md=__doc__,
    default_args={"owner": "platform"},
    params={
        "count": Param(20_000, type="integer", minimum=1, maximum=50_000_000),
        "rate": Param(None, type=["null", "number"], minimum=1, description="events/s; empty: max"),
        "seed": Param(42, type="integer"),
        "topic": Param(pipeline.EVENTS_TOPIC, type="string"),
        "live": Param(False, type="boolean", description="event time = wall clock"),
        "start": Param(
            None,
            type=["null", "string"],
            format="date-time",
            description="event-time origin (ISO, with a zone); empty: 5 minutes ago",
        ),
        "span_hours": Param(
            None,
            type=["null", "number"],
            exclusiveMinimum=0,
            description="session starts spread over this many hours; empty: 5 minutes",
        ),
        "rhythm": Param(False, type="boolean", description="daily traffic curve"),
        "bad_share": _share(0.02),
        "irrelevant_share": _share(0.03),
        "duplicate_share": _share(0.01),
        "late_share": _share(0.0),
        "out_of_order_share": _share(0.02),
    },
)
def demo_traffic():
    @task
    def send(params: dict | None = None) -> dict:
        from airflow.sdk import BaseHook

        from include.analytics import store
        from include.events.generator import GeneratorConfig
        from include.events.traffic import send_traffic

        assert params is not None
        kafka = BaseHook.get_connection(connections.KAFKA).extra_dejson
        pg = connections.postgres_endpoint()
        placed: dict = {}  # where the events sit in event time (default: the last 5 minutes)
        if params.get("start"):
            placed["start"] = datetime.fromisoformat(params["start"].replace("Z", "+00:00"))
        if params.get("span_hours"):
            placed["span_seconds"] = float(params["span_hours"]) * 3600
        generator = GeneratorConfig(
            seed=params["seed"],
            **placed,
            live=params["live"],
            rhythm=params["rhythm"],
            bad_share=params["bad_share"],
            irrelevant_share=params["irrelevant_share"],
            duplicate_share=params["duplicate_share"],
            late_share=params["late_share"],
            out_of_order_share=params["out_of_order_share"],
        )
        record = send_traffic(
            topic=params["topic"],
            kafka_config=kafka,
            generator=generator,
            count=params["count"],
            rate=params["rate"],
            pg_connect=lambda: store.connect(pg),
        )
        return {
            "run_id": record.run_id,
            "events": record.events,
            "rate_per_s": round(record.rate),
            "by_kind": record.by_kind,
            "by_partition": {str(k): v for k, v in record.by_partition.items()},
        }

    send()


demo_traffic()
