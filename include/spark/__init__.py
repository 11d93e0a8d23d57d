"""Spark jobs as Airflow sees them: how they are submitted."""
