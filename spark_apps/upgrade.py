"""Upgrade a running first-release deployment (four streaming queries) in place, losing and
repeating nothing.

The first release ran four queries, each with its own checkpoint under ``<root>/<query>`` and
its own Kafka offsets: ``lake`` and ``dead_letter`` (Spark's file sinks, each with its own
``_spark_metadata`` log numbered by its query), ``category_sales`` and ``funnel`` (keyed
upserts of absolute values into Postgres). The stream since reads each record once in one
query, ``lake``, and fans out to all four. Started on such a root it cannot resume: its query
would read the old lake query's checkpoint, and the other outputs were at other offsets.

With the first release stopped (its lease free), this tool:

1. takes the checkpoint's and both sinks' leases (no stream may start meanwhile);
2. reads each query's position: the end offsets of its last batch whose output is durable
   (committed, or written before a crash kept the query from committing it: the sink log's or
   the table's ``batch_id``), and writes the **resume plan**
   (``<root>/_first_release/resume.json``, :class:`~include.supervision.checkpoint.ResumePlan`):
   per output and partition, the first offset the first release did not write to it;
3. moves each sink's ``_spark_metadata`` log into the log's archive
   (``spark_apps/sink_log.py``: every reader reads the log and its archive), keeping a copy
   under ``<root>/_first_release/sink_logs/``, and leaves an empty log directory, so the new
   query numbers its batches from 0 without the sink skipping any as already committed;
4. moves the four checkpoints to ``<root>/_first_release/checkpoints/``.

The stream then starts a new checkpoint at the lowest position per partition and skips, for
each output, the records below that output's own position (``spark_apps/stream_events.py``,
``Floors``). Every step can be run again after a failure (the plan, once written, is reused;
copies are made before anything is deleted); the stream refuses to start while any of the
first release's checkpoints is still in place.

Usage (``make upgrade``, or ``python -m devstack upgrade``, run it with the stream's S3 and
Postgres credentials)::

    python spark_apps/upgrade.py --topic events --s3-endpoint http://127.0.0.1:9000 \\
        --lake-path s3a://lake/raw/events --dead-letter-path s3a://lake/dead_letter/events \\
        --checkpoint-root s3a://lake/_checkpoints/stream_events

S3 keys come from ``AWS_*``, Postgres from libpq's ``PG*`` environment. Exit 0: upgraded (or
nothing to upgrade); 2: a setting or the data is wrong (the message says which); 3: a
stream holds a lease.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence

if __package__ in (None, ""):  # run as a script: the project's root on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pyarrow import fs as pafs

from include.analytics import store
from include.endpoints import PostgresEndpoint, S3Endpoint
from include.spark.jobs import UpgradeJob
from include.supervision import checkpoint, lease
from include.supervision.checkpoint import (
    FIRST_RELEASE_DIR,
    FIRST_RELEASE_OUTPUTS,
    RESUME_PLAN,
    ResumePlan,
)
from spark_apps import sink_log
from spark_apps.sink_log import object_path

log = logging.getLogger("upgrade")

# The leases are held this long between renewals; the tool's steps are a few S3 requests each.
LEASE_TTL_S = 300.0
FILE_SINKS = ("lake", "dead_letter")


def reader(
    fs: pafs.FileSystem,
) -> tuple[Callable[[str], str | None], Callable[[str], list[str]]]:
    """``read`` and ``list_keys`` (:mod:`include.supervision.checkpoint`'s) over pyarrow's
    file system (paths ``bucket/key``)."""

    def read(path: str) -> str | None:
        try:
            with fs.open_input_stream(path) as stream:
                return stream.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return None

    def list_keys(prefix: str) -> list[str]:
        selector = pafs.FileSelector(prefix.rstrip("/"), allow_not_found=True, recursive=True)
        return sorted(i.path for i in fs.get_file_info(selector) if i.type == pafs.FileType.File)

    return read, list_keys


def read_plan(fs: pafs.FileSystem, root: str) -> ResumePlan | None:
    """The resume plan under the checkpoint root ``root`` (a URI), if an upgrade wrote one."""
    text = reader(fs)[0](f"{object_path(root).rstrip('/')}/{RESUME_PLAN}")
    return None if text is None else ResumePlan.from_json(text)


def table_batches(conn) -> dict[str, int | None]:
    """The highest ``batch_id`` each first-release aggregate table holds (None: no row or no
    table)."""
    out: dict[str, int | None] = {}
    with conn.cursor() as cur:
        for table in FIRST_RELEASE_OUTPUTS.values():
            if table in FILE_SINKS:
                continue
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
            if not cur.fetchone()[0]:
                out[table] = None
                continue
            cur.execute(f"SELECT max(batch_id) FROM {table}")
            out[table] = cur.fetchone()[0]
    conn.commit()
    return out


def _put(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(data)


def copy_tree(fs: pafs.FileSystem, source: str, target: str) -> int:
    """Copy every file under ``source`` to the same place under ``target``; the number."""
    list_keys = reader(fs)[1]
    copied = 0
    for path in list_keys(source):
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(f"{target}{path[len(source) :]}".rsplit("/", 1)[0], recursive=True)
        fs.copy_file(path, f"{target}{path[len(source) :]}")
        copied += 1
    return copied


def delete_tree(fs: pafs.FileSystem, folder: str) -> None:
    """Delete ``folder`` and everything under it (on S3 also the directory markers pyarrow
    leaves when it deletes a folder's last file one by one)."""
    with contextlib.suppress(FileNotFoundError):
        fs.delete_dir(folder)


def archive_first_release(fs: pafs.FileSystem, sink: str, kept: str) -> int:
    """Write the entries of the copy of a sink's log at ``kept`` (a folder holding
    ``_spark_metadata``) into the sink's log archive as one run (``spark_apps/sink_log.py``'s
    layout, ``_cutoffs/<cutoff>`` last); the number archived. The run's cutoff is the newest
    entry's time, not this machine's clock: the stream's archiver goes on with the entries
    after it, dated by the same clocks that dated these. The same run again writes the same
    files; a log without entries writes none."""
    entries = sink_log.log_entries(fs, kept) or {}
    if not entries:
        return 0
    cutoff_ms = max(int(e["modificationTime"]) for e in entries.values())
    groups: dict[str, list[dict]] = {}
    for file, entry in sorted(entries.items()):
        groups.setdefault(sink_log.partition_dir(sink, file), []).append(entry)
    folder, name = f"{object_path(sink).rstrip('/')}/{sink_log.ARCHIVE}", f"{cutoff_ms:013d}"
    for part, listed in sorted(groups.items()):
        lines = ["v1", *(json.dumps(e, separators=(",", ":")) for e in listed)]
        _put(fs, f"{folder}/{part}/{name}.json", "\n".join(lines).encode())
    _put(fs, f"{folder}/{sink_log.CUTOFFS}/{name}", str(len(entries)).encode())
    return len(entries)


def upgrade(
    fs: pafs.FileSystem,
    conn,
    job: UpgradeJob,
) -> ResumePlan | None:
    """Upgrade the first-release deployment of ``job`` (see the module's docstring); the
    plan, or None when the root holds no first-release checkpoint and no plan."""
    root = object_path(job.checkpoint_root).rstrip("/")
    sinks = {"lake": job.lake_path, "dead_letter": job.dead_letter_path}
    read, list_keys = reader(fs)
    owner = lease.new_owner()
    names = lease.driver_leases(job.checkpoint_root, list(sinks.values()))
    lease.acquire_all(conn, names, owner, LEASE_TTL_S)

    def renew() -> None:
        for name in names:
            lease.renew(conn, name, owner, LEASE_TTL_S)

    try:
        plan = read_plan(fs, job.checkpoint_root)
        remaining = checkpoint.first_release_queries(root, list_keys)
        if plan is not None and not remaining:
            log.info("%s: upgraded before (%s/%s); nothing to do", root, root, RESUME_PLAN)
            return plan
        if plan is None:
            if not remaining:
                log.info("%s: no first-release checkpoint; nothing to upgrade", root)
                return None
            written: dict[str, int | None] = {
                out: checkpoint.sink_log_batch(object_path(path), list_keys)
                for out, path in sinks.items()
            }
            written.update(table_batches(conn))
            plan = checkpoint.first_release_plan(root, job.topic, read, list_keys, written)
            _put(fs, f"{root}/{RESUME_PLAN}", plan.to_json().encode())
            log.info("resume plan written to %s/%s: %s", root, RESUME_PLAN, plan.to_json())
        elif plan.topic != job.topic:
            raise checkpoint.CheckpointError(
                f"{root}/{RESUME_PLAN} was made for topic {plan.topic!r}, not {job.topic!r}"
            )
        for output, path in sinks.items():
            renew()
            logged = f"{object_path(path).rstrip('/')}/{sink_log.SINK_LOG}"
            kept = f"{root}/{FIRST_RELEASE_DIR}/sink_logs/{output}"
            copy_tree(fs, logged, f"{kept}/{sink_log.SINK_LOG}")
            archived = archive_first_release(fs, path, kept)
            delete_tree(fs, logged)
            # An empty log: readers see no log files (the archive holds them), and the new
            # query's sink starts numbering at 0 in it (Spark would list the whole directory
            # as the sink's files were there no log).
            fs.create_dir(logged)
            log.info("%s: %s log entries moved to its archive", path, archived)
        for query in FIRST_RELEASE_OUTPUTS:  # the lake's first: the others mark a partial run
            renew()
            source = f"{root}/{query}"
            moved = copy_tree(fs, source, f"{root}/{FIRST_RELEASE_DIR}/checkpoints/{query}")
            delete_tree(fs, source)
            log.info("checkpoint %s: %s files moved aside", source, moved)
        return plan
    finally:
        lease.release_all(conn, names, owner)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    job = UpgradeJob.from_argv(sys.argv[1:] if argv is None else argv)
    fs = (
        pafs.LocalFileSystem()  # a checkpoint root in a directory
        if object_path(job.checkpoint_root).startswith("/")
        else S3Endpoint.from_aws_env(job.s3_endpoint).pyarrow_filesystem()
    )
    conn = store.connect(PostgresEndpoint.from_libpq_env(), schema=job.pg_schema)
    try:
        plan = upgrade(fs, conn, job)
    except lease.LeaseHeld as exc:
        log.error("%s", exc)
        return 3
    except checkpoint.CheckpointError as exc:
        log.error("%s", exc)
        return 2
    finally:
        conn.close()
    if plan is None:
        print(json.dumps({"upgraded": False}))
    else:
        print(
            json.dumps({"upgraded": True, "starting_offsets": json.loads(plan.starting_offsets())})
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
