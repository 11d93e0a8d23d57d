"""Spark's scratch on a file system of its own (devstack/scratchfs.py, the chaos soak's
disk_full fault): a real loop-mounted ext4 image, filled to the last block and emptied."""

from __future__ import annotations

import errno
import os

import pytest

from devstack import scratchfs


def test_unavailable_names_why(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert scratchfs.unavailable(tmp_path) == "mounting a file system needs root"


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/loop-control"),
    reason="a loop mount needs root and loop devices (CI has both)",
)
def test_a_mounted_scratch_fills_to_enospc_and_empties(tmp_path):
    scratch, image = tmp_path / "spark-local", tmp_path / "scratch.img"
    (scratch / "old").mkdir(parents=True)  # what the disk held stays hidden, then comes back
    vol = scratchfs.mount(scratch, image, size=64 * 1024**2, users=lambda: [])
    try:
        assert vol.mounted and not (scratch / "old").exists()
        (scratch / "state").write_bytes(b"x" * 4096)
        taken = vol.fill()
        assert taken > 32 * 1024**2
        with pytest.raises(OSError) as full, open(scratch / "more", "wb") as f:
            f.write(os.urandom(64 * 1024))
            f.flush()
            os.fsync(f.fileno())
        assert full.value.errno == errno.ENOSPC
        vol.drain()
        (scratch / "more").write_bytes(os.urandom(64 * 1024))  # room again
        assert (scratch / "state").read_bytes() == b"x" * 4096  # what Spark had is intact
        vol.users = lambda: [4242]  # a Spark app still holds files there
        with pytest.raises(scratchfs.ScratchError, match="4242"):
            vol.unmount()
        assert vol.mounted
        vol.users = lambda: []
    finally:
        vol.unmount()
    assert not vol.mounted and not image.exists() and (scratch / "old").is_dir()
