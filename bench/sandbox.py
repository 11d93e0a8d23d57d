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
        try:
            ctx.s3_root.pyarrow_filesystem().delete_dir(f"{ctx.settings.bucket}/{root}")
        except OSError as exc:  # never written
            print(f"    (could not delete {root}: {exc})", flush=True)
