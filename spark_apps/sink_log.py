"""The file sinks' logs, bounded: Spark's ``_spark_metadata`` with a retention, and an archive
of the entries it lets go, so that every reader still sees every committed file.

Spark's ``FileStreamSinkLog`` rewrites the list of every file the sink ever committed at each
compaction (every 10 batches): at a 2 s trigger ~170,000 entries a day, read whole by every
reader of the lake. Its ``retention`` drops an entry from the next compaction once the entry is
older than the retention (``currentTime - modificationTime > retention``), and readers that go
through the log then never see that file again: on its own, a silent loss for a compaction or
a backfill of an older day. So the stream archives the entries before Spark may drop them
(:class:`Archiver`, before a batch's commit), as Hudi keeps its archived timeline beside the
active one, and the readers (:func:`committed`) read the archive and the log together.

Layout, beside the log (names that start with ``_`` are not partitions to Spark)::

    <sink>/_spark_metadata/            Spark's log: the entries younger than the retention
    <sink>/_spark_metadata_archive/
        <partition dir>/<cutoff>.json  the entries of one partition (``event_date=...``) that
                                       an archive run took: modified in (previous cutoff,
                                       cutoff], in the log's own format (``v1``, one JSON a line)
        _cutoffs/<cutoff>              written last: the run is complete up to ``cutoff`` (ms)

The archive's invariant (tested in tests/unit/test_sink_log.py against Spark's own log class):
whenever Spark compacts, every entry older than the retention is archived. An archive run is
due once the last cutoff is older than 3/4 of the retention, and archives up to half the
retention ago, so a run happens every quarter of the retention (a week's retention: every
~42 hours) and the cutoff always leads Spark's horizon by at least a quarter of it. This holds
while a batch's files are committed within a quarter of the retention after they were written
(the columnar engine dates an entry at its commit; the row engine at its file's write in the
same batch): ~42 hours at the default week, 15 s at the shortest retention accepted
(:data:`~include.pipeline.SINK_LOG_MIN_RETENTION_MS`, for tests).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from pyarrow import fs as pafs

log = logging.getLogger(__name__)

SINK_LOG = "_spark_metadata"
ARCHIVE = "_spark_metadata_archive"
CUTOFFS = "_cutoffs"
# A file at the sink's root (no partition directory).
ROOT = "_root"
_LOG_NAME = re.compile(r"^(\d+)(\.compact)?$")
_CUTOFF_NAME = re.compile(r"^(\d+)$")


def object_path(uri: str) -> str:
    """``s3a://bucket/key`` -> ``bucket/key`` (pyarrow's S3 paths); a local ``file:`` path
    -> the path."""
    scheme, sep, rest = uri.partition(":")
    if not sep or len(scheme) == 1:  # no scheme (or a Windows drive letter)
        return uri
    if scheme == "file":
        return "/" + rest.lstrip("/")
    return rest.lstrip("/")


def _read_entries(s3: pafs.FileSystem, file: str) -> list[dict]:
    with s3.open_input_stream(file) as stream:
        lines = stream.read().decode().splitlines()
    if lines[:1] != ["v1"]:
        raise ValueError(f"{file}: not a v1 file sink log ({lines[:1]})")
    return [json.loads(line) for line in lines[1:] if line.strip()]


def log_entries(s3: pafs.FileSystem, path: str, attempts: int = 3) -> dict[str, dict] | None:
    """The entries of the sink's log at ``path`` by file (as its log and ``_metadata.file_path``
    name them); ``None`` before its first commit.

    Read as Spark's ``FileStreamSinkLog`` reads it: the latest compaction (``<n>.compact``,
    every entry up to batch n it retained) and the batches after it (``<n>``), each a ``v1``
    line then one JSON entry per line (``path``, ``size``, ``modificationTime``, ``action``).
    The stream may compact its log meanwhile (and delete the batches it folded in): a batch
    gone between the listing and its read starts the read again."""
    folder = f"{object_path(path).rstrip('/')}/{SINK_LOG}"
    for attempt in range(attempts):
        batches: dict[int, str] = {}
        compacted = -1
        for info in s3.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
            match = _LOG_NAME.match(info.base_name)
            if match and info.type == pafs.FileType.File:
                batch = int(match.group(1))
                batches[batch] = info.path
                if match.group(2):
                    compacted = max(compacted, batch)
        if not batches:
            return None
        entries: dict[str, dict] = {}
        try:
            for batch in sorted(b for b in batches if b >= compacted):
                for entry in _read_entries(s3, batches[batch]):
                    if entry.get("action", "add") == "add":
                        entries[entry["path"]] = entry
                    else:
                        entries.pop(entry["path"], None)
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
            continue
        return entries
    return None


def partition_dir(sink: str, file: str) -> str:
    """The first directory of ``file`` under the sink at ``sink`` (``event_date=2026-12-01``),
    :data:`ROOT` for a file at its root."""
    root = object_path(sink).rstrip("/") + "/"
    relative = object_path(file)
    relative = relative[len(root) :] if relative.startswith(root) else relative.rsplit("/", 1)[-1]
    first, sep, _ = relative.partition("/")
    return first if sep and "=" in first else ROOT


def archived_entries(
    s3: pafs.FileSystem, path: str, partitions: Collection[str] | None = None
) -> dict[str, dict]:
    """The archive's entries by file: of the partition directories ``partitions`` only
    (``event_date=2026-12-01``) when given; empty when nothing was archived."""
    folder = f"{object_path(path).rstrip('/')}/{ARCHIVE}"
    if partitions is None:
        selector = pafs.FileSelector(folder, allow_not_found=True, recursive=True)
        infos = s3.get_file_info(selector)
    else:
        infos = []
        for part in sorted(partitions):
            selector = pafs.FileSelector(f"{folder}/{part}", allow_not_found=True)
            infos.extend(s3.get_file_info(selector))
    entries: dict[str, dict] = {}
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != pafs.FileType.File or not info.base_name.endswith(".json"):
            continue
        if info.path.rsplit("/", 2)[-2] == CUTOFFS:
            continue
        for entry in _read_entries(s3, info.path):
            entries[entry["path"]] = entry
    return entries


def committed(
    s3: pafs.FileSystem, path: str, partitions: Collection[str] | None = None
) -> dict[str, int] | None:
    """The files the sink at ``path`` committed, by name, with their sizes: the log's and the
    archive's (of ``partitions`` only when given; the log's are filtered by the caller).
    ``None`` before the sink's first commit (an upgraded first-release sink's log may be empty
    while its archive holds every entry: spark_apps/upgrade.py)."""
    logged = log_entries(s3, path)
    archived = archived_entries(s3, path, partitions)
    if logged is None and not archived:
        return None
    files = {p: int(e["size"]) for p, e in archived.items()}
    files.update((p, int(e["size"])) for p, e in (logged or {}).items())
    return files


@dataclass
class Archiver:
    """Archives a sink's log entries before Spark's retention may drop them: call
    :meth:`before_commit` before each commit to the log (the module's docstring says why it
    is enough). Only the stream that holds the sink's single-writer lease runs one; its
    retention is checked where it is configured (``--sink-log-retention``)."""

    s3: pafs.FileSystem
    path: str  # the sink's URI
    retention_ms: int
    clock: Callable[[], float] = time.time
    _cutoff: int | None = field(default=None, init=False)

    @property
    def folder(self) -> str:
        return f"{object_path(self.path).rstrip('/')}/{ARCHIVE}"

    def cutoff(self) -> int:
        """The last complete run's cutoff (ms), -1 before the first."""
        if self._cutoff is None:
            selector = pafs.FileSelector(f"{self.folder}/{CUTOFFS}", allow_not_found=True)
            names = (_CUTOFF_NAME.match(i.base_name) for i in self.s3.get_file_info(selector))
            self._cutoff = max((int(m.group(1)) for m in names if m), default=-1)
        return self._cutoff

    def _put(self, name: str, text: str) -> None:
        path = f"{self.folder}/{name}"
        if isinstance(self.s3, pafs.LocalFileSystem):  # a sink in a directory (tests)
            self.s3.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with self.s3.open_output_stream(path) as out:
            out.write(text.encode())

    def due(self, now_ms: int) -> bool:
        return self.cutoff() < now_ms - self.retention_ms + self.retention_ms // 4

    def before_commit(self) -> int:
        """Archive the entries modified since the last run up to half the retention ago, when
        a run is due; the number archived."""
        now_ms = int(self.clock() * 1000)
        if not self.due(now_ms):
            return 0
        previous, cutoff = self.cutoff(), now_ms - self.retention_ms // 2
        groups: dict[str, list[dict]] = {}
        for file, entry in (log_entries(self.s3, self.path) or {}).items():
            if previous < int(entry["modificationTime"]) <= cutoff:
                groups.setdefault(partition_dir(self.path, file), []).append(entry)
        name, archived = f"{cutoff:013d}", sum(map(len, groups.values()))
        for part, entries in sorted(groups.items()):
            lines = ["v1", *(json.dumps(e, separators=(",", ":")) for e in entries)]
            self._put(f"{part}/{name}.json", "\n".join(lines))
        self._put(f"{CUTOFFS}/{name}", str(archived))  # last: the run is complete
        self._cutoff = cutoff
        log.info(
            "sink log %s: archived %s entries modified up to %s (%s partition(s))",
            self.path,
            archived,
            name,
            len(groups),
        )
        return archived
