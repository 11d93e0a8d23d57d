"""The user-activity event: contract, catalog and generator."""
