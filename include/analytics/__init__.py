"""The analytics database (Postgres): tables the stream writes and the dashboard reads."""
