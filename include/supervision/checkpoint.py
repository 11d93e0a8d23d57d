"""Read what a Structured Streaming checkpoint says about its Kafka source, from any store.

A query's checkpoint directory holds ``offsets/<batch>`` (written *before* a batch runs: the
offsets it will read up to), ``commits/<batch>`` (written *after* the batch's sink committed)
and ``sources/0/0`` (the Kafka source's initial offsets). The next read position of a query is
therefore the ``offsets`` entry of its last *committed* batch: a planned but uncommitted batch
is re-run from there. With no committed batch, it is the initial offsets.

The functions take a ``read(key) -> str | None`` and a ``list(prefix) -> keys`` callable, so
they are pure and work on S3, a local directory or a dict in a unit test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# Offsets per topic and partition: {"events": {0: 120, 1: 98, 2: 130}}.
Offsets = dict[str, dict[int, int]]


class CheckpointError(RuntimeError):
    """The checkpoint cannot be read, or does not fit the configuration."""


@dataclass(frozen=True)
class QueryPosition:
    query: str
    committed_batch: int | None  # None: no batch committed yet
    planned_batch: int | None  # highest offsets/<batch> present
    offsets: Offsets  # where the query resumes; {} when it starts from startingOffsets

    @property
    def topics(self) -> set[str]:
        return set(self.offsets)


def parse_offsets_file(text: str, where: str = "offsets file") -> Offsets:
    """The Kafka offsets of an ``offsets/<batch>`` or ``sources/0/0`` file.

    ``offsets/<batch>``: a version line, a metadata JSON line, then one line per source
    (``{"topic": {"partition": offset}}``, or ``-`` for a source without offsets).
    ``sources/0/0``: a version line (possibly with a leading NUL byte) and the offsets JSON.
    """
    lines = [ln.strip().lstrip("\x00") for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("v"):
        raise CheckpointError(f"{where}: no version line; not a Spark checkpoint file")
    out: Offsets = {}
    for line in lines[1:]:
        if line == "-":
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{where}: unreadable line {line[:80]!r}") from exc
        if "batchWatermarkMs" in doc or "batchTimestampMs" in doc:
            continue  # the metadata line
        for topic, parts in doc.items():
            if not isinstance(parts, dict):
                raise CheckpointError(f"{where}: {topic!r} has no per-partition offsets")
            out.setdefault(topic, {}).update({int(p): int(o) for p, o in parts.items()})
    return out


def _batch_ids(keys: Iterable[str], prefix: str) -> list[int]:
    ids = []
    for key in keys:
        name = key[len(prefix) :].strip("/")
        if name.isdigit():
            ids.append(int(name))
    return sorted(ids)


def query_position(
    query: str,
    root: str,
    read: Callable[[str], str | None],
    list_keys: Callable[[str], Iterable[str]],
) -> QueryPosition | None:
    """Where the query checkpointed under ``root`` resumes; None when there is no checkpoint."""
    base = f"{root.rstrip('/')}/{query}"
    planned = _batch_ids(list_keys(f"{base}/offsets/"), f"{base}/offsets/")
    committed = _batch_ids(list_keys(f"{base}/commits/"), f"{base}/commits/")
    missing = sorted(set(committed) - set(planned))
    if missing:
        raise CheckpointError(
            f"checkpoint {base}: commits/{missing[0]} has no offsets/{missing[0]}; "
            "the checkpoint is damaged (restore it or start a new one)"
        )
    if committed:
        batch = committed[-1]
        text = read(f"{base}/offsets/{batch}")
        if text is None:
            raise CheckpointError(f"checkpoint {base}: offsets/{batch} vanished while reading")
        offsets = parse_offsets_file(text, f"{base}/offsets/{batch}")
        return QueryPosition(query, batch, planned[-1], offsets)
    initial = read(f"{base}/sources/0/0")
    if initial is None and not planned:
        metadata = read(f"{base}/metadata")
        return None if metadata is None else QueryPosition(query, None, None, {})
    offsets = parse_offsets_file(initial, f"{base}/sources/0/0") if initial else {}
    return QueryPosition(query, None, planned[-1] if planned else None, offsets)


def sink_log_batch(path: str, list_keys: Callable[[str], Iterable[str]]) -> int | None:
    """The highest batch id a streaming file sink at ``path`` committed to its log
    (``<path>/_spark_metadata/<batch>`` or ``<batch>.compact``); None when it has none."""
    prefix = f"{path.rstrip('/')}/_spark_metadata/"
    ids = _batch_ids((k.removesuffix(".compact") for k in list_keys(prefix)), prefix)
    return ids[-1] if ids else None


def _state_file(key: str) -> tuple[str, int, str] | None:
    """``(partition directory, version, kind)`` of a state store file
    (``<dir>/<version>.changelog`` or ``<dir>/<version>.zip``, with an optional ``_<id>``
    after the version); None for anything else (checksums, schemas, metadata)."""
    folder, _, name = key.rpartition("/")
    stem, dot, kind = name.partition(".")
    version = stem.split("_", 1)[0]
    if not dot or kind not in ("changelog", "zip") or not version.isdigit():
        return None
    return folder, int(version), kind


def replay_bytes(objects: Iterable[tuple[str, int]], committed_batch: int | None) -> int:
    """Bytes of state changelogs a restarted query replays before its next batch can run.

    ``objects`` are the ``(key, size)`` of the files under a query's ``state/`` directory.
    The batch after ``committed_batch`` loads state version ``committed_batch + 1``: per
    state partition, its newest snapshot (``<v>.zip``) at or below that version, then every
    changelog after the snapshot up to it, applied one by one (RocksDB's changelog
    checkpointing). Versions beyond it belong to the uncommitted batch and are not read.
    """
    if committed_batch is None:
        return 0
    target = committed_batch + 1
    snapshots: dict[str, int] = {}
    changelogs: dict[str, list[tuple[int, int]]] = {}
    for key, size in objects:
        parsed = _state_file(key)
        if parsed is None or parsed[1] > target:
            continue
        folder, version, kind = parsed
        if kind == "zip":
            snapshots[folder] = max(version, snapshots.get(folder, 0))
        else:
            changelogs.setdefault(folder, []).append((version, size))
    return sum(
        size
        for folder, logs in changelogs.items()
        for version, size in logs
        if version > snapshots.get(folder, 0)
    )


def s3_sizes(client, bucket: str) -> Callable[[str], list[tuple[str, int]]]:
    """``(key, size)`` of every object under a prefix of an S3 bucket (keys relative to it)."""

    def list_sizes(prefix: str) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out.extend((o["Key"], int(o["Size"])) for o in page.get("Contents", []))
        return out

    return list_sizes


def s3_reader(
    client, bucket: str
) -> tuple[Callable[[str], str | None], Callable[[str], list[str]]]:
    """``read`` and ``list_keys`` over an S3 bucket (keys are relative to the bucket)."""
    list_sizes = s3_sizes(client, bucket)

    def read(key: str) -> str | None:
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None
        return body.decode("utf-8", errors="replace")

    def list_keys(prefix: str) -> list[str]:
        return [key for key, _ in list_sizes(prefix)]

    return read, list_keys


# The first release's streaming queries (four, each with its own checkpoint under
# ``<root>/<query>`` and its own offsets) and the output each one wrote: two file sinks and
# two live aggregates. The stream since has one query, ``lake``, for all of them.
FIRST_RELEASE_OUTPUTS = {
    "lake": "lake",
    "dead_letter": "dead_letter",
    "category_sales": "category_sales_minute",
    "funnel": "funnel_minute",
}
# Where the upgrade keeps the first release's checkpoints and sink logs, and its plan:
# ``<root>/_first_release/`` (docs/deployment.md, "Upgrading from the first release").
FIRST_RELEASE_DIR = "_first_release"
RESUME_PLAN = f"{FIRST_RELEASE_DIR}/resume.json"


def first_release_queries(root: str, list_keys: Callable[[str], Iterable[str]]) -> list[str]:
    """The queries only the first release had (``dead_letter``, ``category_sales``,
    ``funnel``) whose checkpoints are still under ``root``: any means the root was written by
    the first release and not (completely) upgraded."""
    base = root.rstrip("/")
    return [
        q
        for q in FIRST_RELEASE_OUTPUTS
        if q != "lake" and any(True for _ in list_keys(f"{base}/{q}/"))
    ]


@dataclass(frozen=True)
class ResumePlan:
    """How the stream resumes a first-release deployment without losing or repeating a record
    (written by ``spark_apps/upgrade.py``). Each first-release output had its own position: the
    stream starts at the lowest of them per partition (:meth:`starting`) and an output skips
    the records below its own (:meth:`floor`), which the first release already wrote there."""

    topic: str
    # output (``lake``, ``dead_letter`` or an aggregate's table) -> partition -> the first
    # offset the first release did not write to it
    floors: dict[str, dict[int, int]]

    @property
    def partitions(self) -> list[int]:
        return sorted({p for floor in self.floors.values() for p in floor})

    def floor(self, output: str) -> dict[int, int]:
        """Per partition, the first offset ``output`` writes: its first-release position, or
        where the stream starts for an output the first release did not have."""
        own = self.floors.get(output)
        return dict(own) if own is not None else self.starting()

    def starting(self) -> dict[int, int]:
        return {p: min(f.get(p, 0) for f in self.floors.values()) for p in self.partitions}

    def starting_offsets(self, partitions: Iterable[int] = ()) -> str:
        """Spark's Kafka ``startingOffsets`` for a new checkpoint: every partition's start.
        Spark wants every partition of the topic named: ``partitions`` that no first-release
        query read (added to the topic since) start at the earliest offset (``-2``)."""
        starting = self.starting()
        every = sorted(set(starting) | set(partitions))
        return json.dumps({self.topic: {str(p): starting.get(p, -2) for p in every}})

    def passed(self, offsets: Offsets) -> bool:
        """Whether a query resuming at ``offsets`` is past every output's floor (no record it
        reads can be below one)."""
        at = offsets.get(self.topic, {})
        return all(at.get(p, -1) >= o for floor in self.floors.values() for p, o in floor.items())

    def to_json(self) -> str:
        return json.dumps(
            {
                "from": "first release (four queries)",
                "topic": self.topic,
                "floors": {
                    out: {str(p): o for p, o in sorted(f.items())}
                    for out, f in sorted(self.floors.items())
                },
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> ResumePlan:
        doc = json.loads(text)
        return cls(
            doc["topic"],
            {out: {int(p): int(o) for p, o in f.items()} for out, f in doc["floors"].items()},
        )


def first_release_plan(
    root: str,
    topic: str,
    read: Callable[[str], str | None],
    list_keys: Callable[[str], Iterable[str]],
    written: dict[str, int | None],
) -> ResumePlan:
    """The resume plan of a first-release root: per output, the end offsets of the last batch
    whose output is durable. That is the query's last committed batch, or a later planned one
    whose output was written before the query could commit it (a crash or a stop between the
    two): ``written`` gives per output the highest batch id it holds (a file sink's log, an
    aggregate table's ``batch_id`` column; None: none)."""
    floors: dict[str, dict[int, int]] = {}
    for query, output in FIRST_RELEASE_OUTPUTS.items():
        pos = query_position(query, root, read, list_keys)
        base = f"{root.rstrip('/')}/{query}"
        held = written.get(output)
        if pos is None:
            if held is not None:
                raise CheckpointError(
                    f"{output} holds batch {held} but {base} has no checkpoint: it was written "
                    "by another stream (restore that checkpoint)"
                )
            floors[output] = {}
            continue
        durable = pos.committed_batch
        if held is not None and (durable is None or held > durable):
            if pos.planned_batch is None or held > pos.planned_batch:
                raise CheckpointError(
                    f"{output} holds batch {held}, beyond what {base} planned "
                    f"({pos.planned_batch}): it was written by another stream"
                )
            durable = held
        if durable is None:
            offsets = pos.offsets
        else:
            text = read(f"{base}/offsets/{durable}")
            if text is None:
                raise CheckpointError(f"checkpoint {base}: offsets/{durable} is missing")
            offsets = parse_offsets_file(text, f"{base}/offsets/{durable}")
        other = set(offsets) - {topic}
        if other:
            raise CheckpointError(
                f"checkpoint {base} was written for topic(s) {sorted(other)}, not {topic!r}"
            )
        floors[output] = dict(offsets.get(topic, {}))
    partitions = {p for f in floors.values() for p in f}
    # A partition a query never read (it started later, or never ran) it reads from the start.
    return ResumePlan(
        topic,
        {out: {p: f.get(p, 0) for p in sorted(partitions)} for out, f in floors.items()},
    )
