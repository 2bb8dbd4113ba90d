"""Real full disks for tests: small tmpfs mounts, always unmounted, and a filler that takes the space left.

    with tmpfs(tmp_path / "disk", "64k") as disk:
        ...pktbeat writes under disk...
        filler = fill(disk)        # now every write there fails with ENOSPC
        ...
        filler.unlink()            # space is back

The mount is removed when the context exits, also on failure (lazily when a
process still holds a file open in it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


def tmpfs_available() -> str | None:
    """Why tmpfs tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    return None


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of `size` (mount's syntax: 8k, 5m) at `path` (created), mode 0755 like a fresh disk."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True,
                   capture_output=True, timeout=30)
    try:
        yield path
    finally:
        done = subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(directory: Path, name: str = "filler") -> Path:
    """Write a file in `directory` until the disk is full; returns it (unlink it to give the space back)."""
    path = directory / name
    block = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65536, 4096, 1):
            chunk = block[:size]
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    break
    finally:
        os.close(fd)
    return path


def free_bytes(directory: Path) -> int:
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize
