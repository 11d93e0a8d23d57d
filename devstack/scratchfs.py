"""A file system of its own for Spark's scratch space, so the chaos soak can fill it.

The stream's state store (RocksDB's working copies), its shuffle files and each app's copy of
the jars live under ``SPARK_LOCAL_DIRS`` (``Settings.spark_local_dir``), on the same disk as
Kafka's log, MinIO's objects and Postgres. Filling that disk would hit every service at once;
the soak's ``disk_full`` fault wants the stream's state directory alone full. So for a soak
that plans it, a sparse ext4 image is loop-mounted over the scratch directory while no Spark
app runs (``mount -o loop``, root only), filled with ``fallocate``d files for the fault's
window, and unmounted (image deleted) when the soak ends. Where that is impossible (not root,
no loop device, no ``mkfs.ext4``) :func:`unavailable` says why, and the soak lists the fault as
not injectable on this machine instead of failing on it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

IMAGE_SIZE = 24 * 1024**3  # sparse: the disk holds only what Spark writes into it
MIN_IMAGE_SIZE = 8 * 1024**3  # a default soak's drivers leave several GB of jar copies
_FILL_CHUNKS = (1024**3, 16 * 1024**2, 64 * 1024, 4096)


class ScratchError(RuntimeError):
    pass


def spark_apps() -> list[int]:
    """Pids of running Spark JVMs (any stack's): none may hold files under the directory a
    mount is about to hide or uncover."""
    pids = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "org.apache.spark.deploy.SparkSubmit" in cmd:
            pids.append(p.pid)
    return pids


def unavailable(scratch: Path) -> str:
    """Why a scratch file system cannot be mounted over ``scratch`` here ('' when it can)."""
    if os.geteuid() != 0:
        return "mounting a file system needs root"
    for tool in ("mkfs.ext4", "mount", "umount"):
        if not shutil.which(tool):
            return f"`{tool}` is not installed"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control)"
    if image_size(scratch) < MIN_IMAGE_SIZE:
        return (
            f"too little free disk for Spark's scratch image "
            f"({2 * MIN_IMAGE_SIZE / 1024**3:.0f} GB wanted)"
        )
    return ""


def image_size(scratch: Path) -> int:
    """At most half the free disk: the image is sparse, and must never outgrow the disk."""
    here = scratch if scratch.exists() else scratch.parent
    return min(IMAGE_SIZE, shutil.disk_usage(here).free // 2)


@dataclass
class Volume:
    mountpoint: Path
    image: Path
    users: Callable[[], list[int]] = spark_apps  # who must not hold files there (un)mounting

    @property
    def mounted(self) -> bool:
        return os.path.ismount(self.mountpoint)

    def fill(self) -> int:
        """Allocate every free block (root's reserve too: the image has none) in files under
        ``.fill/``; return the bytes taken. Spark's next write there fails with ENOSPC."""
        d = self.mountpoint / ".fill"
        d.mkdir(exist_ok=True)
        taken, n = 0, 0
        for chunk in _FILL_CHUNKS:
            while True:
                path = d / f"{n:05d}"
                fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
                try:
                    os.posix_fallocate(fd, 0, chunk)
                except OSError:
                    os.close(fd)
                    path.unlink()
                    break
                os.close(fd)
                taken += chunk
                n += 1
        return taken

    def free(self) -> int:
        return shutil.disk_usage(self.mountpoint).free

    def drain(self) -> None:
        shutil.rmtree(self.mountpoint / ".fill", ignore_errors=True)

    def unmount(self) -> None:
        """Unmount and delete the image (what Spark left in it goes with it)."""
        if self.mounted:
            busy = self.users()
            if busy:
                raise ScratchError(f"Spark apps {busy} still run; not unmounting {self.mountpoint}")
            proc = subprocess.run(["umount", str(self.mountpoint)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise ScratchError(f"umount {self.mountpoint}: {proc.stderr.strip()[-300:]}")
        with contextlib.suppress(FileNotFoundError):
            self.image.unlink()


def mount(
    scratch: Path,
    image: Path,
    size: int | None = None,
    users: Callable[[], list[int]] = spark_apps,
) -> Volume:
    """Loop-mount a fresh sparse ext4 image (``size`` bytes, :func:`image_size` by default)
    over ``scratch``; none of ``users`` may run."""
    why = unavailable(scratch) if size is None else ""
    if why:
        raise ScratchError(why)
    busy = users()
    if busy:
        raise ScratchError(f"Spark apps {busy} run; their scratch files would vanish")
    scratch.mkdir(parents=True, exist_ok=True)
    vol = Volume(scratch, image, users)
    if vol.mounted:
        return vol  # a soak that ended without cleaning up: reuse it
    image.parent.mkdir(parents=True, exist_ok=True)
    with open(image, "wb") as f:
        f.truncate(size or image_size(scratch))
    for argv in (
        ["mkfs.ext4", "-q", "-F", "-m", "0", "-L", "rtap-scratch", str(image)],
        ["mount", "-o", "loop", str(image), str(scratch)],
    ):
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            image.unlink(missing_ok=True)
            raise ScratchError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()[-300:]}")
    os.chmod(scratch, 0o755)
    return vol
