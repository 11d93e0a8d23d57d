from __future__ import annotations

import json
import os

import pytest

from tests.conftest import ROOT

# Connections the DAGs name, faked so every DAG parses with no secret present.
FAKE_CONNECTIONS = {
    "AIRFLOW_CONN_KAFKA_DEFAULT": {
        "conn_type": "kafka",
        "extra": {"bootstrap.servers": "kafka:9092"},
    },
    "AIRFLOW_CONN_SPARK_DEFAULT": {"conn_type": "spark", "host": "local[1]"},
    "AIRFLOW_CONN_LAKE_S3": {"conn_type": "aws", "login": "x", "password": "y"},
    "AIRFLOW_CONN_ANALYTICS_DB": {
        "conn_type": "postgres",
        "host": "db",
        "login": "u",
        "password": "p",
    },
}


@pytest.fixture(scope="session")
def dagbag(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_home")
    saved = dict(os.environ)
    os.environ.update({k: json.dumps(v) for k, v in FAKE_CONNECTIONS.items()})
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    yield bag
    os.environ.clear()
    os.environ.update(saved)
