"""Airflow connection ids the platform uses. Only ids live in code; credentials come from
``AIRFLOW_CONN_*`` variables, a secrets backend or the metadata database."""

KAFKA = "kafka_default"
SPARK = "spark_default"
S3 = "lake_s3"
POSTGRES = "analytics_db"
