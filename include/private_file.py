"""One writer of private files (credentials, passwords, connection bodies): mode 0600 from the
first byte, replaced atomically so no reader sees half a file."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0600; its directory created, mode 0700 when new)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(partial, 0o600)  # an old partial file keeps its mode through O_CREAT
    partial.replace(path)
