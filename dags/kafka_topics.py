"""
### Kafka topics as code

Makes the broker match `include/topics.yaml`: creates missing topics with their config,
aligns drifted configs, adds declared partitions (with a warning about key ordering) and
**refuses** unsafe changes (fewer partitions, another replication factor) with an error naming
the topic and setting. A second run changes nothing.

Connection: `kafka_default` (librdkafka settings in its JSON extra).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

from include import connections

DAG_ID = "kafka_topics"


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["kafka", "provisioning"],
    doc_md=__doc__,
    default_args={"owner": "platform", "retries": 2},
)
def kafka_topics():
    @task
    def provision_topics() -> dict[str, list[str]]:
        from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook

        from include.kafka import topics

        admin = KafkaAdminClientHook(kafka_config_id=connections.KAFKA).get_conn
        applied = topics.provision(admin)
        return {
            "created": [t.name for t in applied.create],
            "altered": sorted(applied.alter_config),
            "partitions_added": sorted(applied.add_partitions),
            "unchanged": applied.unchanged,
        }

    provision_topics()


kafka_topics()
