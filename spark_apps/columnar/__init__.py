"""The columnar stream core: a micro-batch's records parsed, checked, deduplicated and written
as Arrow batches (``docs/architecture.md``, "The columnar core")."""
