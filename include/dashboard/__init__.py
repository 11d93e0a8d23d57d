"""Read side of the analysts' dashboard: its settings and its query layer."""
