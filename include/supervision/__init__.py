"""Supervision of the streaming app: checkpoint reading, retention guard, single-writer lease."""
