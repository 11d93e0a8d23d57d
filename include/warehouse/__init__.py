"""The warehouse: Iceberg tables compacted nightly from the lake, and their marts."""
