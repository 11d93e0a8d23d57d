"""Checks the launch DAG runs before it submits the streaming app.

Each check raises :class:`PreflightError` (or a subclass) with a message that names the
setting or the data at fault; the DAG's tasks only call these functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from botocore.exceptions import ClientError

from include import pipeline
from include.supervision import checkpoint, lease, retention

log = logging.getLogger(__name__)


class PreflightError(RuntimeError):
    pass


def check_topic(admin: Any, topic: str, timeout: float = 15.0) -> int:
    """The topic exists; returns its partition count."""
    meta = admin.list_topics(timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None:
        raise PreflightError(
            f"topic {topic!r} (param `topic`) does not exist on the broker; run the "
            "kafka_topics DAG or fix the param"
        )
    return len(meta.partitions)


def check_bucket(s3: Any, bucket: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        raise PreflightError(
            f"bucket {bucket!r} (param `bucket`) is not reachable: {code}; create it or fix "
            "the param / the lake_s3 connection"
        ) from exc


def checkpoint_positions(
    s3: Any, bucket: str, checkpoint_prefix: str, topic: str
) -> list[checkpoint.QueryPosition]:
    """Every query's resume position; fails when the checkpoint is damaged or was written for
    another topic."""
    read, list_keys = checkpoint.s3_reader(s3, bucket)
    root = checkpoint_prefix.strip("/")
    left = checkpoint.first_release_queries(root, list_keys)
    if left:
        raise PreflightError(
            f"checkpoint s3://{bucket}/{root} (param `checkpoint_prefix`) holds the first "
            f"release's checkpoints ({', '.join(left)}), each at its own offsets: upgrade it "
            "first (make upgrade, or spark_apps/upgrade.py; docs/deployment.md, 'Upgrading "
            "from the first release')"
        )
    plan_text = read(f"{root}/{checkpoint.RESUME_PLAN}")
    positions = []
    for query in pipeline.STREAM_QUERIES:
        try:
            pos = checkpoint.query_position(query, root, read, list_keys)
        except checkpoint.CheckpointError as exc:
            raise PreflightError(f"checkpoint s3://{bucket}/{root}: {exc}") from exc
        if pos is None and plan_text is not None and query == pipeline.STREAM_QUERY:
            # An upgraded first-release root: the new checkpoint starts where the plan says.
            plan = checkpoint.ResumePlan.from_json(plan_text)
            pos = checkpoint.QueryPosition(query, None, None, {plan.topic: plan.starting()})
            log.info(
                "query %s: no checkpoint yet; it resumes the first release at %s",
                query,
                pos.offsets,
            )
        if pos is None:
            log.info("query %s: no checkpoint yet; it starts from the earliest offsets", query)
            continue
        other = pos.topics - {topic}
        if other:
            raise PreflightError(
                f"checkpoint s3://{bucket}/{root}/{query} was written for topic(s) "
                f"{sorted(other)}, but param `topic` is {topic!r}: use another "
                "`checkpoint_prefix` for another topic"
            )
        log.info(
            "query %s: last committed batch %s, resumes at %s",
            query,
            pos.committed_batch,
            pos.offsets.get(topic),
        )
        positions.append(pos)
    return positions


def check_sink_logs(
    list_keys: Callable[[str], Iterable[str]],
    bucket: str,
    sink_prefixes: dict[str, str],
    positions: list[checkpoint.QueryPosition],
) -> None:
    """Refuse a checkpoint that is behind the log of a file sink it writes to: the sink skips
    every batch id its log already holds, so such a stream would silently drop those batches
    (a new or restored-from-old checkpoint next to an existing lake path)."""
    position = next((p for p in positions if p.query == pipeline.STREAM_QUERY), None)
    planned = -1 if position is None or position.planned_batch is None else position.planned_batch
    for param, prefix in sink_prefixes.items():
        logged = checkpoint.sink_log_batch(prefix.strip("/"), list_keys)
        if logged is not None and logged > planned:
            raise PreflightError(
                f"s3://{bucket}/{prefix.strip('/')} (param `{param}`) already holds batches up "
                f"to {logged} in its _spark_metadata log, but the checkpoint (param "
                f"`checkpoint_prefix`) has planned only up to {planned}: the stream would skip "
                "those batch ids and drop their events. Restore the checkpoint that wrote this "
                "path, or give a new checkpoint a new `lake_prefix` and `dead_letter_prefix`"
            )


def guard_retention(
    admin: Any, topic: str, positions: list[checkpoint.QueryPosition], accept: bool = False
) -> list[retention.Gap]:
    """The gaps: unread data removed by retention. Raises unless ``accept`` (then the caller
    decides, and logs who accepted)."""
    gaps = retention.find_gaps(positions, retention.earliest_offsets(admin, topic))
    if gaps and not accept:
        raise retention.RetentionGapError(gaps)
    if not gaps:
        log.info("retention guard: every partition still holds what the checkpoint has not read")
    return gaps


def check_lease(conn: Any, checkpoint_root: str, outputs: Sequence[str] = ()) -> str:
    """Refuse to launch while a live driver holds the checkpoint's lease, or the lease of one
    of its output paths (another stream writing the same lake or dead letters)."""
    messages = []
    for name in lease.driver_leases(checkpoint_root, outputs):
        current = lease.refuse_if_held(conn, name)
        if current is None:
            messages.append(f"lease {name!r} is free")
        else:
            messages.append(f"lease {name!r} is free to take over ({current.describe()})")
    return "; ".join(messages)
