"""A benchmark repetition's data, removed when it ends."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def dropped_after(ctx, root: str) -> Iterator[None]:
    """Delete a repetition's S3 prefix (its lake, dead letters, checkpoints, warehouse) when
    it ends, failed or not: a benchmark leaves nothing in the user's bucket."""
    try:
        yield
    finally:
        drop_prefix(ctx, root)


def drop_prefix(ctx, root: str) -> None:
    """Delete an S3 prefix of the stack's bucket (a benchmark's lake, checkpoints...)."""
    try:
        ctx.s3_root.pyarrow_filesystem().delete_dir(f"{ctx.settings.bucket}/{root}")
    except OSError as exc:  # never written
        print(f"    (could not delete {root}: {exc})", flush=True)


@contextlib.contextmanager
def analytics_schema(ctx, schema: str) -> Iterator[object]:
    """A repetition's own Postgres schema, migrated (a psycopg2 connection to it), dropped
    when the repetition ends, failed or not."""
    from include.analytics import migrations, store

    conn = store.connect(ctx.analytics_db, schema=schema)
    try:
        migrations.migrate(conn, schema)
        yield conn
    finally:
        try:
            conn.rollback()  # a failed statement's transaction would refuse the drop
            with conn.cursor() as cur:
                cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.commit()
        except Exception as exc:  # the figures stand without it
            print(f"    (could not drop {schema}: {exc})", flush=True)
        finally:
            conn.close()
