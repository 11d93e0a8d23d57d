"""The stream's checkpoint file manager (``rtap.spark.DirectCheckpointFileManager``) on the real
S3 server: an entry is written straight to its object, which appears whole when the writer
closes and never if it is cancelled; an existing entry is never replaced unless the writer asks
to, and the refusal reaches the writer. The stream itself (test_pipeline, test_crash_recovery)
runs with it, so its exactly-once tests cover it too."""

from __future__ import annotations

import uuid

import pytest
from py4j.protocol import Py4JJavaError

from include import pipeline
from include.lake.s3 import sandbox_prefix
from spark_apps.stream_events import BATCH_CONF
from tests.integration.conftest import drop_sandbox, s3
from tests.integration.lake_checks import reader


@pytest.fixture
def prefix(ctx):
    p = sandbox_prefix(f"ckpt-{uuid.uuid4().hex[:10]}")
    yield p
    drop_sandbox(ctx, p, f"unused_{uuid.uuid4().hex[:6]}")


# S3A's own settings, and the stream's (BATCH_CONF: S3A's create() without its own probes of
# the name); a second writer is refused under both.
S3A_SETTINGS = {
    "s3a": {},
    "stream": {k: v for k, v in BATCH_CONF.items() if k.startswith("fs.s3a.")},
}


@pytest.mark.parametrize("settings", list(S3A_SETTINGS))
def test_entries_are_written_in_place_whole_or_not_at_all(ctx, prefix, tmp_path, settings):
    spark = reader(ctx)
    jvm = spark.sparkContext._jvm
    conf = jvm.org.apache.hadoop.conf.Configuration(spark.sparkContext._jsc.hadoopConfiguration())
    for key, value in S3A_SETTINGS[settings].items():
        conf.set(key, value)
    Path = jvm.org.apache.hadoop.fs.Path
    root = pipeline.s3a(ctx.settings.bucket, f"{prefix}/offsets")
    manager = jvm.rtap.spark.DirectCheckpointFileManager(Path(root), conf)
    assert manager.writesInPlace()
    client, bucket = s3(ctx), ctx.settings.bucket

    def objects() -> dict[str, bytes]:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")
        return {
            o["Key"].removeprefix(f"{prefix}/"): client.get_object(Bucket=bucket, Key=o["Key"])[
                "Body"
            ].read()
            for o in listed.get("Contents", [])
        }

    def write(name: str, data: bytes, overwrite: bool = False, cancel: bool = False) -> dict:
        """Write an entry; return what the bucket held before its writer closed."""
        out = manager.createAtomic(Path(f"{root}/{name}"), overwrite)
        out.write(bytearray(data))
        seen = objects()
        if cancel:
            out.cancel()
        else:
            out.close()
        return seen

    assert write("0", b"v1 batch 0") == {}  # nothing visible while it is written
    # Only the entry itself: no temporary file, nothing renamed.
    assert objects() == {"offsets/0": b"v1 batch 0"}

    # A second writer of the same entry is refused, and the first entry stays as it was.
    with pytest.raises(Py4JJavaError, match="FileAlreadyExistsException"):
        write("0", b"another driver's batch 0")
    assert objects() == {"offsets/0": b"v1 batch 0"}

    # A cancelled writer (a batch that failed, a task killed) publishes nothing.
    write("1", b"half a batch", cancel=True)
    assert objects() == {"offsets/0": b"v1 batch 0"}

    # Entries that Spark may replace (the state's changelogs and snapshots) are replaced.
    assert write("0", b"v1 batch 0, again", overwrite=True) == {"offsets/0": b"v1 batch 0"}
    assert objects() == {"offsets/0": b"v1 batch 0, again"}

    # A file system that cannot abort a stream keeps Spark's rename (a local checkpoint).
    local = jvm.rtap.spark.DirectCheckpointFileManager(Path(tmp_path.as_uri()), conf)
    assert not local.writesInPlace()
    out = local.createAtomic(Path(f"{tmp_path.as_uri()}/0"), False)
    out.write(bytearray(b"local"))
    out.close()
    assert (tmp_path / "0").read_bytes() == b"local"
