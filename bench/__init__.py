"""Benchmark harness: figures printed and written, never asserted in tests."""
