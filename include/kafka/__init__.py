"""Kafka topics as code."""
