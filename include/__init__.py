"""Importable logic of the platform: DAGs and Spark apps import from here."""
