"""Finding the TLS library files to probe: on the host, in every process's maps, in other mount namespaces.

A uprobe belongs to a file (an inode), not to a process: once a library
file is probed, every process that maps it, now or later, is covered.  So
the work is to find each distinct library file once:

- at start, the default names (`libssl.so.3`) in the usual library
  directories of the host, the configured paths, and whatever
  /proc/*/maps shows (a library outside the usual directories, or in
  another mount namespace, read through /proc/PID/root);
- when a program starts (the kernel tells the parent), the same names and
  paths under that process's root: a container's own libssl is another file;
- every `rescan_interval`, /proc/*/maps again (libraries at unusual paths in
  processes started since).  A mapped library deleted since (replaced by an
  upgrade while the process runs) is reached through /proc/PID/map_files.

A file is known by (device, inode), so the host's libssl reached through a
hundred /proc/PID/root links is probed once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

DEFAULT_NAMES = ("libssl.so.3",)
LIBRARY_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
                "/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib",
                "/usr/local/lib64", "/usr/local/ssl/lib")
PROC = "/proc"


@dataclass(frozen=True, slots=True)
class LibraryFile:
    """A library file as one process (or the host) reaches it."""

    path: str  # openable by the agent: the host path, or /proc/PID/root/<path in the process>
    shown: str  # the path as the process sees it (for log lines)
    identity: tuple[int, int]  # (st_dev, st_ino)


def identity_of(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class LibraryFinder:
    """Candidate library files under a root, and in processes' maps."""

    def __init__(self, names: Iterable[str] = DEFAULT_NAMES, paths: Iterable[str] = (), proc: str = PROC) -> None:
        self.names = frozenset(names)
        self.paths = tuple(paths)  # configured absolute paths, probed wherever they exist
        self.proc = proc

    def _wanted(self, path: str) -> bool:
        return os.path.basename(path) in self.names or path in self.paths

    def under_root(self, root: str = "", shown_prefix: str = "") -> Iterator[LibraryFile]:
        """The default names in the usual directories and the configured paths, below `root` ("" is the host)."""
        seen: set[str] = set()
        candidates = [f"{d}/{n}" for d in LIBRARY_DIRS for n in sorted(self.names)] + list(self.paths)
        for inner in candidates:
            if inner in seen:
                continue
            seen.add(inner)
            path = root + inner
            found = identity_of(path)
            if found is not None:
                yield LibraryFile(path, shown_prefix + inner, found)

    def in_process(self, pid: int) -> Iterator[LibraryFile]:
        """The wanted libraries a process maps (its own mount namespace's files, through /proc/PID/root)."""
        try:
            with open(f"{self.proc}/{pid}/maps", encoding="utf-8", errors="replace") as maps:
                lines = maps.readlines()
        except OSError:
            return
        seen: set[str] = set()
        for line in lines:
            parts = line.split(None, 5)
            if len(parts) < 6:
                continue
            inner = parts[5].rstrip("\n")
            name = inner.removesuffix(" (deleted)")
            if not inner.startswith("/") or inner in seen or not self._wanted(name):
                continue
            seen.add(inner)
            # A library replaced on disk (an upgrade) is still mapped: reach the old file through map_files.
            path = f"{self.proc}/{pid}/map_files/{parts[0]}" if name != inner else f"{self.proc}/{pid}/root{inner}"
            found = identity_of(path)
            if found is not None:
                yield LibraryFile(path, f"{inner} (pid {pid})", found)

    def of_new_program(self, pid: int) -> Iterator[LibraryFile]:
        """What a program that just started may load: the candidates under its root."""
        yield from self.under_root(f"{self.proc}/{pid}/root", f"pid {pid}: ")

    def all_pids(self) -> list[int]:
        try:
            return [int(name) for name in os.listdir(self.proc) if name.isdigit()]
        except OSError:
            return []
